"""Quality of the fast precision modes against fp32, the exact mode, as a table for the README.

    python -m bench.quality                              # bundled demo models + random base (~3 minutes)
    python -m bench.quality --models demo-large --modes int8

It runs the check that ``precision="auto"`` runs once per model (painter/serving/quality.py: mean next-token
KL(fp32 || mode) along fp32's trajectories, top-1 agreement, decoder PSNR against fp32), on eight prompts and
eight decodes instead of four and two. Targets: KL <= 0.02 nats, decoder PSNR >= 40 dB. ``random-base`` has
random weights of the base shape (its distributions are flat, so it mostly checks the kernels); the demo models
are real trained weights.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

from painter.serving.quality import Verdict, compare, reference_run

PROMPTS = ["红苹果", "一只猫", "蓝色的汽车", "笑脸", "一杯咖啡", "彩虹", "生日蛋糕", "月亮"]


def mode_quality(model_dir: Path, modes: list[str], prompts: list[str] = PROMPTS) -> list[Verdict]:
    from painter import Painter

    reference = reference_run(Painter.from_pretrained(model_dir, device="cpu", precision="fp32"), prompts)
    return [compare(Painter.from_pretrained(model_dir, device="cpu", precision=mode), reference) for mode in modes]


def random_base(directory: Path) -> Path:
    from bench.engine import write_checkpoint

    return write_checkpoint("base", directory)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["bundled-base", "bundled-large", "demo-large", "random-base"])
    parser.add_argument("--modes", nargs="+", default=["bf16", "int8", "int4"])
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print("| model | mode | decoder | mean KL (nats) | top-1 agreement | decoder PSNR (dB) | targets met |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            model = random_base(Path(tmp)) if name == "random-base" else name
            for v in mode_quality(model, args.modes):
                print(f"| {name} | {v.mode} | {v.decoder} | {v.kl:.4f} | {v.top1:.3f} | {v.decoder_psnr:.1f} | "
                      f"{'yes' if v.passed else 'NO'} |", flush=True)


if __name__ == "__main__":
    main()
