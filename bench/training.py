"""Training throughput on this machine: tokens/s of a GPT training step in fp32 and under bf16 autocast.

    python -m bench.training                     # base-shaped (12x768) and the demo sizes
    python -m bench.training --configs demo-large --batch-size 8

Random weights, random tokens of the real layout (32 text + 256 image tokens), the training objective of
``painter train`` (cross-entropy over the image codes), AdamW; the first step is a warm-up.
"""

from __future__ import annotations

import argparse
import time

import torch

from painter.models import GPT, GPTConfig
from painter.precision import training_autocast
from painter.training.gpt_trainer import SIZES, sequence_loss

CONFIGS = {"base": dict(n_layer=12, n_head=12, n_embd=768, img_vocab=16384, grid=16),
           **{k: dict(**v, img_vocab=2048 if k.startswith("bundled") else 1024, grid=16) for k, v in SIZES.items()}}


def tokens_per_second(name: str, precision: str, batch: int, steps: int, checkpointing: bool) -> float:
    c = CONFIGS[name]
    img_len = c["grid"] ** 2
    cfg = GPTConfig(vocab_size=c["img_vocab"] + 21128, block_size=32 + img_len, n_layer=c["n_layer"],
                    n_head=c["n_head"], n_embd=c["n_embd"])
    torch.manual_seed(0)
    gpt = GPT(cfg, c["img_vocab"]).train()
    gpt.gradient_checkpointing = checkpointing
    opt = torch.optim.AdamW(gpt.parameters(), lr=1e-4)
    autocast, _ = training_autocast(precision, torch.device("cpu"))
    text = torch.randint(c["img_vocab"], cfg.vocab_size, (batch, 32))
    codes = torch.randint(0, c["img_vocab"], (batch, img_len))
    for i in range(steps + 1):
        if i == 1:
            start = time.perf_counter()
        with autocast:
            loss = sequence_loss(gpt, text, codes)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return steps * batch * img_len / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}")
    print("| model | fp32 tokens/s | bf16 autocast tokens/s | bf16 gain | bf16 + grad checkpointing tokens/s |")
    print("|---|---|---|---|---|")
    for name in args.configs:
        fp32 = tokens_per_second(name, "fp32", args.batch_size, args.steps, False)
        bf16 = tokens_per_second(name, "bf16", args.batch_size, args.steps, False)
        ckpt = tokens_per_second(name, "bf16", args.batch_size, args.steps, True)
        print(f"| {name} | {fp32:.0f} | {bf16:.0f} | {bf16 / fp32:.2f}x | {ckpt:.0f} |", flush=True)


if __name__ == "__main__":
    main()
