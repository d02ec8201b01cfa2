"""Sharded prediction: ``painter predict`` in one process against torchrun with N processes, same job.

    python -m bench.predict [--model demo-large] [--rows 32] [--procs 2] [--precision auto]

Both runs paint the same prompts into separate outputs (fresh each time, so nothing is resumed); the bench
prints images per minute for each and the speed-up. On a CPU the threads are split: the timed single process
gets every core, each of N processes cores / N. A first, untimed single run with cores / N threads (which
also fills the quality-check cache) is what the sharded output is compared with byte for byte: a CPU's
kernels round differently with another number of threads, so only a process that runs as each rank runs
can be expected to write the same bytes.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ["红苹果", "火箭", "狐狸", "樱桃", "一个笑脸", "向日葵", "小猫", "雪山"]


def run(cmd: list[str], threads: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd[:6])} ... failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="demo-large")
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        inp = Path(tmp) / "in.tsv"
        inp.write_text("".join(f"{i}\t{PROMPTS[i % len(PROMPTS)]}\n" for i in range(args.rows)), encoding="utf-8")
        job = ["-m", "painter", "-q", "predict", "--model", args.model, "--input", str(inp), "--precision",
               args.precision, "--batch-size", str(args.batch_size), "--output"]
        per_rank = max(1, cores // args.procs)
        run([sys.executable, *job, str(Path(tmp) / "alike.tsv")], per_rank)
        single = run([sys.executable, *job, str(Path(tmp) / "single.tsv")], cores)
        sharded = run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                       str(args.procs), *job, str(Path(tmp) / "sharded.tsv")], per_rank)
        same = (Path(tmp) / "alike.tsv").read_bytes() == (Path(tmp) / "sharded.tsv").read_bytes()
    print(f"| model | rows | 1 process: s (img/min) | {args.procs} processes: s (img/min) | speed-up | same bytes |")
    print("|---|---|---|---|---|---|")
    print(f"| {args.model} | {args.rows} | {single:.1f} ({60 * args.rows / single:.0f}) | "
          f"{sharded:.1f} ({60 * args.rows / sharded:.0f}) | {single / sharded:.2f}x | {'yes' if same else 'no'} |")


if __name__ == "__main__":
    main()
