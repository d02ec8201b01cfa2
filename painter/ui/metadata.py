"""Generation parameters in PNG text chunks: written with every image, read back from a dropped PNG."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from painter.data.images import PARAMS_KEY as KEY
from painter.data.images import png_info

MAX_PARAMS_CHARS = 20_000  # a picture's parameters with its codes are about 1,200 characters


def save_png(image: Image.Image, path: str | Path, params: dict) -> Path:
    """PNG with one JSON chunk (``painter``) for machines and one readable chunk per field for people."""
    image.save(path, format="PNG", pnginfo=png_info(params))
    return Path(path)


def read_params(path: str | Path) -> dict | None:
    """The parameters stored by :func:`save_png`, or None when the file holds none (or is no image)."""
    try:
        with Image.open(path) as image:
            image.load()
            raw = image.info.get(KEY) or getattr(image, "text", {}).get(KEY)
    except Exception:  # any unreadable upload simply has no parameters
        return None
    if not raw:
        return None
    if len(raw) > MAX_PARAMS_CHARS:  # far more than any picture's parameters and codes
        return None
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):  # not JSON, a number of thousands of digits, nesting thousands deep
        return None
    return data if isinstance(data, dict) else None
