"""The emoji of every art style, keyed by code points, and the subjects (names, keywords, categories).

A key is the emoji's code points in lower-case hex joined by "-", without variation selectors (fe0f), so
the same emoji has one key in every package. Skin-tone variants are left out: they are near-duplicates
that differ in one colour and would take a third of the training time. SVG styles are rasterized with
``resvg-py`` (a wheel with no system library) at a fixed width and 96 dpi.
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass
from functools import cached_property

from PIL import Image

from painter.data.packages import Archive
from painter.data.sources import EMOJIBASE, FLUENT_FLAT, EmojiStyle
from painter.errors import DataError

log = logging.getLogger(__name__)

SKIN_TONES = {"1f3fb", "1f3fc", "1f3fd", "1f3fe", "1f3ff"}
# Subgroups left out: letters, keycaps and regional flags are text more than pictures.
SKIPPED_SUBGROUPS = {"skin-tone", "keycap", "alphanum", "subdivision-flag", "country-flag"}


def emoji_key(codepoints: str) -> str:
    """'1F636-200D-1F32B-FE0F' or '1f636-200d-1f32b' -> '1f636-200d-1f32b'."""
    parts = [p.lower().lstrip("0") or "0" for p in codepoints.replace("_", "-").split("-") if p]
    return "-".join(p for p in parts if p != "fe0f")


def has_skin_tone(key: str) -> bool:
    return bool(SKIN_TONES & set(key.split("-")))


@dataclass(frozen=True)
class Subject:
    key: str
    name: str  # CLDR Chinese name, e.g. "红苹果"
    keywords: tuple[str, ...]  # CLDR Chinese keywords, e.g. ("苹果", "水果", ...)
    subgroup: str  # emojibase subgroup, e.g. "food-fruit"


def load_subjects(cache=None) -> dict[str, Subject]:
    """Every emoji with a Chinese name, minus skin tones and the skipped subgroups."""
    archive = Archive(EMOJIBASE, cache)
    groups = json.loads(archive.read("meta/groups.json"))["subgroups"]
    subjects = {}
    for entry in json.loads(archive.read("zh/data.json")):
        key, label = emoji_key(entry["hexcode"]), (entry.get("label") or "").strip()
        subgroup = groups.get(str(entry.get("subgroup")), "")
        if not label or has_skin_tone(key) or subgroup in SKIPPED_SUBGROUPS or "\t" in label:
            continue
        keywords = tuple(t.strip() for t in entry.get("tags", []) if t.strip() and t.strip() != label)
        subjects[key] = Subject(key, label, keywords, subgroup)
    return subjects


def rasterize_svg(svg: str, width: int) -> Image.Image:
    """SVG text -> RGBA image ``width`` pixels wide (resvg at 96 dpi; the height follows the aspect)."""
    import resvg_py

    try:
        png = resvg_py.svg_to_bytes(svg_string=svg, width=width, dpi=96)
    except ValueError as exc:
        raise DataError(f"SVG could not be rasterized: {exc}") from exc
    image = Image.open(io.BytesIO(bytes(png)))
    image.load()
    return image.convert("RGBA")


def pad_square(image: Image.Image, size: int, content: int, background=(255, 255, 255)) -> Image.Image:
    """RGBA ``image`` scaled so its longer side is ``content`` and centred on a ``size`` square (RGB)."""
    scale = content / max(image.size)
    fitted = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.LANCZOS)
    canvas = Image.new("RGBA", (size, size), background + (255,))
    canvas.alpha_composite(fitted, ((size - fitted.width) // 2, (size - fitted.height) // 2))
    return canvas.convert("RGB")


def iconify_svg(data: dict, slug: str) -> str | None:
    """The SVG of one icon of an Iconify JSON set (following an alias and its horizontal flip)."""
    icons, aliases = data["icons"], data.get("aliases", {})
    flip = False
    while slug in aliases:
        flip ^= bool(aliases[slug].get("hFlip"))
        slug = aliases[slug]["parent"]
    icon = icons.get(slug)
    if icon is None:
        return None
    w, h = icon.get("width", data.get("width", 16)), icon.get("height", data.get("height", 16))
    body = icon["body"]
    if flip ^ bool(icon.get("hFlip")):
        body = f'<g transform="translate({w} 0) scale(-1 1)">{body}</g>'
    return (f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
            f'width="{w}" height="{h}" viewBox="{icon.get("left", 0)} {icon.get("top", 0)} {w} {h}">{body}</svg>')


class StyleSource:
    """One art style's emoji: ``keys`` lists what it has, ``image(key, width)`` draws one as RGBA."""

    def __init__(self, style: EmojiStyle, cache=None):
        self.style, self.cache = style, cache
        self.archive = Archive(style.package, cache)

    @cached_property
    def _index(self) -> dict[str, str]:
        """key -> file (3D) or icon slug (SVG sets)."""
        if self.style.package.registry == "npm" and self.style.id == "fluent-3d":
            return {emoji_key(n.split("/")[-1].removesuffix(".webp")): n
                    for n in self.archive.names() if n.startswith("assets/") and n.endswith(".webp")}
        chars = json.loads(self.archive.read("chars.json"))
        if not chars:  # the colour set lists no code points; its slugs are the flat set's
            chars = json.loads(Archive(FLUENT_FLAT, self.cache).read("chars.json"))
        return {emoji_key(points): slug for points, slug in chars.items()}

    @cached_property
    def _icons(self) -> dict:
        return json.loads(self.archive.read("icons.json"))

    @property
    def keys(self) -> set[str]:
        return set(self._index)

    def image(self, key: str, width: int) -> Image.Image | None:
        ref = self._index.get(key)
        if ref is None:
            return None
        if ref.endswith(".webp"):
            image = Image.open(io.BytesIO(self.archive.read(ref)))
            image.load()
            image = image.convert("RGBA")
            return image.resize((width, round(image.height * width / image.width)), Image.LANCZOS)
        svg = iconify_svg(self._icons, ref)
        return rasterize_svg(svg, width) if svg else None
