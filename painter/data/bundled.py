"""``painter data bundled``: the multi-style, multi-domain 128x128 data set the bundled models learn from.

Two plans draw from the same pinned registry packages (see ``sources``; ``ATTRIBUTION.md`` credits each one):

* **compact** (the default, about 3,400 pictures): what a 2-core CPU can teach in the recipe's time. A small
  GPT learns its pictures from passes over each one (about 40), not from many pictures seen once, so the set
  is sized from the measured training speed (the arithmetic is in ``recipes/bundled-models.sh``): every emoji
  subject once in a primary art style (Fluent 3D, else Noto), a second style for about half of them so that
  seeds differ, and the three preset domains: product shots (电商), scenes with crops of a few real
  photographs (风景) and ink paintings (国画).
* **full** (``--full``, about 11,200 pictures, for a GPU): the emoji in six art styles, the domains with more
  styles per subject, and calligraphy (书法).

Files written to the output folder:

* ``train.tsv`` — ``idx<TAB>caption<TAB>PNG base64``, several captions per picture;
* ``heldout.tsv`` — pictures of held-out (subject, style) pairs: 10% of the pairs whose subject is trained
  in other styles and whose style is trained on other subjects (never in train.tsv);
* ``valid.tsv`` — every 5th held-out picture with one caption: a quick validation set for the VQGAN's PSNR
  and the GPT's loss during training;
* ``paraphrase.tsv`` — training pictures with prompts worded as no training caption is; a prompt that names
  no style has a row for each trained emoji picture of its subject, since each is what it asks for;
* ``manifest.tsv`` — one line per picture: id, subject, style, split, sha256 of its PNG, its captions;
* ``probe.tsv`` — a handful of training pictures with their first caption, committed beside the manifest: a
  test paints them with the shipped models and checks retrieval beats chance (the weights are the trained ones);
* ``ATTRIBUTION.md`` — sources, versions, licences and credits.

Row ids are ``STYLE/SUBJECT/N``, so evaluation can compare a picture with candidates of its own style.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from PIL import Image

from painter.data import renderers
from painter.data.captions import (DOMAIN_WORDS, EVERYDAY_DOMAINS, CaptionParts, domain_captions, emoji_captions,
                                   everyday_caption, measure_word, paraphrase, specific_keywords)
from painter.data.emoji_styles import StyleSource, Subject, load_subjects, pad_square
from painter.data.files import atomic_output
from painter.data.images import png_bytes
from painter.data.packages import Archive, default_cache
from painter.data.sources import EMOJIBASE, PHOTOS, STYLE_BY_ID, STYLES, WALLPAPERS, WENKAI
from painter.data.tsv import tsv_line

log = logging.getLogger(__name__)

SIZE = 128
CAPTIONS_PER_IMAGE = 4
HELD_OUT_FRACTION = 0.10
PARAPHRASE_PROMPTS = 400
PROBE_PICTURES = 16
VALID_EVERY = 5
CROPS_PER_PHOTO = 40
FONT = "usr/share/fonts/truetype/lxgw-wenkai/LXGWWenKai-Bold.ttf"

PRODUCT = ("clothing", "food-fruit", "food-vegetable", "food-prepared", "food-asian", "food-sweet", "drink",
           "dishware", "household", "phone", "computer")
SCENERY = ("place-geographic", "place-building", "place-religious", "place-other", "sky-weather", "plant-other")
INK = ("animal-mammal", "animal-bird", "animal-marine", "animal-amphibian", "animal-reptile", "animal-bug",
       "plant-flower", "plant-other", "place-geographic")
INK_EXTRA = {"1f30a", "1f319", "1f315", "1f343", "1f38b"}  # water wave, moons, leaves in wind, bamboo
PRODUCT_STYLES = ("fluent-3d", "noto", "fluent-color")
PRIMARY_STYLES = ("fluent-3d", "noto")  # compact: a subject's one style, the first its packages have
SECOND_STYLES = ("noto", "fluent-color", "twemoji", "fluent-flat")  # compact: variety for about half
SECOND_STYLE_FRACTION = 0.5
INK_STYLES = ("fluent-flat", "noto")
SCENERY_STYLES = ("noto", "fluent-3d", "fluent-color", "twemoji", "fluent-flat")
CALLIGRAPHY = ("福禄寿喜财吉祥如意和平安康乐美爱心善德仁义礼智信忠孝诚勤俭静思道天地人日月星山水风雨雷电云雪花鸟鱼"
               "虫龙凤虎马牛羊狗鸡兔鼠蛇猴春夏秋冬东南西北中国家梦永恒光明正大金木火土石竹松梅兰菊荷茶酒书画诗"
               "歌舞琴棋剑江河湖海林森田园草叶红白黑青黄蓝紫飞行走看听说笑好新年快生命自然真学文武力志远")
CALLIGRAPHY_WORDS = ("山水", "福寿", "和平", "平安", "吉祥", "如意", "春风", "明月", "静心", "厚德", "自然", "梅花",
                     "长城", "江南", "知足", "天道", "清风", "快乐", "龙马", "书香")


@dataclass(frozen=True)
class Plan:
    """How many pictures of each kind a data set draws."""

    name: str
    styles_per_subject: dict  # domain -> pictures per subject (rotating through the domain's styles)
    crops_per_photo: int
    calligraphy: bool


FULL = Plan("full", {"product": 3, "scenery": 3, "ink": 2}, CROPS_PER_PHOTO, True)
COMPACT = Plan("compact", {"product": 2, "scenery": 2, "ink": 2}, 24, False)


@dataclass
class Picture:
    id: str  # STYLE/SUBJECT
    subject: str  # emoji key, "char:X" or "photo:N"
    style: str  # emoji style id, or the domain: product, scenery, ink, calligraphy, photo
    draw: Callable[[], Image.Image]
    captions: Callable[[], list[str]]
    split: str = "train"
    paraphrase: str = ""
    paraphrase_names_style: bool = False  # else any emoji picture of the subject answers the paraphrase


def _stable_unit(text: str) -> float:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def held_out_pairs(pairs, fraction: float = HELD_OUT_FRACTION) -> set[tuple[str, str]]:
    """About ``fraction`` of (subject, style) pairs, chosen by a hash; a subject always keeps at least one
    trained style and a style at least one trained subject, so every held-out pair combines things seen."""
    pairs = set(pairs)
    chosen = {p for p in pairs if _stable_unit(f"{p[0]}|{p[1]}") < fraction}
    by_subject: dict[str, list[tuple[str, str]]] = {}
    for p in pairs:
        by_subject.setdefault(p[0], []).append(p)
    for mine in by_subject.values():
        if all(p in chosen for p in mine):
            chosen.discard(min(mine, key=lambda p: _stable_unit(f"{p[0]}|{p[1]}")))
    trained_styles = {st for p in pairs - chosen for st in [p[1]]}
    return {p for p in chosen if p[1] in trained_styles}


class Builder:
    def __init__(self, cache: Path | None = None):
        self.cache = Path(cache or default_cache())
        self.subjects = load_subjects(self.cache)
        self.keywords = specific_keywords(self.subjects)
        self.sources = {s.id: StyleSource(s, self.cache) for s in STYLES}
        self.font = self.cache / "LXGWWenKai-Bold.ttf"
        if not self.font.exists():
            self.font.write_bytes(Archive(WENKAI, self.cache).read(FONT))
        self.wallpapers = Archive(WALLPAPERS, self.cache)
        self._crops: dict[int, list[Image.Image]] = {}  # the crops of the photo being drawn

    def parts(self, subject: Subject, style_word: str = "") -> CaptionParts:
        return CaptionParts(subject.name, measure_word(subject), self.keywords[subject.key], style_word)

    def _emoji(self, style_id: str, key: str) -> Picture:
        style, source = STYLE_BY_ID[style_id], self.sources[style_id]
        parts = self.parts(self.subjects[key], style.word)
        prompt = paraphrase(parts, f"{style.id}/{key}")
        return Picture(f"{style.id}/{key}", key, style.id, lambda: pad_square(source.image(key, 112), SIZE, 112),
                       lambda: emoji_captions(parts, CAPTIONS_PER_IMAGE, f"{style.id}/{key}")
                       + [everyday_caption(parts, f"{style.id}/{key}")],
                       paraphrase=prompt, paraphrase_names_style=style.word in prompt)

    def emoji_pairs(self, plan: Plan) -> list[tuple[str, str]]:
        """(style, subject) of the plan's emoji pictures: every style's every subject (full), or each subject in
        its primary style and, for about half of them (chosen by a hash), in a second one (compact)."""
        if plan.name == "full":
            return [(st.id, key) for st in STYLES for key in sorted(self.sources[st.id].keys & set(self.subjects))]
        pairs = []
        for key in sorted(self.subjects):
            have = [st for st in PRIMARY_STYLES if key in self.sources[st].keys]
            if not have:
                continue
            pairs.append((have[0], key))
            if _stable_unit(f"second|{key}") < SECOND_STYLE_FRACTION:
                others = [st for st in SECOND_STYLES if st != have[0] and key in self.sources[st].keys]
                if others:
                    pairs.append((others[int(_stable_unit(f"style|{key}") * len(others))], key))
        return pairs

    def pictures(self, plan: Plan = COMPACT) -> list[Picture]:
        pics = [self._emoji(style, key) for style, key in self.emoji_pairs(plan)]
        per = plan.styles_per_subject
        pics += self._domain("product", PRODUCT, PRODUCT_STYLES, per["product"],
                             lambda img, s, seed: renderers.product_shot(img, SIZE, seed))
        pics += self._domain("scenery", SCENERY, SCENERY_STYLES, per["scenery"],
                             lambda img, s, seed: renderers.scene(img, s.name, SIZE, seed))
        pics += self._domain("ink", INK, INK_STYLES, per["ink"],
                             lambda img, s, seed: renderers.ink_wash(img, SIZE, seed, str(self.font)), INK_EXTRA)
        if plan.calligraphy:
            pics += self._calligraphy()
        for p, photo in enumerate(PHOTOS):
            for c in range(plan.crops_per_photo):
                pics.append(Picture(f"photo/p{p}-{c}", f"photo:{p}", "photo",
                                    lambda ph=photo, p=p, c=c: self._crop(ph, p, c),
                                    lambda ph=photo, c=c: _rotate(list(ph.captions), c)[:3]))
        return pics

    def _calligraphy(self) -> list[Picture]:
        pics = []
        for n, text in enumerate(dict.fromkeys(tuple(CALLIGRAPHY) + CALLIGRAPHY_WORDS)):
            parts = CaptionParts(text)
            pics.append(Picture(f"calligraphy/u{'-'.join(f'{ord(c):x}' for c in text)}", f"char:{text}", "calligraphy",
                                lambda t=text, n=n: renderers.calligraphy(t, str(self.font), SIZE, seed=n),
                                lambda p=parts, i=n: domain_captions("calligraphy", p, CAPTIONS_PER_IMAGE, f"c{i}")))
        return pics

    def _crop(self, photo, p: int, c: int) -> Image.Image:
        if p not in self._crops:
            image = Image.open(io.BytesIO(self.wallpapers.read(photo.file)))
            image.draft("RGB", (1024, 1024))  # JPEG: decode at a fraction of the size, enough for 128 px crops
            self._crops = {p: renderers.photo_crops(image, CROPS_PER_PHOTO, SIZE, seed=p)}  # the same crops in both plans
        return self._crops[p][c]

    def _domain(self, domain: str, subgroups, styles, per_subject: int, render, extra=frozenset()) -> list[Picture]:
        """Each subject of the domain's subgroups drawn from ``per_subject`` of ``styles`` (rotating)."""
        pics = []
        keys = sorted(k for k, s in self.subjects.items() if s.subgroup in subgroups or k in extra)
        for n, key in enumerate(keys):
            subject = self.subjects[key]
            have = [st for st in styles if key in self.sources[st].keys]
            for st in _rotate(have, n)[:per_subject]:
                pid = f"{domain}/{key}-{st}"
                seed = int(_stable_unit(pid) * 1e6)
                parts = self.parts(subject)
                pics.append(Picture(pid, key, domain,
                                    lambda s=self.sources[st], k=key, sub=subject, seed=seed: render(s.image(k, 160), sub, seed),
                                    lambda p=parts, i=pid: domain_captions(domain, p, CAPTIONS_PER_IMAGE, i)
                                    + ([everyday_caption(p, i, DOMAIN_WORDS[domain][1][0])]
                                       if domain in EVERYDAY_DOMAINS else [])))
        return pics


