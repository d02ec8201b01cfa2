"""The bundled data set's parts on fixture pictures: fetching and reading pinned packages, SVG rasterizing,
the product-shot, scene, ink-wash and calligraphy renderers, captions, and the held-out split."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import stat
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from painter.data import renderers
from painter.data.bundled import Picture, held_out_pairs, write_dataset
from painter.data.captions import (DOMAIN_WORDS, EVERYDAY, PARAPHRASES, REWORD_PREFIXES, REWORD_SUFFIXES, CaptionParts,
                                   domain_captions, emoji_captions, everyday_caption, measure_word, paraphrase,
                                   specific_keywords)
from painter.data.emoji_styles import Subject, emoji_key, iconify_svg, pad_square, rasterize_svg
from painter.data.manifest import compare
from painter.data.packages import Archive, Package, fetch
from painter.errors import DataError

CJK_FONTS = ("/usr/share/fonts/truetype/lxgw-wenkai/LXGWWenKai-Bold.ttf",
             "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc", "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc")


def red_ball(size: int = 96) -> Image.Image:
    """A fixture subject: a saturated red disc with a dark outline on transparency."""
    image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    ImageDraw.Draw(image).ellipse((8, 8, size - 8, size - 8), fill=(220, 30, 30, 255), outline=(40, 0, 0, 255),
                                  width=4)
    return image


def arr(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float32)


def border(a: np.ndarray, width: int) -> np.ndarray:
    return np.concatenate([a[:width].reshape(-1, 3), a[-width:].reshape(-1, 3), a[:, :width].reshape(-1, 3),
                           a[:, -width:].reshape(-1, 3)])


# -- packages -------------------------------------------------------------------------------------------------

def fake_npm(folder: Path, payload: dict[str, bytes]) -> Path:
    """A stand-in ``npm`` that packs ``payload`` as npm does (members under package/)."""
    tgz = folder / "payload.tgz"
    with tarfile.open(tgz, "w:gz") as tar:
        for name, data in payload.items():
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    script = folder / "npm"
    script.write_text(f'#!/bin/sh\n# npm pack NAME --silent --pack-destination DIR\nmkdir -p "$5"\n'
                      f'cp {tgz} "$5/pkg.tgz"\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return tgz


def test_fetch_checks_the_pinned_hash_and_reads_members(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tgz = fake_npm(bin_dir, {"chars.json": b'{"1f34e": "red-apple"}'})
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    digest = hashlib.sha256(tgz.read_bytes()).hexdigest()
    good = Package("npm", "@x/set", "1.0.0", digest, "MIT", "credit")
    cache = tmp_path / "cache"
    path = fetch(good, cache)
    assert path == cache / "x-set-1.0.0.tgz" and path.read_bytes() == tgz.read_bytes()
    assert json.loads(Archive(good, cache).read("chars.json")) == {"1f34e": "red-apple"}
    with pytest.raises(DataError, match="has no file icons.json"):
        Archive(good, cache).read("icons.json")
    bad = Package("npm", "@x/other", "1.0.0", "0" * 64, "MIT", "credit")
    with pytest.raises(DataError, match="not the pinned"):
        fetch(bad, cache)


def test_fetch_without_npm_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no npm here
    with pytest.raises(DataError, match="needs npm.*apt-get install npm"):
        fetch(Package("npm", "emojibase-data", "1.0.0", "0" * 64, "MIT", ""), tmp_path / "cache")


def test_debian_package_members_are_read_without_dpkg(tmp_path):
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:xz") as tar:
        info = tarfile.TarInfo("./usr/share/fonts/a.ttf")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"font"))
    body = data.getvalue()
    members = [(b"debian-binary", b"2.0\n"), (b"control.tar.xz", b""), (b"data.tar.xz", body)]
    raw = b"!<arch>\n" + b"".join(name.ljust(16) + b"0".ljust(12) + b"0".ljust(6) + b"0".ljust(6) + b"100644".ljust(8)
                                  + str(len(m)).encode().ljust(10) + b"`\n" + m + (b"\n" if len(m) % 2 else b"")
                                  for name, m in members)
    pkg = Package("debian", "fonts-x", "1.0", hashlib.sha256(raw).hexdigest(), "OFL-1.1", "")
    (tmp_path / pkg.file_name).write_bytes(raw)
    assert Archive(pkg, tmp_path).read("usr/share/fonts/a.ttf") == b"font"


# -- emoji ------------------------------------------------------------------------------------------------------

def test_emoji_keys_agree_across_packages():
    assert emoji_key("1F636-200D-1F32B-FE0F") == emoji_key("1f636-200d-1f32b") == "1f636-200d-1f32b"
    assert emoji_key("0023-fe0f-20e3") == "23-20e3"


def test_iconify_svg_follows_aliases_and_flips_and_rasterizes_at_the_width():
    data = {"width": 32, "height": 32, "icons": {"left-half": {"body": '<rect width="16" height="32" fill="#f00"/>'}},
            "aliases": {"right-half": {"parent": "left-half", "hFlip": True}}}
    left = np.asarray(rasterize_svg(iconify_svg(data, "left-half"), 64))
    right = np.asarray(rasterize_svg(iconify_svg(data, "right-half"), 64))
    assert left.shape == right.shape == (64, 64, 4)
    assert left[32, 10].tolist() == [255, 0, 0, 255] and left[32, 54, 3] == 0
    assert right[32, 54].tolist() == [255, 0, 0, 255] and right[32, 10, 3] == 0
    assert iconify_svg(data, "missing") is None
    with pytest.raises(DataError, match="could not be rasterized"):
        rasterize_svg("<svg", 64)


def test_pad_square_centres_the_content_on_white():
    image = np.asarray(pad_square(red_ball(), 128, 112))
    assert image.shape == (128, 128, 3)
    assert (image[:8] == 255).all() and (image[:, :8] == 255).all()
    assert image[64, 64].tolist() == [220, 30, 30]


# -- renderers --------------------------------------------------------------------------------------------------

def test_product_shot_is_an_object_on_white_with_a_shadow_below():
    a = arr(renderers.product_shot(red_ball(), 128, seed=3))
    assert (border(a, 12) > 248).all(), "a white border on every side"
    assert a[56, 64].tolist() == [220, 30, 30], "the product in the middle"
    below = a[100:112, 40:88].mean(axis=2)
    assert 150 < below.min() < 245, "a soft grey shadow under the product"


def test_scene_fills_the_frame_with_sky_and_ground():
    day = arr(renderers.scene(red_ball(), "高山", 128, seed=1))
    night = arr(renderers.scene(red_ball(), "夜晚的城市", 128, seed=1))
    assert (day.min(axis=2) > 240).mean() < 0.02, "no white background"
    assert day[2, 64, 2] > day[2, 64, 0] + 60, "a blue day sky at the top"
    assert night[2:20].mean() < 60, "a dark night sky"
    assert renderers.scene_kind("太阳") == ("day", "grass", True)
    assert renderers.scene_kind("海上日落")[:2] == ("sunset", "water")


def test_ink_wash_is_grey_ink_on_paper_with_a_red_seal():
    a = arr(renderers.ink_wash(red_ball(), 128, seed=2, font_path=_font()))
    r, g, b = a[..., 0], a[..., 1], a[..., 2]
    seal = (r > 130) & (g < 90) & (b < 90)
    assert 50 < seal.sum() < 600, "one small red seal"
    grey = ~seal
    assert np.abs(r - b)[grey].mean() < 25, "ink tones and paper, no colour"
    assert a[64, 64].mean() < a[3, 3].mean() - 60, "the red subject becomes dense ink on light paper"
    assert a[3, 3, 0] > a[3, 3, 2], "warm rice paper"


def _font() -> str | None:
    return next((f for f in CJK_FONTS if Path(f).exists()), None)


def test_calligraphy_writes_the_character_large_in_ink():
    font = _font()
    if not font:
        pytest.skip("no CJK font (apt-get install fonts-wqy-microhei, which .ci/run installs)")
    one = arr(renderers.calligraphy("永", font, 128, seed=0))
    other = arr(renderers.calligraphy("福", font, 128, seed=0))
    ink = one.mean(axis=2) < 100
    assert 0.05 < ink[16:112, 16:112].mean() < 0.6, "strokes cover the middle"
    assert not ink[:4].any(), "paper at the top edge"
    assert np.abs(one - other).mean() > 5, "different characters, different pictures"


def test_photo_crops_are_squares_of_the_photo():
    photo = Image.new("RGB", (300, 200))
    photo.paste((0, 0, 255), (0, 0, 150, 200))
    photo.paste((0, 255, 0), (150, 0, 300, 200))
    crops = renderers.photo_crops(photo, 6, 64, seed=0)
    assert len(crops) == 6 and all(c.size == (64, 64) for c in crops)
    same = renderers.photo_crops(photo, 6, 64, seed=0)
    other = renderers.photo_crops(photo, 6, 64, seed=1)
    assert [c.tobytes() for c in crops] == [c.tobytes() for c in same]
    assert [c.tobytes() for c in crops] != [c.tobytes() for c in other]
    colours = {tuple(np.asarray(c).reshape(-1, 3).mean(0).round()) for c in crops}
    assert len(colours) > 1, "crops from different places"


# -- captions ---------------------------------------------------------------------------------------------------

CAT = Subject("1f408", "猫", ("宠物", "猫咪"), "animal-mammal")
TULIP = Subject("1f337", "郁金香", ("花",), "plant-flower")
TEA = Subject("1f375", "热茶", ("茶",), "drink")


def test_measure_words_fit_the_subject():
    assert [measure_word(s) for s in (CAT, TULIP, TEA)] == ["一只", "一朵", "一杯"]
    assert measure_word(Subject("1f45f", "跑鞋", (), "clothing")) == "一双"


def test_emoji_captions_mix_style_words_plain_names_and_keywords():
    parts = CaptionParts("猫", "一只", ("猫咪",), "3D风格")
    seen = set()
    for seed in range(40):
        captions = emoji_captions(parts, 4, f"s{seed}")
        assert len(captions) == len(set(captions)) == 4
        assert any("3D风格" in c for c in captions) and any("3D风格" not in c for c in captions)
        assert all("猫" in c for c in captions)
        seen.update(captions)
    assert {"猫", "一只猫", "猫咪", "3D风格的猫"} <= seen


def test_domain_captions_carry_the_domain_word():
    for domain, word in (("product", "商品图"), ("ink", "水墨"), ("scenery", "风景")):
        captions = domain_captions(domain, CaptionParts("热茶", "一杯"), 4, "x")
        assert len(captions) >= 3 and sum(word in c or "国画" in c or "产品" in c for c in captions) >= 3


def test_paraphrases_are_worded_as_no_training_caption_is():
    parts = CaptionParts("猫", "一只", ("猫咪",), "3D风格")
    training = {c for seed in range(200) for c in emoji_captions(parts, 4, str(seed)) + [everyday_caption(parts, str(seed))]}
    prompts = {paraphrase(parts, str(seed)) for seed in range(200)}
    assert len(prompts) == len(PARAPHRASES) and not prompts & training


def test_everyday_captions_put_words_around_the_subject_that_no_paraphrase_uses():
    parts = CaptionParts("猫", "一只", ("猫咪",), "3D风格")
    everyday = {everyday_caption(parts, f"s{seed}") for seed in range(200)}
    assert len(everyday) == len(EVERYDAY) and all("猫" in c and c != "猫" and "3D" not in c for c in everyday)
    fragments = {f.strip("，：的") for t in PARAPHRASES for f in re.split(r"\{\w+\}", t)} - {""}
    assert fragments >= {"画", "请画一张", "我想要", "帮我画", "插画"}
    assert not [(c, f) for c in everyday for f in fragments if f in c]
    assert everyday_caption(parts, "x", DOMAIN_WORDS["ink"][1][0]).endswith("，水墨画")
    assert everyday_caption(parts, "x") == everyday_caption(parts, "x"), "the same caption for a picture each build"


def test_reword_words_share_no_distinctive_character_with_the_paraphrases():
    """The words training wraps captions in (painter train --reword) stay clear of the paraphrase measure: none
    of the characters that mark a paraphrase template, and never a whole template's fixed text."""
    fixed = "".join(f for t in PARAPHRASES for f in re.split(r"\{\w+\}", t))
    distinctive = set(fixed) - set("一的，：图")  # these are in training captions too (一只, 白底商品图)
    assert distinctive == set("请画插来帮我想要张")
    words = REWORD_PREFIXES + REWORD_SUFFIXES
    assert len(set(words)) == len(words) >= 40
    assert not [w for w in words if set(w) & distinctive]


