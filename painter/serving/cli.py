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
from painter.errors import PainterError

EXIT_ERROR, EXIT_REJECTED, EXIT_INTERRUPTED = 1, 3, 130
log = logging.getLogger("painter")


def _add_sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0, help="image j of a prompt uses seed + j; -1 picks one (default 0)")
    p.add_argument("--num-images", type=int, default=1, help="images per prompt (default 1)")
    p.add_argument("--top-k", type=int, default=None, help="keep the k most likely codes (default 100)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default 1.0 = off)")
    p.add_argument("--temperature", type=float, default=1.0, help="> 0; lower is more conservative (default 1.0)")


def _add_runtime_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--precision", default="fp32", help="fp32, bf16 or fp16 (CUDA) (default fp32)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="painter", description="Chinese text-to-image with pai-painter models")
    parser.add_argument("--version", action="version", version=f"painter {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("predict", help="paint every prompt of a TSV file (resumable)")
    p.add_argument("--model", required=True, help="model directory or known model name")
    p.add_argument("--input", required=True, help="TSV rows idx<TAB>text (a third column is ignored)")
    p.add_argument("--output", required=True, help="TSV rows idx<TAB>text<TAB>base64 PNG; re-run to resume")
    _add_sampling_args(p)
    p.add_argument("--batch-size", type=int, default=8, help="images sampled together (default 8)")
    _add_runtime_args(p)
    p.set_defaults(func=_predict)

    p = sub.add_parser("convert", help="convert a model between the EasyNLP and Painter layouts")
    p.add_argument("src", help="model directory (EasyNLP or Painter layout)")
    p.add_argument("dst", help="new directory for the converted model")
    p.add_argument("--to", choices=("painter", "easynlp"), default=None,
                   help="target layout (default: the other one)")
    p.set_defaults(func=_convert)
    return parser


def _predict(args: argparse.Namespace) -> int:
    from painter.serving.pipeline import Painter
    from painter.serving.predict import predict, rejects_path

    painter = Painter.from_pretrained(args.model, device=args.device, precision=args.precision)
    report = predict(painter, args.input, args.output, seed=args.seed, num_images=args.num_images,
                     top_k=args.top_k, top_p=args.top_p, temperature=args.temperature,
                     batch_size=args.batch_size, progress=not args.quiet)
    log.info("%d image row(s) written to %s (%d were already there)", report.written, args.output, report.skipped)
    if report.rejected:
        log.warning("%d input row(s) rejected; see %s", len(report.rejected), rejects_path(Path(args.output)))
        return EXIT_REJECTED
    return 0


def _convert(args: argparse.Namespace) -> int:
    from painter.checkpoints import convert

    dst = convert(args.src, args.dst, to=args.to)
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
