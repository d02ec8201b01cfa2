"""Pictures of the three domains the emoji styles lack, drawn from an emoji (or a character) with Pillow.

* ``product_shot``: 电商 — the object centred on white with a soft shadow under it, a clear white border;
* ``scene``: 风景 — the subject in a full-frame landscape (sky by time of day, ground by terrain);
* ``ink_wash``: 国画 — grey ink tones on rice paper, darkened strokes, bleeding, a red seal;
* ``calligraphy``: 书法 — one character written in a brush-style font on rice paper, with a seal.

Each is deterministic for its ``seed`` so that a rebuild gives the same bytes.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageFont

PAPER = np.array([243, 236, 220], dtype=np.float32)  # warm rice-paper white
INK = np.array([24, 24, 28], dtype=np.float32)
SEAL_RED = (178, 34, 34)
SEAL_CHARS = "画墨印山水福雅心"


def _fit(image: Image.Image, content: int) -> Image.Image:
    scale = content / max(image.size)
    return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.LANCZOS)


def _smooth_noise(rng: np.random.Generator, size: int, blur: float) -> np.ndarray:
    """Blurred uniform noise in [0, 1], size x size."""
    raw = Image.fromarray((rng.random((size, size)) * 255).astype(np.uint8))
    arr = np.asarray(raw.filter(ImageFilter.GaussianBlur(blur)), dtype=np.float32)
    return (arr - arr.min()) / max(1.0, arr.max() - arr.min())


def product_shot(subject: Image.Image, size: int = 128, seed: int = 0) -> Image.Image:
    """An RGBA object as a product photo: centred, slightly above the middle, a soft oval shadow below it,
    at least ~14% white on every side."""
    rng = np.random.default_rng(seed)
    obj = _fit(subject, round(size * rng.uniform(0.62, 0.7)))
    left, top = (size - obj.width) // 2, round(size * 0.46 - obj.height / 2)
    canvas = Image.new("RGBA", (size, size), (255, 255, 255, 255))
    shadow = Image.new("L", (size, size), 0)
    sw, sy = obj.width * 0.8, top + obj.height
    ImageDraw.Draw(shadow).ellipse((size / 2 - sw / 2, sy - size * 0.035, size / 2 + sw / 2, sy + size * 0.045), fill=90)
    shadow = shadow.filter(ImageFilter.GaussianBlur(size * 0.03))
    canvas = Image.composite(Image.new("RGBA", (size, size), (150, 150, 150, 255)), canvas, shadow)
    canvas.alpha_composite(obj, (left, top))
    return canvas.convert("RGB")


SKIES = {  # (top colour, horizon colour)
    "day": ((90, 150, 225), (190, 220, 245)),
    "sunset": ((70, 60, 130), (250, 160, 90)),
    "night": ((10, 15, 45), (40, 50, 100)),
}
GROUNDS = {"grass": (95, 150, 70), "water": (45, 105, 165), "sand": (220, 190, 130), "snow": (235, 240, 248),
           "rock": (120, 110, 100)}
SKY_WORDS = ("太阳", "月", "星", "云", "雨", "雪花", "彩虹", "闪电", "龙卷风", "雾", "风", "银河", "彗星")


def scene_kind(name: str) -> tuple[str, str, bool]:
    """(sky, ground, subject in the sky?) for a Chinese subject name."""
    sky = ("night" if any(w in name for w in ("夜", "月", "星", "银河", "彗星")) else
           "sunset" if any(w in name for w in ("日落", "日出", "黄昏", "夕", "晨")) else "day")
    ground = ("water" if any(w in name for w in ("海", "湖", "浪", "水", "岛", "河", "船", "鱼")) else
              "sand" if any(w in name for w in ("沙漠", "沙滩", "骆驼", "仙人掌")) else
              "snow" if any(w in name for w in ("雪", "冰")) else
              "rock" if any(w in name for w in ("山", "火山", "岩")) else "grass")
    return sky, ground, any(w in name for w in SKY_WORDS)


def scene(subject: Image.Image, name: str, size: int = 128, seed: int = 0) -> Image.Image:
    """The subject in a landscape that fills the whole frame: a sky gradient, a textured ground band,
    the subject standing on the ground (or up in the sky for suns, moons, clouds, weather)."""
    rng = np.random.default_rng(seed)
    sky, ground, in_sky = scene_kind(name)
    top, horizon = (np.array(c, dtype=np.float32) for c in SKIES[sky])
    t = np.linspace(0, 1, size, dtype=np.float32)[:, None, None]
    arr = np.broadcast_to(top * (1 - t) + horizon * t, (size, size, 3)).copy()
    line = round(size * rng.uniform(0.6, 0.72))
    shade = 0.8 + 0.3 * _smooth_noise(rng, size, 2.0)[..., None]
    arr[line:] = np.array(GROUNDS[ground], dtype=np.float32) * shade[line:] * (0.85 if sky == "night" else 1.0)
    if sky == "night":
        ys, xs = rng.integers(0, line, 25), rng.integers(0, size, 25)
        arr[ys, xs] = 240
    canvas = Image.fromarray(arr.clip(0, 255).astype(np.uint8)).convert("RGBA")
    if in_sky:
        obj = _fit(subject, round(size * rng.uniform(0.45, 0.6)))
        pos = (round(rng.uniform(0.1, 0.9) * (size - obj.width)), round(size * 0.06))
    else:
        obj = _fit(subject, round(size * rng.uniform(0.6, 0.75)))
        pos = ((size - obj.width) // 2 + round(rng.uniform(-0.08, 0.08) * size), min(size - obj.height, line + size // 12 - obj.height))
    canvas.alpha_composite(obj, pos)
    return canvas.convert("RGB")


def rice_paper(size: int, rng: np.random.Generator) -> np.ndarray:
    """Warm off-white with blotchy tone and fine fibres: [size, size, 3] float."""
    tone = 1 + 0.035 * (_smooth_noise(rng, size, 6.0) - 0.5) + 0.02 * (rng.random((size, size)) - 0.5)
    paper = PAPER * tone[..., None]
    for _ in range(size // 8):  # fibres: short faint strokes
        x, y, ang, length = rng.integers(0, size), rng.integers(0, size), rng.uniform(0, np.pi), rng.integers(3, 9)
        xs = (x + np.cos(ang) * np.arange(length)).astype(int).clip(0, size - 1)
        ys = (y + np.sin(ang) * np.arange(length)).astype(int).clip(0, size - 1)
        paper[ys, xs] *= 0.96
    return paper


def _seal(draw_on: Image.Image, rng: np.random.Generator, font_path: str | None) -> None:
    """A small red square seal with one white character, near a lower corner."""
    size = draw_on.width
    side = round(size * 0.14)
    x = size - side - round(size * 0.05) if rng.random() < 0.75 else round(size * 0.05)
    y = size - side - round(size * rng.uniform(0.05, 0.2))
    seal = Image.new("RGBA", (side, side), SEAL_RED + (235,))
    if font_path:
        font = ImageFont.truetype(font_path, round(side * 0.8))
        ImageDraw.Draw(seal).text((side / 2, side / 2), SEAL_CHARS[rng.integers(len(SEAL_CHARS))], font=font,
                                  fill=(250, 235, 225, 255), anchor="mm")
    rough = Image.fromarray(((rng.random((side, side)) > 0.08) * 255).astype(np.uint8))
    seal.putalpha(ImageChops.multiply(seal.getchannel("A"), rough))
    draw_on.alpha_composite(seal, (x, y))


def _ink_on_paper(ink: np.ndarray, rng: np.random.Generator, font_path: str | None, seal: bool) -> Image.Image:
    paper = rice_paper(ink.shape[0], rng)
    arr = paper * (1 - ink[..., None]) + INK * ink[..., None]
    image = Image.fromarray(arr.clip(0, 255).astype(np.uint8)).convert("RGBA")
    if seal:
        _seal(image, rng, font_path)
    return image.convert("RGB")


def ink_wash(subject: Image.Image, size: int = 128, seed: int = 0, font_path: str | None = None) -> Image.Image:
    """An RGBA subject as an ink-wash painting: dark colours become dense ink and light ones a pale wash,
    outlines and colour edges are darkened into strokes, the ink bleeds into the paper, a red seal."""
    rng = np.random.default_rng(seed)
    obj = _fit(subject, round(size * rng.uniform(0.68, 0.8)))
    layer = Image.new("RGBA", (size, size), (255, 255, 255, 0))
    layer.alpha_composite(obj, ((size - obj.width) // 2 + round(rng.uniform(-0.06, 0.06) * size), (size - obj.height) // 2))
    rgba = np.asarray(layer, dtype=np.float32) / 255
    alpha = rgba[..., 3]
    lum = (rgba[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32))
    ink = alpha * (0.18 + 0.72 * (1 - lum) ** 1.3)
    grey = Image.fromarray((lum * alpha * 255 + (1 - alpha) * 255).astype(np.uint8))
    edges = np.asarray(grey.filter(ImageFilter.FIND_EDGES), dtype=np.float32) / 255
    edges[:2], edges[-2:], edges[:, :2], edges[:, -2:] = 0, 0, 0, 0  # the filter's frame is not a stroke
    ink = np.maximum(ink, np.clip(edges * 2.2, 0, 0.92))
    bleed = np.asarray(Image.fromarray((ink * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(size / 64)),
                       dtype=np.float32) / 255
    texture = 0.75 + 0.25 * _smooth_noise(rng, size, 1.5)
    ink = np.clip(np.maximum(ink, bleed * 0.7) * texture, 0, 0.95)
    return _ink_on_paper(ink, rng, font_path, seal=True)


def calligraphy(text: str, font_path: str, size: int = 128, seed: int = 0) -> Image.Image:
    """One or two characters written large in a brush-style font: ink density varies like a brush running
    dry, edges are slightly rough and soft, with a red seal."""
    rng = np.random.default_rng(seed)
    big = size * 2
    mask = Image.new("L", (big, big), 0)
    font = ImageFont.truetype(font_path, round(big * (0.72 if len(text) == 1 else 0.42)))
    draw = ImageDraw.Draw(mask)
    if len(text) == 1:
        draw.text((big / 2, big * 0.47), text, font=font, fill=255, anchor="mm")
    else:  # written top to bottom, as on a hanging scroll
        for i, ch in enumerate(text):
            draw.text((big / 2, big * (0.27 + 0.42 * i)), ch, font=font, fill=255, anchor="mm")
    mask = mask.filter(ImageFilter.MaxFilter(3 + 2 * int(rng.integers(0, 3))))  # a thicker brush
    mask = mask.rotate(rng.uniform(-4, 4), resample=Image.BICUBIC).resize((size, size), Image.LANCZOS)
    ink = np.asarray(mask.filter(ImageFilter.GaussianBlur(0.6)), dtype=np.float32) / 255
    dry = 0.78 + 0.22 * _smooth_noise(rng, size, 1.2)
    return _ink_on_paper(np.clip(ink * dry, 0, 0.96), rng, font_path, seal=True)


def photo_crops(photo: Image.Image, count: int, size: int = 128, seed: int = 0) -> list[Image.Image]:
    """``count`` square crops (55-100% of the short side, anywhere, some mirrored) resized to ``size``."""
    rng = np.random.default_rng(seed)
    photo = photo.convert("RGB")
    short = min(photo.size)
    crops = []
    for _ in range(count):
        side = round(short * rng.uniform(0.55, 1.0))
        x, y = rng.integers(0, photo.width - side + 1), rng.integers(0, photo.height - side + 1)
        crop = photo.crop((x, y, x + side, y + side)).resize((size, size), Image.LANCZOS)
        crops.append(crop.transpose(Image.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else crop)
    return crops
