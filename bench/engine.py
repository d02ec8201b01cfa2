"""Engine benchmark: the reference loop against our sampler, on random weights of the real shapes.

    python -m bench.engine                 # base and large, batch 1 and 4 (about 5 minutes here)
    python -m bench.engine --configs base --full-reference

For each config a random-weight checkpoint is written in the EasyNLP layout, then two child processes
(so that peak RSS is per method) load it and measure:

* reference: 256 steps, each re-running the whole sequence with autograd on (bench/reference.py). By default
  the time of a step is measured at 5 sequence lengths and integrated over the 256 steps (a full run of the
  large model takes tens of minutes); ``--full-reference`` runs every step.
* ours: ``Painter.from_pretrained`` (as a user loads a model), one warm-up, then 256 tokens; plus the VQGAN
  decode of one 256x256 image. Also checks that the cached logits equal full recomputation within 1e-4.

Times are seconds per image; the ratio is reference / ours measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
VOCAB = ROOT / "assets" / "vocab.txt"
CONFIGS = {"base": dict(n_layer=12, n_head=12, n_embd=768), "large": dict(n_layer=24, n_head=16, n_embd=1024)}
BATCHES = (1, 4)
PROMPT = "一只俏皮的狗正跑过草地"
STEPS = 256


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def write_checkpoint(name: str, directory: Path) -> Path:
    from painter.checkpoints import save_easynlp
    from painter.models import GPTConfig, ModelConfig, PainterModel

    torch.manual_seed(0)
    model = PainterModel(ModelConfig(gpt=GPTConfig(**CONFIGS[name])))
    return save_easynlp(model, VOCAB, directory / name)


def text_ids(painter_or_tokenizer, batch: int) -> torch.Tensor:
    return torch.tensor([painter_or_tokenizer(PROMPT).ids] * batch)


def measure_reference(model_dir: Path, full: bool) -> dict:
    from bench.reference import reference_sample
    from painter.checkpoints import build_model, load_checkpoint
    from painter.sampling import SamplingConfig, draw, make_generators, next_token_probs
    from painter.text import TextTokenizer

    checkpoint = load_checkpoint(model_dir)
    gpt = build_model(checkpoint).transformer
    tokenizer = TextTokenizer(checkpoint.vocab_file)
    out = {"rss_gb": 0.0, "batches": {}}
    for batch in BATCHES:
        ids = text_ids(tokenizer, batch)
        if full:
            start = time.perf_counter()
            reference_sample(gpt, ids, STEPS, seed=0)
            seconds = time.perf_counter() - start
        else:  # one reference step at sampled lengths, integrated (trapezoid) over every step's length
            lengths = [32, 96, 160, 224, 287]
            step_times = []
            for length in lengths:
                seq = torch.cat([ids, torch.randint(0, 16384, (batch, length - 32))], 1)
                start = time.perf_counter()
                reference_sample(gpt, seq, 1, seed=0)
                step_times.append(time.perf_counter() - start)
            seconds = sum((step_times[i] + step_times[i + 1]) / 2 * (lengths[i + 1] - lengths[i])
                          for i in range(len(lengths) - 1)) + step_times[-1]
        out["batches"][batch] = seconds / batch
    out["rss_gb"] = peak_rss_gb()

    # Cached logits against full recomputation, along one sampled trajectory.
    check_at = {0, 63, 127, 191, 255}
    ids = text_ids(tokenizer, 1)
    sampling = SamplingConfig().validate(16384)
    gens = make_generators([0], torch.device("cpu"))
    from painter.models import KVCache
    with torch.inference_mode():
        cache = KVCache.empty(gpt.config, 1, torch.float32, torch.device("cpu"))
        logits = gpt.forward_cached(ids, cache)
        seq, worst = ids, 0.0
        for step in range(STEPS):
            if step in check_at:
                worst = max(worst, (logits - gpt(seq)[:, -1]).abs().max().item())
            nxt = draw(next_token_probs(logits, sampling), gens)[:, None]
            seq = torch.cat([seq, nxt], 1)
            if step + 1 < STEPS:
                logits = gpt.forward_cached(nxt, cache)
    out["max_logit_diff"] = worst
    return out


def measure_ours(model_dir: Path, precision: str) -> dict:
    from painter import Painter
    from painter.sampling import SamplingConfig, make_generators, sample_codes

    painter = Painter.from_pretrained(model_dir, device="cpu", precision=precision)
    sampling = SamplingConfig().validate(painter.config.img_vocab_size)
    out = {"batches": {}}
    for batch in BATCHES:
        ids = text_ids(painter.tokenizer, batch)
        for steps in (2, STEPS):  # the first call builds oneDNN kernels: warm up, then time
            start = time.perf_counter()
            for _, codes in sample_codes(painter.model.transformer, ids, make_generators(range(batch), painter.device),
                                         sampling, steps):
                pass
            seconds = time.perf_counter() - start
        out["batches"][batch] = seconds / batch
    painter.decode(codes[:1])
    start = time.perf_counter()
    painter.decode(codes[:1])
    out["decode_s"] = time.perf_counter() - start
    out["rss_gb"] = peak_rss_gb()
    return out


def child(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    result = (measure_reference(Path(args.model_dir), args.full_reference) if args.child == "reference"
              else measure_ours(Path(args.model_dir), args.precision))
    print(json.dumps(result))


def run_child(kind: str, model_dir: Path, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, "-m", "bench.engine", "--child", kind, "--model-dir", str(model_dir),
           "--precision", args.precision] + (["--full-reference"] if args.full_reference else [])
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{kind} run failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--full-reference", action="store_true", help="run all 256 reference steps")
    parser.add_argument("--child", choices=("reference", "ours"), help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, precision {args.precision}, "
          f"reference {'full' if args.full_reference else 'estimated from 5 measured steps'}")
    header = ("| model | batch | reference s/img | ref tokens/s | ours s/img | ours tokens/s | speed-up | decode s | "
              "peak RSS ref / ours GB | max |cached-full| logit |")
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.configs:
            model_dir = write_checkpoint(name, Path(tmp))
            ref = run_child("reference", model_dir, args)
            ours = run_child("ours", model_dir, args)
            for batch in BATCHES:
                r, o = ref["batches"][str(batch)], ours["batches"][str(batch)]
                print(f"| {name} | {batch} | {r:.2f} | {STEPS / r:.1f} | {o:.2f} | {STEPS / o:.1f} | {r / o:.1f}x | "
                      f"{ours['decode_s']:.2f} | {ref['rss_gb']:.2f} / {ours['rss_gb']:.2f} | "
                      f"{ref['max_logit_diff']:.1e} |", flush=True)


if __name__ == "__main__":
    main()
