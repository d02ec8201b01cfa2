"""The batching engine's throughput against how many requests share it, on any device (the GPU bench).

    python -m bench.batching                                  # base-size random weights, auto device and mode
    python -m bench.batching --model demo-large --requests 1 8 --device cpu

N requests (one image each, distinct seeds) are handed to the model's engine at once (``Painter.codes``)
with ``max_batch`` = the largest N; the bench prints tokens per second and images per second for each N
against N = 1 in the same run, and the decode time per image. On CUDA the engine's step is a captured CUDA
graph padded to a power of two rows, so a step of 32 rows should cost little more than a step of one.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from bench.engine import BATCH_PROMPTS, write_checkpoint


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    from painter import Painter
    from painter.checkpoints import convert

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a model directory or name (default: base-size random weights)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--requests", type=int, nargs="+", default=[1, 4, 8, 16, 32])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or convert(write_checkpoint("base", Path(tmp)), Path(tmp) / "base-painter", to="painter")
        painter = Painter.from_pretrained(model, device=args.device, precision=args.precision)
        painter.max_batch = max(args.requests)
        device, sampling = painter.device, painter.sampling(None, None, None, None)
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
        print(f"{Path(str(model)).name} on {name}, {painter.precision}, max_batch {painter.max_batch}")
        print("| requests at once | seconds | images/s | tokens/s | throughput against 1 |\n|---|---|---|---|---|")
        base = None
        for n in args.requests:
            rows = [(painter.tokenize(BATCH_PROMPTS[i % len(BATCH_PROMPTS)]), i) for i in range(n)]
            painter.codes(rows, sampling)  # warm-up: kernels, traces or CUDA graphs for this row count
            sync(device)
            start = time.perf_counter()
            codes = painter.codes(rows, sampling)
            sync(device)
            seconds = time.perf_counter() - start
            rate = n / seconds
            base = base or rate
            print(f"| {n} | {seconds:.2f} | {rate:.2f} | {rate * painter.config.img_len:.0f} | {rate / base:.1f}x |",
                  flush=True)
        painter.decode(codes[:1])
        sync(device)
        start = time.perf_counter()
        painter.decode(codes[:1])
        sync(device)
        print(f"\ndecode: {time.perf_counter() - start:.3f} s per image")


if __name__ == "__main__":
    main()
