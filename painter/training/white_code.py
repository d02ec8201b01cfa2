"""The canonical white code of a VQGAN (``VQGANConfig.white_code``), chosen on the pictures it will encode.

Among the codes a VQGAN gives white cells, the one that reconstructs the pictures best when every white cell
is given it (the decoder sees it next to objects too, so the most common code is not always the best).
``python -m painter.training.white_code VQGAN_DIR TRAIN.tsv`` sets it on a trained VQGAN in place.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

import torch

from painter.data.images import psnr
from painter.models import VQGAN
from painter.models.vqgan import white_cells

log = logging.getLogger(__name__)


@torch.no_grad()
def choose_white_code(vqgan: VQGAN, images: torch.Tensor, candidates: int = 12,
                      batch: int = 50) -> tuple[int | None, dict[int, float]]:
    """(the best white code, or None when no picture has a white cell; PSNR of each candidate tried)."""
    vqgan.eval()
    codes = torch.cat([vqgan.nearest_codes(chunk) for chunk in images.split(batch)])
    white = white_cells(images, vqgan.config.downsample_factor)
    if not white.any():
        return None, {}
    counts = torch.bincount(codes[white], minlength=vqgan.config.n_embed)
    scores = {}
    for code in counts.argsort(descending=True)[:candidates].tolist():
        if not counts[code]:
            break
        snapped = codes.masked_fill(white, code)
        recon = torch.cat([vqgan.decode(chunk) for chunk in snapped.split(batch)])
        scores[code] = float(psnr(recon, images))
    return max(scores, key=scores.get), scores


def with_white_code(vqgan: VQGAN, images: torch.Tensor) -> VQGAN:
    """The VQGAN with its white code chosen on ``images`` (its config replaced; weights untouched)."""
    code, scores = choose_white_code(vqgan, images)
    if code is not None:
        log.info("white code %d: PSNR %.2f dB with every white cell snapped (candidates %s)", code, scores[code],
                 {c: round(s, 2) for c, s in scores.items()})
    vqgan.config = dataclasses.replace(vqgan.config, white_code=code)
    return vqgan


def main(argv: list[str] | None = None) -> None:
    from safetensors import safe_open

    from painter.checkpoints import VQGAN_WEIGHTS, load_vqgan, save_vqgan
    from painter.training.data import read_examples

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("vqgan", help="a standalone VQGAN directory (painter train-vqgan's OUTPUT/vqgan)")
    parser.add_argument("train", help="TSV of the pictures it encodes (the first --pictures are used)")
    parser.add_argument("--pictures", type=int, default=400)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    vqgan = load_vqgan(args.vqgan)
    with safe_open(str(Path(args.vqgan) / VQGAN_WEIGHTS), "pt") as stored:  # keep the stored float format
        dtype = stored.get_tensor(next(iter(stored.keys()))).dtype
    images = read_examples(Path(args.train), vqgan.config.resolution).images[:args.pictures]
    save_vqgan(with_white_code(vqgan, images), args.vqgan, dtype=dtype)


if __name__ == "__main__":
    main()
