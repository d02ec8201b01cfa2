"""Engine benchmark: the reference loop against our sampler per precision mode, on random weights of the real
shapes.

    python -m bench.engine                          # base and large; fp32, bf16 and auto; batch 1 and 4
    python -m bench.engine --configs base --modes auto int8 --full-reference
    python -m bench.engine --lone assets/models/demo-large --modes fp32 int8   # the engine's own cost
    python -m bench.engine --models bundled-base demo-large --modes auto         # installed models, ours only

``--lone MODEL`` times one request alone: a bare cached loop over the model (prefill, then one
``forward_cached`` and one draw per token: the loop the engine replaced) and one decode, in a fresh process
where the model is loaded on the main thread and no other thread ever runs a torch op (one OpenMP pool, as a
plain script has); then, in another fresh process, the same request through ``Painter.codes`` (tokens) and
``Painter.generate`` batch 1 (prompt -> image) and a repaint of an 8 x 8-cell box of that picture
(``Painter.repaint``), as a user's script calls them. It checks that the engine draws
the bare loop's codes, then paints 8 prompts in one batch and each alone and counts the images whose codes
differ (none in fp32; in int8 rows quantize alone, but attention and other kernels still round differently at
other batch shapes).

For each config a random-weight checkpoint is written in the EasyNLP layout, then one child process per
method (so that peak RSS is per method) loads it and measures:

* reference: 256 steps, each re-running the whole sequence with autograd on (bench/reference.py), plus an
  fp32 NCHW decode. By default the time of a step is measured at 5 sequence lengths and integrated over the
  256 steps (a full run of the large model takes tens of minutes); ``--full-reference`` runs every step.
* ours, per mode: ``Painter.from_pretrained(precision=mode)`` as a user loads a model (from the Painter-layout
  copy that ``painter convert`` makes, which is read lazily: loading an EasyNLP .bin peaks ~0.3 GB higher, as
  torch.load reads the whole pickle first), then tokens (``Painter.codes``, 256 steps, after a warm-up run of
  the same batch), decode, and prompt -> PNG end to end (``generate`` + PNG encoding), per image; the
  cost of fast previews every 8 tokens; peak RSS. For ``auto``, a child before it runs the one-off quality
  check that picks the mode (its time is printed below the table), so the measured load is a user's second.
* the bandwidth floor: the bytes of weights one step reads, times 256 steps, over the read bandwidth
  measured here, per image.

Times are seconds per image; the speed-up is the reference's prompt -> image time over ours, same run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
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
BATCH_PROMPTS = ["红苹果", "火箭", "狐狸", "樱桃", "一个笑脸", "向日葵", "小猫", "雪山"]
STEPS = 256


def peak_rss_gb() -> float:
    """This process's peak resident memory. VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the
    parent across fork and exec, so a child spawned by a big parent would report the parent's size."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024**2
    except OSError:
        pass
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


def weight_bytes_per_step(gpt: torch.nn.Module) -> int:
    """Bytes of the Linear weights one sampling step reads (every layer and the head, once per step)."""
    from painter.models.packed import BatchAwareLinear, Int4Linear, Int8Linear, PackedLinear

    batched = {id(m.many) for m in gpt.modules() if isinstance(m, BatchAwareLinear)}  # a lone step reads int4
    total = 0
    for module in gpt.modules():
        if id(module) in batched:
            continue
        if isinstance(module, Int8Linear):
            total += module.in_features * module.out_features
        elif isinstance(module, Int4Linear):  # half a byte a weight, and a bf16 scale and zero a group
            total += module.packed.numel() + module.scales_zeros.numel() * 2
        elif isinstance(module, PackedLinear):
            total += module.packed_weight.numel() * module.packed_weight.element_size()
        elif isinstance(module, torch.nn.Linear):
            total += module.weight.numel() * module.weight.element_size()
    return total


def read_bandwidth_gbs(gib: float = 1.0) -> float:
    """Memory read bandwidth with all threads (the best of 5 sums over a tensor far larger than the caches)."""
    x = torch.ones(int(gib * 2**30 / 4))
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        x.sum()
        best = min(best, time.perf_counter() - start)
    return x.numel() * 4 / best / 1e9