def test_specific_keywords_leave_out_shared_and_name_clashing_ones():
    subjects = {s.key: s for s in (CAT, Subject("1f431", "猫脸", ("猫", "宠物", "猫咪"), "cat-face"),
                                   Subject("1f415", "狗", ("宠物",), "animal-mammal"),
                                   Subject("1f429", "贵宾犬", ("宠物",), "animal-mammal"),
                                   Subject("1f43e", "爪印", ("宠物",), "animal-mammal"))}
    keywords = specific_keywords(subjects, most=3)
    assert keywords["1f408"] == ("猫咪",), "宠物 names four subjects"
    assert "猫" not in keywords["1f431"], "猫 is another subject's name"


# -- split and files --------------------------------------------------------------------------------------------

def test_held_out_pairs_keep_every_subject_and_style_in_training():
    pairs = [(f"s{i}", st) for i in range(300) for st in ("a", "b", "c", "d")] + [("lonely", "a")]
    held = held_out_pairs(pairs, 0.1)
    assert 60 < len(held) < 180
    assert ("lonely", "a") not in held, "a subject with one style is never held out"
    for subject in {s for s, _ in pairs}:
        assert any((subject, st) not in held for s, st in pairs if s == subject)
    assert held == held_out_pairs(list(reversed(pairs)), 0.1), "the same pairs whatever the order"


