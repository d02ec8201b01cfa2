"""Chinese captions for the bundled data set, several per picture, as people phrase prompts.

A caption mixes the subject (its CLDR name, or one of its specific CLDR keywords), a measure word that fits
it (一只猫, 一朵花, 一杯茶), light templates (…的图片) and the style or domain word (3D风格, 白底商品图, 水墨画, …).
Captions without a style word teach the model to pick a style itself, which gives different pictures for
different seeds. The paraphrase templates are used only for evaluation: none of them appears in training.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from painter.data.emoji_styles import Subject

MEASURES = (  # (subgroup prefix or name fragment, measure word); the first match wins
    ("鱼", "一条"), ("蛇", "一条"), ("树", "一棵"), ("鞋", "一双"), ("靴", "一双"), ("袜", "一双"), ("手套", "一副"),
    ("animal-", "一只"), ("plant-flower", "一朵"), ("plant-other", "一株"), ("drink", "一杯"),
    ("transport-ground", "一辆"), ("transport-water", "一艘"), ("transport-air", "一架"), ("clothing", "一件"),
    ("person", "一个"), ("place-", "一座"), ("face-", "一张"),
)
STYLE_TEMPLATES = ("{style}的{name}", "{name}，{style}", "{measure}{style}的{name}")
PLAIN_TEMPLATES = ("{name}", "{measure}{name}", "{name}的图片", "{keyword}")
DOMAIN_WORDS = {
    "product": ("白底商品图", ("{name}，白底商品图", "白底商品图：{measure}{name}", "{name}的商品图", "电商产品图，{name}")),
    "scenery": ("风景", ("{name}的风景", "风景：{name}", "有{name}的风景画", "美丽的{name}风景")),
    "ink": ("水墨画", ("{name}，水墨画", "水墨{name}", "国画：{measure}{name}", "{measure}{name}的水墨画")),
    "calligraphy": ("书法", ("{name}字书法", "书法：{name}", "毛笔字「{name}」", "{name}，书法作品")),
    "photo": ("风景", ("{name}", "风景照片：{name}", "{name}，风景")),
}
EVERYDAY_DOMAINS = ("product", "scenery", "ink")  # their first template begins with the subject
# Everyday words around the subject, one caption a picture (emoji, product shots, scenes, ink paintings), so that
# the model learns to find its subject among words it was not taught to draw, as in people's prompts (好看的猫,
# 关于熊猫的作品). None of them uses a paraphrase template's words (画, 请, 想要, 来一张, 插图, 插画, 帮).
EVERYDAY = ("生成{measure}{name}", "好看的{name}", "精美的{name}", "高清{name}", "{name}，高清", "{name}的样子",
            "简单的{name}", "关于{name}的作品", "{name}主题", "{name}素材", "一幅{name}")
# Words a trainer wraps captions in (`painter train --reword`: a prefix, a suffix or both, drawn at each step),
# so that a model learns that a prompt's first characters need not be its subject: bundled-large, trained on
# captions that begin with the subject, painted 我想要一只猫 right 2% of the time and 画一只猫 83%. None of them
# uses a paraphrase template's distinctive characters (请画插来帮我想要张), so that the paraphrase measure
# stays unseen.
REWORD_PREFIXES = ("生成", "生成一幅", "一幅", "一件", "做一个", "设计一个", "绘制", "创作", "展示", "给出", "这是",
                   "看看", "可爱的", "漂亮的", "简约的", "彩色的", "小小的", "有一个", "描绘", "呈现", "主题：",
                   "图片：", "作品：", "内容：", "关于", "需一个", "做一份", "今天的", "精致的", "新的")
REWORD_SUFFIXES = ("的图片", "的照片", "，高清", "，精美", "的作品", "的样子", "，彩色", "，简单", "的模样", "，细节丰富",
                   "，可爱", "，好看", "素材", "主题", "的图像", "。", "！", "的图案", "的形象", "，谢谢", "，尽量清楚",
                   "吧", "，干净", "就好")
PARAPHRASES = ("画{measure}{name}", "请画一张{name}", "我想要{measure}{name}", "来一张{name}的插图",
               "帮我画{name}，{style}", "{style}插画：{name}")


def measure_word(subject: Subject) -> str:
    for fragment, word in MEASURES:
        if fragment in subject.name or subject.subgroup.startswith(fragment):
            return word
    return "一个"


def specific_keywords(subjects: dict[str, Subject], most: int = 3) -> dict[str, tuple[str, ...]]:
    """Each subject's keywords that name at most ``most`` subjects (苹果, not 食物), so that a keyword is a
    fair prompt for the subject; a keyword equal to another subject's name is left to that subject."""
    counts: dict[str, int] = {}
    for s in subjects.values():
        for k in set(s.keywords):
            counts[k] = counts.get(k, 0) + 1
    names = {s.name for s in subjects.values()}
    return {key: tuple(k for k in s.keywords if counts[k] <= most and k not in names and len(k) >= 1)
            for key, s in subjects.items()}


@dataclass(frozen=True)
class CaptionParts:
    name: str
    measure: str = "一个"
    keywords: tuple[str, ...] = ()
    style: str = ""  # the emoji style word, or "" for a domain picture


def _fill(template: str, parts: CaptionParts, rng: random.Random) -> str:
    keyword = rng.choice(parts.keywords) if parts.keywords else parts.name
    return template.format(name=parts.name, measure=parts.measure, style=parts.style, keyword=keyword)


def emoji_captions(parts: CaptionParts, count: int, seed: str) -> list[str]:
    """``count`` distinct captions for an emoji picture: at least one with its style word and one without."""
    rng = random.Random(seed)
    templates = [rng.choice(STYLE_TEMPLATES), rng.choice(PLAIN_TEMPLATES[:3])]
    pool = [t for t in STYLE_TEMPLATES + PLAIN_TEMPLATES if t not in templates]
    if not parts.keywords:
        pool.remove("{keyword}")
    templates += rng.sample(pool, min(len(pool), count - 2))
    return _distinct([_fill(t, parts, rng) for t in templates])[:count]


def domain_captions(domain: str, parts: CaptionParts, count: int, seed: str) -> list[str]:
    """``count`` captions for a product shot, scene, ink painting, calligraphy or photo; all but at most
    one carry the domain word, so the preset's template reaches the domain."""
    rng = random.Random(seed)
    templates = list(DOMAIN_WORDS[domain][1])
    rng.shuffle(templates)
    return _distinct([_fill(t, parts, rng) for t in templates])[:count]


def paraphrase(parts: CaptionParts, seed: str) -> str:
    """A prompt in words no training caption uses, for the paraphrase evaluation."""
    rng = random.Random(seed)
    return _fill(rng.choice(PARAPHRASES), parts, rng)


def everyday_caption(parts: CaptionParts, seed: str, template: str = "{name}") -> str:
    """The subject in everyday words (``EVERYDAY``) inside ``template`` (a domain's, such as "{name}，水墨画"):
    drawn from its own random stream, so a picture's other captions stay what they were."""
    rng = random.Random(f"everyday|{seed}")
    return template.format(name=_fill(rng.choice(EVERYDAY), parts, rng))


def _distinct(captions: list[str]) -> list[str]:
    seen: dict[str, None] = {}
    for c in captions:
        seen.setdefault(c.strip("，"), None)
    return list(seen)