def measure_ours(model_dir: Path, precision: str) -> dict:
    from painter import Painter
    from painter.data.images import png_bytes, tensor_to_pil
    from painter.sampling import SamplingConfig
    from painter.serving.preview import PreviewCanvas

    painter = Painter.from_pretrained(model_dir, device="cpu", precision=precision)
    sampling = SamplingConfig().validate(painter.config.img_vocab_size)
    out = {"mode": painter.precision, "decoder": str(painter.inference.decoder_dtype).removeprefix("torch."),
           "tokens": {}, "decode": {}, "e2e": {}, "weight_bytes": weight_bytes_per_step(painter.model.transformer)}
    for batch in BATCHES:
        rows = [(painter.tokenize(PROMPT), seed) for seed in range(batch)]
        for _ in range(2):  # the first call builds kernels (and on CPU traces the int8 step): warm up, then time
            start = time.perf_counter()
            codes = painter.codes(rows, sampling)
            seconds = time.perf_counter() - start
        out["tokens"][batch] = seconds / batch
        painter.decode(codes)
        start = time.perf_counter()
        painter.decode(codes)
        out["decode"][batch] = (time.perf_counter() - start) / batch
        start = time.perf_counter()
        images = painter.generate(PROMPT, num_images=batch, batch_size=batch)[0]
        for image in images:
            png_bytes(image)
        out["e2e"][batch] = (time.perf_counter() - start) / batch
    # Fast previews at batch 1, every 8 tokens: what stream() adds on top of sampling.
    start = time.perf_counter()
    preview_map = painter.preview_map()
    out["preview_fit_s"] = time.perf_counter() - start
    canvas = PreviewCanvas(preview_map, painter.model.first_stage_model.quantize.embedding.weight, 1)
    start = time.perf_counter()
    for sampled in range(8, STEPS, 8):
        tensor_to_pil(canvas.update(codes[:1], sampled))
    out["preview_s"] = time.perf_counter() - start
    out["rss_gb"] = peak_rss_gb()
    return out


def bare_codes(gpt: torch.nn.Module, ids: torch.Tensor, seed: int, sampling, img_len: int) -> torch.Tensor:
    """The plain per-call loop: prefill the caption, then one cached step and one draw per code."""
    from painter.models import KVCache
    from painter.sampling import draw, make_generators, next_token_probs

    with torch.inference_mode():
        cache = KVCache.empty(gpt.config, 1, gpt.pos_emb.dtype, ids.device, max_len=ids.shape[1] + img_len - 1)
        generators = make_generators([seed], ids.device)
        codes = torch.zeros(1, img_len, dtype=torch.long)
        logits = gpt.forward_cached(ids, cache)
        for step in range(img_len):
            codes[:, step] = draw(next_token_probs(logits, sampling), generators)
            if step + 1 < img_len:
                logits = gpt.forward_cached(codes[:, step:step + 1], cache)
    return codes