def test_written_data_set_never_leaks_held_out_pictures(tmp_path):
    colours = {(s, st): (40 * s, 60 * ["a", "b", "c"].index(st), 90) for s in range(6) for st in "abc"}
    pics = [Picture(f"{st}/{s}", str(s), st, lambda c=c: Image.new("RGB", (16, 16), c),
                    lambda s=s, st=st: [f"物{s}", f"{st}风格的物{s}", f"一个物{s}"],
                    paraphrase=f"画c风格的物{s}" if st == "c" else f"画物{s}", paraphrase_names_style=st == "c")
            for (s, st), c in colours.items()]
    held = {("1", "b"), ("4", "c")}
    for p in pics:
        p.split = "heldout" if (p.subject, p.style) in held else "train"
    summary = write_dataset(pics, tmp_path)
    assert summary["heldout_pictures"] == 2 and summary["train_rows"] == 16 * 3

    def images(name):
        return {cols[2] for cols in (line.split("\t") for line in (tmp_path / name).read_text().splitlines())}

    assert images("heldout.tsv") and not images("heldout.tsv") & images("train.tsv")
    assert not images("paraphrase.tsv") - images("train.tsv")
    # a paraphrase without a style word has a row for each trained picture of its subject, one with a style word one
    rows: dict[str, set[str]] = {}
    for line in (tmp_path / "paraphrase.tsv").read_text().splitlines():
        idx, text, _ = line.split("\t")
        rows.setdefault(text, set()).add(idx)
    trained = {p.id for p in pics if p.split == "train"}
    assert len(rows) == summary["paraphrase_prompts"] == 6 + 5 and summary["paraphrase_rows"] == 16 + 5
    for s in range(6):
        assert rows[f"画物{s}"] == {f"{st}/{s}/p" for st in "abc" if f"{st}/{s}" in trained}
        assert rows.get(f"画c风格的物{s}") == ({f"c/{s}/p"} if s != 4 else None)
    assert rows["画物1"] == {"a/1/p", "c/1/p"}
    assert images("valid.tsv") <= images("heldout.tsv")
    manifest = (tmp_path / "manifest.tsv").read_text().splitlines()
    assert len(manifest) == 19 and manifest[0].startswith("id\t")
    first = manifest[1].split("\t")
    png = base64.b64decode(next(line for line in (tmp_path / "train.tsv").read_text().splitlines()
                                if line.startswith("a/0/0")).split("\t")[2])
    assert first[:4] == ["a/0", "0", "a", "train"] and first[4] == hashlib.sha256(png).hexdigest()


