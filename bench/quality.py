"""Quality of the fast precision modes against fp32, the exact mode.

    python -m bench.quality                              # bundled demo models + random base (~3 minutes)
    python -m bench.quality --models demo-large --modes int8

For each model and mode:

* along image-code trajectories sampled by fp32 (one per prompt, fixed seeds), the mean KL divergence
  KL(fp32 || mode) of the next-token distributions (temperature 1, no filtering) and how often both put the
  same code first; both models are fed the same fp32 trajectory through their own sampling path (prefill, then
  cached one-token steps with the mode's key/value cache), so errors do not compound;
* the PSNR of the mode's VQGAN decode against fp32's for the same codes (8-bit images, as written to PNG).

Targets: KL <= 0.02 nats, decoder PSNR >= 40 dB. ``random-base`` has random weights of the base shape (its
distributions are flat, so it mostly checks the kernels); the demo models are real trained weights.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from painter.models import GPT, KVCache

PROMPTS = ["红苹果", "一只猫", "蓝色的汽车", "笑脸", "一杯咖啡", "彩虹", "生日蛋糕", "月亮"]
KL_TARGET, PSNR_TARGET = 0.02, 40.0


@torch.inference_mode()
def stepped_logits(gpt: GPT, sequences: torch.Tensor, text_len: int, cache_dtype: torch.dtype | None = None,
                   batch: int = 4) -> torch.Tensor:
    """Next-code logits [N, L, V] along ``sequences`` [N, text_len + L] (text ids, then codes), computed the way
    sampling computes them: a prefill of the text, then one cached step per code."""
    out = []
    for rows in sequences.split(batch):
        cache = KVCache.empty(gpt.config, len(rows), cache_dtype or gpt.tok_emb.weight.dtype, rows.device,
                              max_len=rows.shape[1] - 1)
        logits = [gpt.forward_cached(rows[:, :text_len], cache)]
        logits += [gpt.forward_cached(rows[:, pos:pos + 1], cache) for pos in range(text_len, rows.shape[1] - 1)]
        out.append(torch.stack(logits, 1).float())
    return torch.cat(out)


def divergence(reference: torch.Tensor, candidate: torch.Tensor) -> tuple[float, float]:
    """Mean KL(reference || candidate) in nats between the softmaxes of two logit tensors [..., V], and the
    fraction of positions whose most likely code agrees."""
    ref, cand = F.log_softmax(reference.float(), -1), F.log_softmax(candidate.float(), -1)
    kl = (ref.exp() * (ref - cand)).sum(-1).mean().item()
    return kl, (ref.argmax(-1) == cand.argmax(-1)).float().mean().item()


def fp32_trajectories(painter, prompts: list[str], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequences [N, text_len + L] (text ids and the codes fp32 sampled for them) and the codes [N, L]."""
    from painter.sampling import SamplingConfig

    rows = [(painter.tokenize(p), seed + i) for i, p in enumerate(prompts)]
    codes = painter.codes(rows, SamplingConfig().validate(painter.config.img_vocab_size))
    text = torch.tensor([tokens.ids for tokens, _ in rows])
    return torch.cat([text, codes.cpu()], 1), codes


def mode_quality(model_dir: Path, modes: list[str], prompts: list[str] = PROMPTS) -> dict[str, dict[str, float]]:
    from painter import Painter
    from painter.training.vqgan_trainer import psnr

    exact = Painter.from_pretrained(model_dir, device="cpu", precision="fp32")
    sequences, codes = fp32_trajectories(exact, prompts)
    reference_logits = stepped_logits(exact.model.transformer, sequences, exact.config.text_len)
    with torch.inference_mode():
        reference_images = exact.model.first_stage_model.decode(codes).float()
    results = {}
    for mode in modes:
        fast = Painter.from_pretrained(model_dir, device="cpu", precision=mode)
        kl, top1 = divergence(reference_logits, stepped_logits(fast.model.transformer, sequences, exact.config.text_len,
                                                               fast.inference.cache_dtype))
        with torch.inference_mode():
            images = torch.cat([fast.model.first_stage_model.decode(c[None]).float() for c in codes])
        results[fast.precision] = {"kl": kl, "top1": top1, "decoder_psnr": psnr(images, reference_images),
                                   "decoder": str(fast.inference.decoder_dtype).removeprefix("torch.")}
    return results


def random_base(directory: Path) -> Path:
    from bench.engine import write_checkpoint

    return write_checkpoint("base", directory)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["demo-base", "demo-large", "random-base"])
    parser.add_argument("--modes", nargs="+", default=["bf16", "int8"])
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print("| model | mode | decoder | mean KL (nats) | top-1 agreement | decoder PSNR (dB) | targets met |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            model = random_base(Path(tmp)) if name == "random-base" else name
            for mode, q in mode_quality(model, args.modes).items():
                ok = q["kl"] <= KL_TARGET and q["decoder_psnr"] >= PSNR_TARGET
                print(f"| {name} | {mode} | {q['decoder']} | {q['kl']:.4f} | {q['top1']:.3f} | "
                      f"{q['decoder_psnr']:.1f} | {'yes' if ok else 'NO'} |", flush=True)


if __name__ == "__main__":
    main()
