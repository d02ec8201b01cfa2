"""Conversions between tensors, PIL images and base64 PNG, with the reference's exact rounding."""

from __future__ import annotations

import base64
import json
import io
import math

import numpy as np
import torch
from PIL import Image, PngImagePlugin


def eight_bit(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> the 8-bit values the reference writes: ((x + 1) * 127.5) clipped and truncated (as float)."""
    return ((images.detach().float() + 1) * 127.5).clamp(0, 255).floor()


def tensor_to_pil(images: torch.Tensor) -> list[Image.Image]:
    """[B, 3, H, W] in [-1, 1] -> RGB images."""
    arr = eight_bit(images).to(torch.uint8).cpu().permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(a, mode="RGB") for a in arr]


def psnr(images: torch.Tensor, target: torch.Tensor) -> float:
    """PSNR in dB between the 8-bit versions of two [-1, 1] batches, i.e. between the PNGs they become."""
    mse = torch.mean((eight_bit(images) - eight_bit(target)) ** 2).item()
    return 10 * math.log10(255 ** 2 / max(mse, 1e-10))


def png_bytes(image: Image.Image, pnginfo=None) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=pnginfo)
    return buf.getvalue()


PARAMS_KEY = "painter"  # the PNG text chunk holding a picture's parameters (and codes) as JSON
PARAMS_FIELDS = ("prompt", "style", "model", "seed", "top_k", "top_p", "temperature", "guidance_scale", "version")


def png_info(params: dict) -> PngImagePlugin.PngInfo:
    """PNG text chunks for a picture's parameters: one JSON chunk for machines (restore, repaint) and one
    readable chunk per field for people."""
    info = PngImagePlugin.PngInfo()
    info.add_text(PARAMS_KEY, json.dumps(params, ensure_ascii=False))
    for k in PARAMS_FIELDS:
        if k in params:
            info.add_itxt(k, str(params[k]))
    return info


def picture_params(image: Image.Image) -> dict:
    """What Painter put in a picture's ``info`` (its parameters, codes and VQGAN id), ready for ``png_info``."""
    return {k: v for k, v in image.info.items() if isinstance(v, (str, int, float)) and not isinstance(v, bool)}


def png_base64(image: Image.Image) -> str:
    """Standard base64 of a PNG, as the reference writes ``gen_imgbase64``, carrying the picture's parameters
    and codes when Painter painted it (text chunks, which EasyNLP's readers ignore)."""
    params = picture_params(image)
    return base64.b64encode(png_bytes(image, png_info(params) if params else None)).decode("ascii")


class ImageDecodeError(ValueError):
    """A base64 string or image file that cannot be turned into a picture."""


def decode_base64_image(data: str) -> Image.Image:
    """urlsafe or standard base64 of any image format Pillow reads -> a fully loaded image."""
    text = data.strip()
    try:
        raw = base64.b64decode(text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4), validate=True)
    except (ValueError, base64.binascii.Error) as exc:
        raise ImageDecodeError(f"bad base64 ({exc})") from exc
    try:
        image = Image.open(io.BytesIO(raw))
        image.load()
    except Exception as exc:  # Pillow raises many types for truncated or foreign bytes
        raise ImageDecodeError(f"not a readable image ({type(exc).__name__}: {exc})") from exc
    return image


def to_model_input(image: Image.Image, resolution: int) -> torch.Tensor:
    """RGB (transparent parts composited on white), shortest side resized to ``resolution``, centre-cropped,
    scaled to [-1, 1]: [3, R, R]. This is the reference's preprocessing, plus the alpha handling."""
    if image.mode.startswith("I"):  # 16-bit greyscale: Pillow's convert("RGB") would clip it to white
        values = np.asarray(image, dtype=np.float32)
        if image.mode != "I" or values.max() > 255:
            values = values / 257
        image = Image.fromarray(values.clip(0, 255).astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "P") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    image = image.convert("RGB")
    w, h = image.size
    scale = resolution / min(w, h)
    image = image.resize((max(resolution, round(w * scale)), max(resolution, round(h * scale))), Image.BICUBIC)
    w, h = image.size
    left, top = (w - resolution) // 2, (h - resolution) // 2
    image = image.crop((left, top, left + resolution, top + resolution))
    arr = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()