def test_manifest_check_tells_pixels_from_content(tmp_path):
    head = "id\tsubject\tstyle\tsplit\tpng_sha256\tcaptions\n"
    (tmp_path / "a.tsv").write_text(head + "x/1\t1\tx\ttrain\taaaa\t猫|一只猫\n")
    (tmp_path / "b.tsv").write_text(head + "x/1\t1\tx\ttrain\tbbbb\t猫|一只猫\n")
    (tmp_path / "c.tsv").write_text(head + "x/1\t1\tx\theldout\taaaa\t猫|一只猫\n")
    (tmp_path / "d.tsv").write_text(head + "x/2\t1\tx\ttrain\taaaa\t猫|一只猫\n")
    assert compare(tmp_path / "a.tsv", tmp_path / "a.tsv") == 0
    assert compare(tmp_path / "a.tsv", tmp_path / "b.tsv") == 1
    with pytest.raises(DataError, match="other subjects, styles, splits or captions"):
        compare(tmp_path / "a.tsv", tmp_path / "c.tsv")
    with pytest.raises(DataError, match="1 missing"):
        compare(tmp_path / "a.tsv", tmp_path / "d.tsv")


def test_atomic_files_get_the_umasks_mode_not_0600(tmp_path):
    from painter.data.files import atomic_output

    old = os.umask(0o022)
    try:
        with atomic_output(tmp_path / "new.txt") as tmp:
            tmp.write_text("x")
        assert stat.S_IMODE((tmp_path / "new.txt").stat().st_mode) == 0o644
        (tmp_path / "kept.txt").write_text("old")
        (tmp_path / "kept.txt").chmod(0o640)
        with atomic_output(tmp_path / "kept.txt") as tmp:
            tmp.write_text("new")
        assert stat.S_IMODE((tmp_path / "kept.txt").stat().st_mode) == 0o640
    finally:
        os.umask(old)


