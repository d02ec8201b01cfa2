"""Repaint: which cells of a picture's code grid to keep, and the codes a picture carries in its metadata.

A picture is a grid of codes (16 x 16 for every model here), painted in raster order. A repaint keeps some
cells with their codes and samples the others, each given every cell before it (``Engine.submit(keep=...)``):
keeping the first rows is exact image completion; keeping the outside of a box repaints the box.

Every picture Painter makes carries its codes in its metadata (``codes``: base64 of little-endian uint16, about
700 characters) with the id of the VQGAN that decodes them (``vqgan``: a digest of its codebook), so a result can
be repainted exactly, by the model that made it or any other on the same VQGAN.
"""

from __future__ import annotations

import base64
import hashlib
import json

import numpy as np
import torch
from PIL import Image

from painter.errors import PainterError


class RepaintError(PainterError):
    """A repaint that cannot be done as asked: a region outside the grid, a mask of the wrong size, codes made
    for another VQGAN, a picture that cannot be read."""


def codes_text(codes: torch.Tensor) -> str:
    """Codes [L] -> the compact text stored in a PNG."""
    return base64.b64encode(codes.to(torch.int64).cpu().numpy().astype("<u2").tobytes()).decode("ascii")


def codes_from_text(text, img_len: int, codebook: int) -> torch.Tensor:
    """The codes stored in a PNG, checked: ``img_len`` codes below ``codebook``."""
    try:
        raw = base64.b64decode(str(text), validate=True)
    except (ValueError, TypeError) as exc:
        raise RepaintError(f"the picture's stored codes are not readable ({exc})") from exc
    if len(raw) != 2 * img_len:
        raise RepaintError(f"the picture stores {len(raw) // 2} codes; this model paints {img_len}")
    codes = torch.from_numpy(np.frombuffer(raw, dtype="<u2").astype(np.int64))
    if int(codes.max()) >= codebook:
        raise RepaintError(f"the picture's codes reach {int(codes.max())}; this model's codebook has {codebook}")
    return codes


def mask_text(keep: torch.Tensor) -> str:
    """The kept cells [L] as hex of their bits in raster order (64 characters for 16 x 16), for a repaint's
    metadata."""
    return np.packbits(keep.bool().cpu().numpy()).tobytes().hex()


def vqgan_id(codebook: torch.Tensor) -> str:
    """A short id of a VQGAN's codebook: codes mean the same pictures only under the same codebook."""
    return hashlib.sha256(codebook.detach().float().cpu().numpy().tobytes()).hexdigest()[:16]


def stored_codes(image: Image.Image) -> tuple[str, str] | None:
    """(codes text, vqgan id) from a picture's Painter metadata (a PNG we wrote, or an image from ``generate``),
    or None when it has none."""
    for source in (image.info, getattr(image, "text", {}) or {}):
        if source.get("codes") and source.get("vqgan"):
            return str(source["codes"]), str(source["vqgan"])
        raw = source.get("painter")
        if raw:
            try:
                params = json.loads(raw)
            except (TypeError, ValueError):
                continue
            if isinstance(params, dict) and params.get("codes") and params.get("vqgan"):
                return str(params["codes"]), str(params["vqgan"])
    return None


def keep_mask(grid: int, keep_rows: int | None = None, box: tuple[int, int, int, int] | None = None,
              mask=None) -> torch.Tensor:
    """The cells to keep [grid * grid] (bool, raster order), from exactly one of: ``keep_rows`` (the first N
    rows), ``box`` (x0, y0, x1, y1 in cells, end exclusive: the box is repainted, the rest kept) or ``mask``
    (grid x grid of truthy = keep). Something must be kept and something repainted."""
    given = [name for name, value in (("keep_rows", keep_rows), ("box", box), ("mask", mask)) if value is not None]
    if len(given) != 1:
        raise RepaintError("say what to keep with one of keep_rows, box or mask"
                           + (f" (got {', '.join(given)})" if given else ""))
    if keep_rows is not None:
        if isinstance(keep_rows, bool) or not isinstance(keep_rows, int) or not 0 < keep_rows < grid:
            raise RepaintError(f"keep_rows must be a whole number from 1 to {grid - 1}, got {keep_rows!r}")
        keep = torch.zeros(grid, grid, dtype=torch.bool)
        keep[:keep_rows] = True
    elif box is not None:
        try:
            x0, y0, x1, y1 = (int(v) for v in box)
        except (TypeError, ValueError):
            raise RepaintError(f"box must be four whole numbers x0, y0, x1, y1 (cells), got {box!r}") from None
        if not (0 <= x0 < x1 <= grid and 0 <= y0 < y1 <= grid):
            raise RepaintError(f"box {x0},{y0},{x1},{y1} is not a region of the {grid} x {grid} grid "
                               f"(0 <= x0 < x1 <= {grid}, 0 <= y0 < y1 <= {grid})")
        keep = torch.ones(grid, grid, dtype=torch.bool)
        keep[y0:y1, x0:x1] = False
    else:
        keep = torch.as_tensor(np.asarray(mask)).bool()
        if keep.shape != (grid, grid):
            raise RepaintError(f"mask must be {grid} x {grid} cells, got {tuple(keep.shape)}")
    if keep.all():
        raise RepaintError("the region keeps every cell: nothing would be repainted")
    if not keep.any():
        raise RepaintError("the region keeps no cell: paint a new picture instead")
    return keep.flatten()
