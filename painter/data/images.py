"""Conversions between tensors, PIL images and base64 PNG, with the reference's exact rounding."""

from __future__ import annotations

import base64
import io

import numpy as np
import torch
from PIL import Image


def tensor_to_pil(images: torch.Tensor) -> list[Image.Image]:
    """[B, 3, H, W] in [-1, 1] -> RGB images; ((x + 1) * 127.5) clipped and truncated to uint8 as the reference."""
    arr = ((images.detach().float().cpu().permute(0, 2, 3, 1).numpy() + 1.0) * 127.5).clip(0, 255).astype(np.uint8)
    return [Image.fromarray(a, mode="RGB") for a in arr]


def png_bytes(image: Image.Image, pnginfo=None) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=pnginfo)
    return buf.getvalue()


def png_base64(image: Image.Image) -> str:
    """Standard base64 of a PNG, as the reference writes ``gen_imgbase64``."""
    return base64.b64encode(png_bytes(image)).decode("ascii")