def test_domain_measures_tell_the_renderers_domains_apart():
    """The numbers the preset table reports, on the pictures the bundled models learn each domain from."""
    from painter.evaluation import domain_measures

    product = domain_measures(renderers.product_shot(red_ball(), 128, seed=1))
    scene = domain_measures(renderers.scene(red_ball(), "高山", 128, seed=1))
    ink = domain_measures(renderers.ink_wash(red_ball(), 128, seed=1, font_path=_font()))
    plain = domain_measures(pad_square(red_ball(), 128, 112))
    assert product["white_border"] > 0.95 and scene["white_border"] < 0.05
    assert scene["fills_frame"] > 0.95 and product["fills_frame"] < 0.5
    assert ink["ink_tones"] > 0.95 and scene["ink_tones"] < 0.9 and plain["ink_tones"] < ink["ink_tones"]
    assert plain["colour"] > 0.9 and product["colour"] > 0.5 and ink["colour"] < 0.2  # a red ball; in ink, grey


# -- the committed compact data set ---------------------------------------------------------------------------

def test_the_compact_data_set_matches_the_recipes_arithmetic():
    """The manifest the shipped models learnt from: every emoji subject once, a second style for about half,
    the three preset domains at their sizes, and as many training pictures as the recipe's sizing assumes."""

    from painter.data.manifest import read_manifest
    from painter.ui.styles import apply_template, load_styles
    from conftest import ROOT

    rows = read_manifest(ROOT / "recipes" / "bundled" / "manifest.tsv")  # id -> subject, style, split, sha, captions
    train = [r for r in rows.values() if r[2] == "train"]
    recipe = (ROOT / "recipes" / "bundled-models.sh").read_text(encoding="utf-8")
    assumed = int(re.search(r"the compact set trains on ([\d,]+) pictures", recipe).group(1).replace(",", ""))
    assert abs(len(train) - assumed) <= 0.02 * assumed, (len(train), assumed)
    assert 3000 <= len(rows) <= 4000

    def subjects(style_test) -> set[str]:
        return {r[0] for r in rows.values() if style_test(r[1])}

    emoji = [r for r in rows.values() if r[1] not in ("product", "scenery", "ink", "photo", "calligraphy")]
    per_subject = {}
    for r in emoji:
        per_subject[r[0]] = per_subject.get(r[0], 0) + 1
    assert len(per_subject) >= 1500, "breadth: every emoji subject with a Chinese name"
    assert 0.35 <= sum(n == 2 for n in per_subject.values()) / len(per_subject) <= 0.65, "a second style for ~half"
    assert max(per_subject.values()) == 2
    count = {d: sum(r[1] == d for r in rows.values()) for d in ("product", "scenery", "ink", "photo")}
    assert count["product"] >= 400 and len(subjects(lambda s: s == "product")) >= 150
    assert count["scenery"] + count["photo"] >= 350 and count["photo"] > 0
    assert count["ink"] >= 300 and len(subjects(lambda s: s == "ink")) >= 120

    # one caption of every emoji, product, scene and ink picture puts everyday words around its subject
    pieces = [[f.strip("，") for f in re.split(r"\{\w+\}", t) if f.strip("，")] for t in EVERYDAY]
    for r in train:
        if r[1] not in ("photo", "calligraphy"):
            assert any(all(f in r[4].split("|")[-1] for f in fs) for fs in pieces), r

    # every example a preset's fallback lists is a trained caption of that domain, in the template's words
    styles = {s.id: s for s in load_styles(ROOT / "styles")}
    trained = {(r[1], c) for r in train for c in r[4].split("|")}
    for preset, domain in (("ecommerce", "product"), ("scenery", "scenery"), ("painting", "ink")):
        fallback = styles[preset].fallback
        for example in fallback.examples:
            assert (domain, apply_template(fallback.template, example)) in trained, (preset, example)