def _rotate(items: list, n: int) -> list:
    return items[n % len(items):] + items[:n % len(items)] if items else items


def assign_splits(pics: list[Picture]) -> None:
    """Mark held-out (subject, style) pairs; calligraphy and photos always train."""
    pairs = [(p.subject, p.style) for p in pics if p.style not in ("calligraphy", "photo")]
    held = held_out_pairs(pairs)
    for p in pics:
        if (p.subject, p.style) in held:
            p.split = "heldout"


def build_bundled_dataset(output: str | Path, cache: Path | None = None, limit: int | None = None,
                          plan: Plan = COMPACT) -> dict:
    """Draw every picture of the plan from the pinned packages and write the data set; return the counts.

    ``limit`` keeps about that many pictures, evenly spread (a quick look; the recipe builds them all)."""
    pics = Builder(cache).pictures(plan)
    assign_splits(pics)
    if limit:
        pics = pics[::max(1, len(pics) // limit)]
    return write_dataset(pics, Path(output))


def write_dataset(pics: list[Picture], output: Path) -> dict:
    """The TSVs, the manifest and ATTRIBUTION.md for pictures whose splits are assigned."""
    rng = random.Random(0)
    candidates = [i for i, p in enumerate(pics) if p.paraphrase and p.split == "train"]
    paraphrased = set(rng.sample(candidates, min(PARAPHRASE_PROMPTS, len(candidates))))
    of_subject: dict[str, list[int]] = {}
    for i in candidates:
        of_subject.setdefault(pics[i].subject, []).append(i)
    train, heldout, valid, manifest = [], [], [], []
    b64_of: dict[int, str] = {}  # the trained emoji pictures, which paraphrases show
    counts: dict[str, int] = {}
    for i, pic in enumerate(pics):
        png = png_bytes(pic.draw())
        b64 = base64.b64encode(png).decode("ascii")
        captions = pic.captions()
        if pic.split == "train":
            train += [tsv_line(f"{pic.id}/{n}", caption, b64) for n, caption in enumerate(captions)]
        else:
            rows = [tsv_line(f"{pic.id}/{n}", caption, b64) for n, caption in enumerate(captions[:2])]
            if len(heldout) % (2 * VALID_EVERY) == 0:  # every 5th held-out picture (two rows each)
                valid.append(rows[0])
            heldout += rows
        if pic.paraphrase and pic.split == "train":
            b64_of[i] = b64
        manifest.append(tsv_line(pic.id, pic.subject, pic.style, pic.split, hashlib.sha256(png).hexdigest(),
                                 "|".join(captions)))
        counts[pic.style] = counts.get(pic.style, 0) + 1
        if (i + 1) % 1000 == 0:
            log.info("%d / %d pictures", i + 1, len(pics))
    shown: dict[tuple[str, int], None] = {}  # (prompt, picture): two styles of a subject may share a prompt
    for i in sorted(paraphrased):
        meant = [i] if pics[i].paraphrase_names_style else [i] + of_subject[pics[i].subject]
        shown.update(((pics[i].paraphrase, j), None) for j in meant)
    para = [tsv_line(f"{pics[j].id}/p", prompt, b64_of[j]) for prompt, j in shown]
    files = {"train.tsv": train, "heldout.tsv": heldout, "valid.tsv": valid, "paraphrase.tsv": para,
             "manifest.tsv": ["id\tsubject\tstyle\tsplit\tpng_sha256\tcaptions\n"] + manifest,
             "probe.tsv": probe_rows(train)}
    for name, lines in files.items():
        with atomic_output(output / name) as tmp:
            tmp.write_text("".join(lines), encoding="utf-8")
    summary = {"pictures": len(pics), "train_rows": len(train), "heldout_rows": len(heldout),
               "heldout_pictures": sum(p.split == "heldout" for p in pics),
               "paraphrase_prompts": len({p for p, _ in shown}), "paraphrase_rows": len(para),
               "by_style": counts}
    with atomic_output(output / "ATTRIBUTION.md") as tmp:
        tmp.write_text(attribution(summary), encoding="utf-8")
    log.info("bundled data set: %s", summary)
    return summary


def probe_rows(train: list[str], pictures: int = PROBE_PICTURES) -> list[str]:
    """The first row (first caption) of ``pictures`` training pictures spread evenly over the file."""
    firsts = [line for line in train if line.split("\t", 1)[0].endswith("/0")]
    return firsts[::max(1, len(firsts) // pictures)][:pictures]


def attribution(summary: dict) -> str:
    lines = ["# The bundled data set", "",
             "Built by `painter data bundled` from pinned registry packages (versions and sha256 in "
             "`painter/data/sources.py`). Every source's licence allows training on it and shipping the "
             "weights; nothing share-alike or non-commercial is used.", "", "## Sources", ""]
    packages = [s.package for s in STYLES] + [EMOJIBASE, WENKAI, WALLPAPERS]
    for pkg in dict.fromkeys(packages):
        lines.append(f"- `{pkg.name}` {pkg.version} ({pkg.registry}, {pkg.licence}): {pkg.credit}")
    lines += ["", "Photographs (square crops, captioned by hand in Chinese):", ""]
    lines += [f"- {p.credit} ({p.licence})" for p in PHOTOS]
    lines += ["", "Product shots, scenes and ink paintings are drawn by Painter's own renderers "
              "(`painter/data/renderers.py`) from the emoji above (their seals use LXGW WenKai)"
              + ("; calligraphy is written in LXGW WenKai." if "calligraphy" in summary["by_style"] else "."), "",
              "## Counts", "", "| style or domain | pictures |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in sorted(summary["by_style"].items())]
    lines += ["", f"{summary['pictures']} pictures; {summary['train_rows']} training rows, "
              f"{summary['heldout_pictures']} held-out pictures ({summary['heldout_rows']} rows), "
              f"{summary['paraphrase_prompts']} paraphrased prompts ({summary['paraphrase_rows']} rows: one without a "
              "style word has a row for each trained emoji picture of its subject).", ""]
    return "\n".join(lines)
