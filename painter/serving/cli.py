"""The ``painter`` command line: ``painter predict`` and ``painter convert``.

Exit status: 0 done; 1 an error (message on stderr, no traceback); 2 bad usage; 3 done but some input rows
were rejected (listed in OUT.rejected); 130 interrupted (the output is intact: run the same command to resume).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from painter import __version__
from painter.errors import DataError, PainterError
from painter.hub import DEFAULT_MODEL

EXIT_ERROR, EXIT_REJECTED, EXIT_INTERRUPTED = 1, 3, 130
MODEL_DEFAULT = "default: the model's recommended setting, else"
log = logging.getLogger("painter")


def _add_sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0, help="image j of a prompt uses seed + j; -1 picks one (default 0)")
    p.add_argument("--num-images", type=int, default=1, help="images per prompt (default 1)")
    p.add_argument("--top-k", type=int, help=f"keep the k most likely codes ({MODEL_DEFAULT} 100)")
    p.add_argument("--top-p", type=float, help=f"nucleus sampling mass ({MODEL_DEFAULT} 1.0 = off)")
    p.add_argument("--temperature", type=float, help=f"> 0; lower is more conservative ({MODEL_DEFAULT} 1.0)")
    p.add_argument("--guidance-scale", type=float,
                   help=f"classifier-free guidance for models trained with caption dropout ({MODEL_DEFAULT} 1.0 = off)")


def _add_runtime_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--precision", default="auto",
                   help="auto (the fastest mode that passed the quality check here), fp32 (exact), bf16, "
                        "fp16 (CUDA) or int8 (CPU) (default auto)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="painter", description="Chinese text-to-image with pai-painter models")
    parser.add_argument("--version", action="version", version=f"painter {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", required=True)

    for name, help_text in (("paint", "paint one prompt into PNG files (with their parameters and codes)"),
                            ("repaint", "keep part of a picture and paint the rest for a prompt")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("prompt")
        p.add_argument("--model", default=DEFAULT_MODEL, help=f"model directory or name (default {DEFAULT_MODEL})")
        p.add_argument("--output", required=True,
                       help="OUT.png; with --num-images K > 1, OUT-0.png ... OUT-(K-1).png (image j uses seed + j)")
        if name == "repaint":
            p.add_argument("--image", required=True, help="the picture: one Painter painted (its exact codes) or any "
                                                          "other (encoded by the model's VQGAN)")
            region = p.add_mutually_exclusive_group(required=True)
            region.add_argument("--keep-rows", type=int, help="keep the first N rows of cells, paint the rest")
            region.add_argument("--box", type=_box, help="X0,Y0,X1,Y1 in cells (end exclusive): repaint this box")
        _add_sampling_args(p)
        _add_runtime_args(p)
        p.set_defaults(func=_paint)

    p = sub.add_parser("predict", help="paint every prompt of a TSV file (resumable)")
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"model directory or known model name (default {DEFAULT_MODEL}, bundled)")
    p.add_argument("--input", required=True, help="TSV rows idx<TAB>text (a third column is ignored)")
    p.add_argument("--output", required=True, help="TSV rows idx<TAB>text<TAB>base64 PNG; re-run to resume")
    _add_sampling_args(p)
    p.add_argument("--batch-size", type=int, default=8, help="images sampled together (default 8)")
    p.add_argument("--overwrite", action="store_true",
                   help="start the output over (its rows are discarded) instead of resuming it; one process only")
    _add_runtime_args(p)
    p.set_defaults(func=_predict)

    p = sub.add_parser("convert", help="convert a model between the EasyNLP, Painter and PaddleNLP layouts")
    p.add_argument("src", help="model directory (EasyNLP or Painter layout), or with --from paddle a .pdparams file")
    p.add_argument("dst", help="new directory for the converted model")
    p.add_argument("--to", choices=("painter", "easynlp"), default=None,
                   help="target layout (default: the other one)")
    p.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), help="store the weights in this float format")
    p.add_argument("--shared-vqgan", help="write the VQGAN to this directory once and refer to it")
    p.add_argument("--from", dest="source", choices=("paddle",), help="SRC is PaddleNLP's model_state.pdparams")
    p.add_argument("--vocab", help="with --from paddle: vocab.txt (default: beside SRC, else the bundled one)")
    p.add_argument("--n-head", type=int, help="with --from paddle: attention heads, for unpublished sizes")
    p.add_argument("--sampling", action="append", default=[], metavar="KEY=VALUE", type=_setting,
                   help="recommended sampling setting stored with the model and used when a user gives none "
                        "(top_k, top_p, temperature, guidance_scale, and detail_from, detail_top_k, detail_temperature: "
                        "other settings from that image code on; repeatable), e.g. --sampling temperature=0.3")
    p.add_argument("--guidance", choices=("yes", "no"),
                   help="whether guidance_scale > 1 helps the model (the studio offers the slider only then)")
    p.add_argument("--domain-word", action="append", default=[], dest="domain_words", metavar="WORD",
                   help="a word the model learnt for a domain (repeatable), e.g. 水墨画: a preset's fallback "
                        "template is applied only for a model that knows its word")
    p.add_argument("--learnt-from", metavar="TSV",
                   help="the training TSV the model learnt from: prompts then reach it without the characters "
                        "its captions never used (their embeddings never trained)")
    p.set_defaults(func=_convert)

    p = sub.add_parser("download", help="download a known model (or hf:OWNER/REPO) into the cache")
    p.add_argument("name")
    p.add_argument("--cache-dir", help="default $PAINTER_CACHE or ~/.cache/painter")
    p.add_argument("--mirror", help="replace the scheme and host of every source URL (e.g. an internal mirror)")
    p.set_defaults(func=_download)

    p = sub.add_parser("upload", help="publish a Painter-layout model directory to the Hugging Face Hub")
    p.add_argument("src", help="model directory in the Painter layout (painter convert --to painter)")
    p.add_argument("repo", help="hf:OWNER/REPO")
    p.set_defaults(func=_upload)

    p = sub.add_parser("models", help="installed and downloadable models")
    p.set_defaults(func=_models)

    p = sub.add_parser("train", help="fine-tune a model's GPT on a TSV of captioned images (resumable)")
    p.add_argument("--model", help="model directory or name to fine-tune (EasyNLP or Painter layout)")
    p.add_argument("--vqgan", help="instead of --model: train a new GPT on this VQGAN directory...")
    p.add_argument("--size", help="...of this size (demo-base, demo-large, bundled-base, bundled-large)")
    p.add_argument("--train", required=True, help="TSV rows idx<TAB>text<TAB>imgbase64, or a FILE.codes.pt made "
                                                  "by `painter encode` (a machine without the pictures)")
    p.add_argument("--valid", help="held-out TSV (or .codes.pt) for the evaluation loss")
    p.add_argument("--output", required=True, help="run directory; the model is written to OUTPUT/model")
    _add_loop_args(p, lr=4e-5, batch_size=16)
    p.add_argument("--caption-dropout", type=float, default=0.0,
                   help="probability of training on an empty caption (for guidance)")
    p.add_argument("--reword", type=float, default=0.0,
                   help="probability of training on a caption wrapped in everyday words (生成…, …的图片), drawn "
                        "afresh at each step: the model learns to find the subject anywhere in a prompt")
    p.add_argument("--keep-layers", type=_block_list, metavar="I,J,...",
                   help="with --model: train a smaller GPT made of these transformer blocks (0-based, in order) "
                        "of the model, e.g. 0,1,3 of a 4-block GPT")
    p.add_argument("--grad-checkpointing", action="store_true", help="recompute activations to save memory")
    p.set_defaults(func=_train)

    p = sub.add_parser("eval", help="validation loss, VQGAN PSNR and R-precision@1 of a model")
    p.add_argument("--model", required=True)
    p.add_argument("--valid", required=True, help="held-out TSV (idx, text, imgbase64)")
    p.add_argument("--captions-from", help="TSV whose captions R@1 paints (default: --valid)")
    p.add_argument("--heldout", help="TSV of held-out (subject, style) pairs: R@1 against candidates of the same "
                                     "style (row ids STYLE/...)")
    p.add_argument("--paraphrase", help="TSV of training pictures with paraphrased prompts: their R@1")
    p.add_argument("--seeds", type=int, default=1,
                   help="paint with seeds SEED..SEED+N-1: R@1 per seed and how often correct pictures differ")
    p.add_argument("--captions", type=int, default=200)
    p.add_argument("--candidates", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--guidance-scale", type=float, help=f"{MODEL_DEFAULT} 1.0")
    p.add_argument("--top-k", type=int, help=f"{MODEL_DEFAULT} 100")
    p.add_argument("--top-p", type=float, help=f"{MODEL_DEFAULT} 1.0")
    p.add_argument("--temperature", type=float, help=f"{MODEL_DEFAULT} 1.0")
    p.set_defaults(func=_eval)

    p = sub.add_parser("data", help="build data sets")
    p.add_argument("dataset", choices=("emoji", "bundled"),
                   help="emoji: Twemoji images with Chinese names (the demo models); bundled: emoji subjects, "
                        "product shots, scenes, ink paintings and photos at 128x128 (npm, Debian)")
    p.add_argument("--output", help="directory for the TSVs and ATTRIBUTION.md (default data/DATASET)")
    p.add_argument("--cache", help="bundled: where the pinned packages are kept (default $PAINTER_DATA_CACHE "
                                   "or ~/.cache/painter/data)")
    p.add_argument("--limit", type=int, help="bundled: only about this many pictures (a quick look)")
    p.add_argument("--full", action="store_true",
                   help="bundled: the 11k-picture plan (six emoji styles, calligraphy) for a GPU, instead of the "
                        "compact set a 2-core CPU can teach")
    p.set_defaults(func=_data)

    p = sub.add_parser("encode", help="a TSV's text ids and image codes under a VQGAN, for training elsewhere")
    p.add_argument("data", help="TSV rows idx<TAB>text<TAB>imgbase64")
    p.add_argument("--vqgan", required=True, help="the VQGAN directory the GPT will train on")
    p.add_argument("--output", required=True, help="FILE.codes.pt, which `painter train --train` reads as it is")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_encode)

    p = sub.add_parser("train-vqgan", help="train a VQGAN on the images of a TSV file (resumable)")
    p.add_argument("--train", required=True, help="TSV rows idx<TAB>text<TAB>imgbase64")
    p.add_argument("--valid", help="held-out TSV for the reconstruction PSNR")
    p.add_argument("--output", required=True, help="run directory; the VQGAN is written to OUTPUT/vqgan")
    p.add_argument("--config", default="small",
                   help="size preset: small (64px, 16x16 codes), f8 (128px, 16x16 codes) or f16 (256px)")
    p.add_argument("--crop", type=int, help="train on random squares of this size (evaluation uses whole images)")
    _add_loop_args(p, lr=4e-4, batch_size=32)
    p.add_argument("--disc-start", type=int, default=None, help="add the patch discriminator after N steps")
    p.add_argument("--disc-weight", type=float, default=0.1)
    p.set_defaults(func=_train_vqgan)
    return parser


def _setting(text: str) -> tuple[str, float]:
    key, _, value = text.partition("=")
    try:
        return key.strip(), float(value) if "." in value or "e" in value.lower() else int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected KEY=NUMBER such as temperature=0.3, got {text!r}") from None


def _add_loop_args(p: argparse.ArgumentParser, lr: float, batch_size: int) -> None:
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=lr)
    p.add_argument("--batch-size", type=int, default=batch_size, help="per process and micro-step")
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--warmup-steps", type=int, default=0)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--eval-every", type=int, default=0, help="optimizer steps between evaluations (0: at the end)")
    p.add_argument("--save-every", type=int, default=200, help="optimizer steps between checkpoints")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--precision", default="auto", help="auto, fp32, bf16 or fp16 (CUDA) autocast")
    p.add_argument("--device", default="auto")
    p.add_argument("--resume", action="store_true", help="continue the run in OUTPUT exactly where it stopped")
    p.add_argument("--overwrite", action="store_true", help="start over in an OUTPUT that holds another run")


def _block_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected block numbers separated by commas (e.g. 0,1,3), got {text!r}")


def _loop_config(args: argparse.Namespace):
    from painter.training.loop import LoopConfig

    return LoopConfig(epochs=args.epochs, batch_size=args.batch_size, grad_accum=args.grad_accum, lr=args.lr,
                      warmup_steps=args.warmup_steps, weight_decay=args.weight_decay, eval_every=args.eval_every,
                      save_every=args.save_every, seed=args.seed, progress=not args.quiet).validate()


def _download(args: argparse.Namespace) -> int:
    from painter import hub

    path = hub.download(args.name, cache=args.cache_dir, mirror=args.mirror, progress=not args.quiet)
    log.info("%s is ready in %s", args.name, path)
    return 0


def _upload(args: argparse.Namespace) -> int:
    from huggingface_hub import HfApi

    from painter.checkpoints import load_checkpoint

    if not args.repo.startswith("hf:"):
        raise PainterError(f"the target must look like hf:OWNER/REPO, got {args.repo!r}")
    if load_checkpoint(args.src).format != "painter":
        raise PainterError(f"{args.src} is in the EasyNLP layout; convert it first: painter convert {args.src} DST")
    api = HfApi()
    api.create_repo(args.repo[3:], exist_ok=True)
    api.upload_folder(folder_path=args.src, repo_id=args.repo[3:])
    log.info("uploaded %s to https://huggingface.co/%s", args.src, args.repo[3:])
    return 0


def _models(args: argparse.Namespace) -> int:
    from painter import hub

    present = hub.installed()
    print(f"{'name':32} {'size':>9}  source          path")
    for name, (path, source) in present.items():
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6
        print(f"{name:32} {size:7.1f}MB  {source:14}  {path}")
    print("\ndownloadable:")
    for name, meta in hub.registry().items():
        if name not in present and "bundled" not in meta:
            print(f"  painter download {name:32} # {meta['size']}, {meta['domain']}, {meta['licence']}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    import json

    from painter.evaluation import evaluate

    result = evaluate(args.model, Path(args.valid), Path(args.captions_from) if args.captions_from else None,
                      args.captions, args.candidates, args.seed, args.guidance_scale, args.top_k, args.temperature,
                      seeds=args.seeds, heldout=Path(args.heldout) if args.heldout else None,
                      paraphrase=Path(args.paraphrase) if args.paraphrase else None, top_p=args.top_p)
    print(json.dumps(result, indent=2))
    return 0


def _data(args: argparse.Namespace) -> int:
    output = args.output or f"data/{args.dataset}"
    if args.dataset == "bundled":
        from painter.data.bundled import COMPACT, FULL, build_bundled_dataset

        summary = build_bundled_dataset(output, Path(args.cache) if args.cache else None, args.limit,
                                        FULL if args.full else COMPACT)
        log.info("wrote %s: %d pictures, %d training rows, %d held-out pictures, %d paraphrased prompts", output,
                 summary["pictures"], summary["train_rows"], summary["heldout_pictures"], summary["paraphrase_prompts"])
        return 0
    from painter.data.emoji import build_emoji_dataset

    counts = build_emoji_dataset(output)
    log.info("wrote %s: %d train and %d validation rows from %d images", output, counts["train"],
             counts["valid"], counts["images"])
    return 0


def _train(args: argparse.Namespace) -> int:
    from painter.precision import resolve_device
    from painter.training.gpt_trainer import train_gpt

    record = train_gpt(Path(args.train), Path(args.output), _loop_config(args), model=args.model,
                       vqgan=args.vqgan, size=args.size, valid=Path(args.valid) if args.valid else None,
                       device=resolve_device(args.device), precision=args.precision,
                       caption_dropout=args.caption_dropout, gradient_checkpointing=args.grad_checkpointing,
                       resume=args.resume, overwrite=args.overwrite, reword=args.reword,
                       keep_layers=args.keep_layers)
    log.info("finished: %s", record)
    return 0


def _encode(args: argparse.Namespace) -> int:
    from painter.precision import resolve_device
    from painter.training.gpt_trainer import write_encoded

    counts = write_encoded(Path(args.data), args.vqgan, Path(args.output), device=resolve_device(args.device))
    log.info("wrote %s: %d rows of %d images (%d rejected)", args.output, counts["rows"], counts["images"],
             counts["rejected"])
    return 0


def _train_vqgan(args: argparse.Namespace) -> int:
    from painter.precision import resolve_device
    from painter.training.vqgan_trainer import PRESETS, train_vqgan

    if args.config not in PRESETS:
        raise PainterError(f"unknown VQGAN config {args.config!r}; choose one of {', '.join(PRESETS)}")
    record = train_vqgan(Path(args.train), Path(args.output), args.config, _loop_config(args),
                         valid=Path(args.valid) if args.valid else None, device=resolve_device(args.device),
                         resume=args.resume, overwrite=args.overwrite, disc_start=args.disc_start,
                         disc_weight=args.disc_weight, precision=args.precision, crop=args.crop)
    log.info("finished: %s", record)
    return 0


def _box(text: str) -> tuple[int, ...]:
    from painter.data.tsv import parse_box

    box = parse_box(text)
    if box is None:
        raise argparse.ArgumentTypeError(f"expected X0,Y0,X1,Y1 (four whole numbers, in cells), got {text!r}")
    return box


def _paint(args: argparse.Namespace) -> int:
    """``painter paint`` and ``painter repaint``: PNG files carrying their parameters (and codes), written only
    when every picture is painted."""
    from PIL import Image

    from painter.data.files import atomic_output
    from painter.data.images import picture_params
    from painter.serving.pipeline import Painter
    from painter.ui.metadata import save_png

    output = Path(args.output)
    if output.suffix.lower() != ".png":
        raise PainterError(f"--output must be a .png file, got {output}")
    if args.num_images < 1 or args.num_images > 64:
        raise PainterError(f"--num-images must be from 1 to 64, got {args.num_images}")
    source = None
    if args.command == "repaint":
        try:
            with Image.open(args.image) as opened:
                opened.load()
                source = opened.copy()
                source.info, source.text = dict(opened.info), dict(getattr(opened, "text", {}) or {})
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise PainterError(f"{args.image} is not a readable picture ({type(exc).__name__}: {exc})") from None
    painter = Painter.from_pretrained(args.model, device=args.device, precision=args.precision)
    sampling = dict(seed=args.seed, num_images=args.num_images, top_k=args.top_k, top_p=args.top_p,
                    temperature=args.temperature, guidance_scale=args.guidance_scale)
    if source is None:
        images = painter.generate(args.prompt, **sampling)[0]
    else:
        images = painter.repaint(source, args.prompt, keep_rows=args.keep_rows, box=args.box, **sampling)
    paths = [output] if len(images) == 1 else [output.with_name(f"{output.stem}-{j}.png") for j in range(len(images))]
    for image, path in zip(images, paths):
        with atomic_output(path) as tmp:
            save_png(image, tmp, picture_params(image))
        log.info("wrote %s (seed %s)", path, image.info.get("seed"))
    return 0


def _predict(args: argparse.Namespace) -> int:
    import torch

    from painter.serving.pipeline import Painter
    from painter.serving.predict import predict, rejects_path
    from painter.serving.shards import Shard

    shard = Shard.from_env()  # under torchrun: this process's share of the rows
    device = args.device
    if shard and device in ("auto", "cuda") and torch.cuda.is_available():
        device = f"cuda:{shard.local_rank}"  # one GPU per process on each node
    painter = Painter.from_pretrained(args.model, device=device, precision=args.precision)
    report = predict(painter, args.input, args.output, seed=args.seed, num_images=args.num_images,
                     top_k=args.top_k, top_p=args.top_p, temperature=args.temperature,
                     guidance_scale=args.guidance_scale, batch_size=args.batch_size,
                     progress=not args.quiet and (shard is None or shard.rank == 0), shard=shard,
                     overwrite=args.overwrite)
    where = f"{args.output} (rank {shard.rank} of {shard.world})" if shard else args.output
    log.info("%d image row(s) written for %s (%d were already there)", report.written, where, report.skipped)
    if report.rejected:
        log.warning("%d input row(s) rejected; see %s", len(report.rejected), rejects_path(Path(args.output)))
        # under torchrun any non-zero exit is a failed worker, whose traceback wall would hide the warning
        return 0 if shard else EXIT_REJECTED
    return 0


def _convert(args: argparse.Namespace) -> int:
    from painter.checkpoints import convert

    if args.source == "paddle":
        from painter.hub import PROJECT_ROOT
        from painter.hub.paddle import convert_paddle

        beside = Path(args.src).with_name("vocab.txt")
        vocab = Path(args.vocab) if args.vocab else beside if beside.is_file() else PROJECT_ROOT / "assets" / "vocab.txt"
        log.info("wrote %s", convert_paddle(args.src, vocab, args.dst, n_head=args.n_head))
        return 0
    from painter.precision import PRECISIONS

    learnt_from = None
    if args.learnt_from:
        from painter.data.tsv import RejectedRow
        from painter.training.data import picture_rows

        learnt_from = [row[2] for row in picture_rows(args.learnt_from) if not isinstance(row, RejectedRow)]
        if not learnt_from:
            raise DataError(f"{args.learnt_from} has no captions (idx<TAB>text<TAB>imgbase64 rows) to learn from")
    dst = convert(args.src, args.dst, to=args.to, dtype=PRECISIONS[args.dtype] if args.dtype else None,
                  vqgan_dir=args.shared_vqgan, sampling=dict(args.sampling),
                  guidance=None if args.guidance is None else args.guidance == "yes", words=args.domain_words,
                  learnt_from=learnt_from)
    log.info("wrote %s", dst)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="painter: %(message)s",
                        stream=sys.stderr)
    try:
        return args.func(args)
    except PainterError as exc:
        log.error("error: %s", exc)
        return EXIT_ERROR
    except KeyboardInterrupt:
        log.error("interrupted; everything written so far is kept: run the same command again to resume")
        return EXIT_INTERRUPTED