def median_time(run, repeats: int) -> float:
    """The median wall time of ``repeats`` calls, after one warm-up call (kernels, traces)."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def measure_bare(model_dir: Path, precision: str, repeats: int) -> dict:
    """The bare loop and one decode on the main thread, the only thread of this process that runs torch."""
    from painter import Painter

    painter = Painter._from_pretrained(model_dir, "cpu", precision)  # on this thread: no owner of the cores
    sampling = painter.sampling(None, None, None, None)
    ids = torch.tensor([painter.tokenize(PROMPT).ids])
    gpt, img_len = painter.model.transformer, painter.config.img_len
    codes = bare_codes(gpt, ids, 0, sampling, img_len)
    return {"mode": painter.precision, "codes": codes[0].tolist(),
            "bare_s": median_time(lambda: bare_codes(gpt, ids, 0, sampling, img_len), repeats),
            "decode_s": median_time(lambda: painter._decode(codes, None), repeats)}


def measure_engine(model_dir: Path, precision: str, repeats: int) -> dict:
    """One request through the engine, as a script calls it: ``Painter.codes`` and ``Painter.generate``."""
    from painter import Painter

    painter = Painter.from_pretrained(model_dir, device="cpu", precision=precision)
    sampling = painter.sampling(None, None, None, None)
    tokens = painter.tokenize(PROMPT)
    source = painter.generate(PROMPT, seed=0)[0][0]
    out = {"codes_s": median_time(lambda: painter.codes([(tokens, 0)], sampling), repeats),
           "generate_s": median_time(lambda: painter.generate(PROMPT, seed=0), repeats),
           "repaint_s": median_time(lambda: painter.repaint(source, PROMPT, box=(4, 4, 12, 12), seed=1), repeats),
           "codes": painter.codes([(tokens, 0)], sampling)[0].tolist()}
    rows = [(painter.tokenize(p), 0) for p in BATCH_PROMPTS]
    together = painter.codes(rows, sampling)
    out["differ"] = sum(not torch.equal(together[i], painter.codes([row], sampling)[0]) for i, row in enumerate(rows))
    return out


def measure_lone(model: str, modes: list[str], args: argparse.Namespace) -> None:
    """One request alone, each side in fresh processes (``--processes`` of each, alternating): the bare loop
    and a decode, then the engine. One fresh process's bare loop moved between 0.59 and 0.97 s for the same
    model on a quiet machine (where the process's memory landed, the CPU's clocks), which moved a one-process
    ratio from 0.70x to 1.16x; the ratios here are of medians over processes, with the bare loop's range."""
    from painter import hub
    from painter.precision import cpu_description

    model_dir = hub.resolve(model)
    print(f"{cpu_description()}, torch {torch.__version__}, {torch.get_num_threads()} threads; medians of "
          f"{args.repeats} runs in each of {args.processes} fresh processes a side, alternating")
    print("| model | mode | bare loop s (range over processes) | decode s | Painter.codes s | codes / bare | "
          "Painter.generate s | generate / (bare + decode) | repaint of a 8 x 8 box s | same codes | "
          "images alone ≠ in a batch of 8 |\n|---|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as scratch:
        for mode in modes:
            if mode == "auto":  # the one-off quality check first, as a user's first load does
                run_child("check", model_dir, args, mode, Path(scratch))
            engines, bares = [], []
            for _ in range(args.processes):
                engines.append(run_child("engine", model_dir, args, mode, Path(scratch)))
                bares.append(run_child("bare", model_dir, args, mode, Path(scratch)))
            engine = {k: statistics.median(e[k] for e in engines) for k in ("codes_s", "generate_s", "repaint_s")}
            bare = {k: statistics.median(b[k] for b in bares) for k in ("bare_s", "decode_s")}
            low, high = min(b["bare_s"] for b in bares), max(b["bare_s"] for b in bares)
            alone = bare["bare_s"] + bare["decode_s"]
            same = all(e["codes"] == b["codes"] for e in engines for b in bares)
            print(f"| {model_dir.name} | {bares[0]['mode']} | {bare['bare_s']:.3f} ({low:.3f}-{high:.3f}) | "
                  f"{bare['decode_s']:.3f} | {engine['codes_s']:.3f} | {engine['codes_s'] / bare['bare_s']:.2f} | "
                  f"{engine['generate_s']:.3f} | {engine['generate_s'] / alone:.2f} | {engine['repaint_s']:.3f} | "
                  f"{'yes' if same else 'no'} | {max(e['differ'] for e in engines)} of {len(BATCH_PROMPTS)} |",
                  flush=True)


def measure_reference_decode(model_dir: Path) -> float:
    from painter.checkpoints import build_model, load_checkpoint

    vqgan = build_model(load_checkpoint(model_dir)).first_stage_model.eval()
    codes = torch.randint(0, vqgan.config.n_embed, (1, vqgan.config.num_codes))
    with torch.no_grad():
        vqgan.decode(codes)
        start = time.perf_counter()
        vqgan.decode(codes)
    return time.perf_counter() - start


def child(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    if args.child == "check":
        from painter import Painter

        start = time.perf_counter()
        result = {"mode": Painter.from_pretrained(args.model_dir, device="cpu", precision=args.precision).precision,
                  "check_s": time.perf_counter() - start}
    elif args.child == "reference":
        result = measure_reference(Path(args.model_dir), args.full_reference)
        result["decode_s"] = measure_reference_decode(Path(args.model_dir))
    elif args.child == "bare":
        result = measure_bare(Path(args.model_dir), args.precision, args.repeats)
    elif args.child == "engine":
        result = measure_engine(Path(args.model_dir), args.precision, args.repeats)
    else:
        result = measure_ours(Path(args.model_dir), args.precision)
    print(json.dumps(result))


def run_child(kind: str, model_dir: Path, args: argparse.Namespace, precision: str = "fp32",
              scratch: Path | None = None) -> dict:
    cmd = [sys.executable, "-m", "bench.engine", "--child", kind, "--model-dir", str(model_dir),
           "--precision", precision, "--repeats", str(args.repeats)] + (["--full-reference"] if args.full_reference else [])
    # a fresh cache per mode (in ``scratch``, else beside the model): the one-off preview fit is measured,
    # and the user's cache is left alone
    cache = (scratch or Path(model_dir).parent) / f"cache-{Path(model_dir).name}-{precision}"
    env = {**os.environ, "PAINTER_CACHE": str(cache)}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    if proc.returncode:
        raise SystemExit(f"{kind} run failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure_models(models: list[str], modes: list[str], args: argparse.Namespace) -> None:
    """Our times per image for installed models (a name or a directory), each mode in its own process."""
    from painter import hub

    print("| model | mode (decoder) | batch | tokens s/img | decode s/img | prompt→PNG s/img | peak RSS GB |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as scratch:
        for model in models:
            model_dir = hub.resolve(model)
            for mode in modes:
                if mode == "auto":  # the one-off quality check first, as a user's first load does
                    run_child("check", model_dir, args, mode, Path(scratch))
                ours = run_child("ours", model_dir, args, mode, Path(scratch))
                label = f"{mode}→{ours['mode']}" if mode != ours["mode"] else mode
                for batch in BATCHES:
                    b = str(batch)
                    print(f"| {model} | {label} ({ours['decoder']}) | {batch} | {ours['tokens'][b]:.2f} | "
                          f"{ours['decode'][b]:.2f} | {ours['e2e'][b]:.2f} | {ours['rss_gb']:.2f} |", flush=True)


def main() -> None:
    from painter.checkpoints import convert

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--modes", nargs="+", default=["fp32", "bf16", "auto"])
    parser.add_argument("--full-reference", action="store_true", help="run all 256 reference steps")
    parser.add_argument("--lone", metavar="MODEL", help="time one request through the engine against a bare loop")
    parser.add_argument("--models", nargs="+", metavar="MODEL", help="time these installed models (ours only)")
    parser.add_argument("--repeats", type=int, default=5, help="--lone: runs of each in a process")
    parser.add_argument("--processes", type=int, default=3, help="--lone: fresh processes of each, alternating")
    parser.add_argument("--child", choices=("reference", "check", "ours", "bare", "engine"), help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    if args.lone:
        return measure_lone(args.lone, args.modes, args)
    if args.models:
        return measure_models(args.models, args.modes, args)

    bandwidth = read_bandwidth_gbs()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, read bandwidth {bandwidth:.1f} GB/s, "
          f"reference {'full' if args.full_reference else 'estimated from 5 measured steps'}")
    header = ("| model | mode (decoder) | batch | tokens s/img | decode s/img | prompt→PNG s/img | reference s/img | "
              "speed-up | bandwidth floor s/img | fast previews | peak RSS GB |")
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    logit_checks, quality_checks = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.configs:
            model_dir = write_checkpoint(name, Path(tmp))
            ref = run_child("reference", model_dir, args)
            ours_dir = convert(model_dir, Path(tmp) / f"{name}-painter", to="painter")
            logit_checks.append(f"{name}: {ref['max_logit_diff']:.1e}")
            reference = {b: ref["batches"][str(b)] + ref["decode_s"] for b in BATCHES}
            print(f"| {name} | reference (fp32) | 1 | {ref['batches']['1']:.2f} | {ref['decode_s']:.2f} | "
                  f"{reference[1]:.2f} | {reference[1]:.2f} | 1.0x | | | {ref['rss_gb']:.2f} |", flush=True)
            for mode in args.modes:
                if mode == "auto":
                    check = run_child("check", ours_dir, args, mode)
                    quality_checks.append(f"{name}: {check['mode']}, {check['check_s']:.0f} s")
                ours = run_child("ours", ours_dir, args, mode)
                label = f"{mode}→{ours['mode']}" if mode != ours["mode"] else mode
                for batch in BATCHES:
                    b = str(batch)
                    floor = STEPS * ours["weight_bytes"] / (bandwidth * 1e9) / batch
                    preview = (f"{100 * ours['preview_s'] / (ours['e2e'][b] * batch):.1f}% (fit {ours['preview_fit_s']:.1f} s once)"
                               if batch == 1 else "")
                    print(f"| {name} | {label} ({ours['decoder']}) | {batch} | {ours['tokens'][b]:.2f} | "
                          f"{ours['decode'][b]:.2f} | {ours['e2e'][b]:.2f} | {reference[batch]:.2f} | "
                          f"{reference[batch] / ours['e2e'][b]:.1f}x | {floor:.2f} | {preview} | {ours['rss_gb']:.2f} |",
                          flush=True)
    print(f"\nfp32 cached logits against full recomputation, max difference: {', '.join(logit_checks)}")
    if quality_checks:
        print(f"auto's one-off quality check (first load of a model, then cached): {', '.join(quality_checks)}")


if __name__ == "__main__":
    main()
