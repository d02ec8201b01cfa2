"""What the bundled data set is made of: the pinned packages, the art styles they give and their licences.

Only sources whose licence allows training on them and redistributing the weights are listed: MIT,
Apache-2.0, CC-BY-4.0, CC0, OFL (nothing share-alike or non-commercial; OpenMoji and Tux Paint stay out).
"""

from __future__ import annotations

from dataclasses import dataclass

from painter.data.packages import Package


def _npm(name, version, sha256, licence, credit):
    return Package("npm", name, version, sha256, licence, credit)


FLUENT = "Fluent Emoji (c) Microsoft Corporation, MIT licence"
FLUENT_3D = _npm("@lobehub/fluent-emoji-3d", "1.1.0",
                 "c1bb7eee7de090205a232518a9ab4adb3df458bfbe8a1f78232991194c8b2e58", "MIT",
                 f"{FLUENT}; 3D renders packaged by LobeHub (@lobehub/fluent-emoji-3d, MIT)")


def _fluent_svg(suffix: str, version: str, sha256: str) -> Package:
    name = f"@iconify-json/fluent-emoji{suffix}"
    return _npm(name, version, sha256, "MIT", f"{FLUENT}; SVG packaged by Iconify ({name})")


FLUENT_COLOR = _fluent_svg("", "1.2.7", "8044210dbf11e016d4de85f15d01a243423bd832457e7e2491df1b751c0e272b")
FLUENT_FLAT = _fluent_svg("-flat", "1.2.6", "7d064769dee690815f823bc5bcc511d957198caf9f5edd8dd9c1aa48a6aeb175")
FLUENT_CONTRAST = _fluent_svg("-high-contrast", "1.2.6",
                              "0b92d48c90d2200bd499e3cdd09a127ca6a8c8ddefd34c35eb5a1e4994012ae0")
NOTO = _npm("@iconify-json/noto", "1.2.9", "3e918d88fc945c0bb3d468dbace6f88caef67f01c9f0e7bcae0915a042e8f1ad",
            "Apache-2.0", "Noto Emoji (c) Google LLC, Apache License 2.0; SVG packaged by Iconify (@iconify-json/noto)")
TWEMOJI = _npm("@iconify-json/twemoji", "1.2.5", "19046dff7d8707ce96212ec86468b36ac5f8e60409629dd13f809265c6d0ebb7",
               "CC-BY-4.0", "Twemoji (c) Twitter, Inc. and other contributors, CC-BY 4.0 "
               "(https://creativecommons.org/licenses/by/4.0/); SVG packaged by Iconify (@iconify-json/twemoji)")
EMOJIBASE = _npm("emojibase-data", "17.0.0", "d01d0e2ca4e22cb402679532155342c71e2e871f25c32223c013b8b166ebdf5a",
                 "MIT", "Chinese emoji names and keywords: Unicode CLDR annotations as packaged by emojibase-data "
                 "(MIT; CLDR data under the Unicode licence)")
WENKAI = Package("debian", "fonts-lxgw-wenkai", "1.250+repack-1",
                 "6d1e4c4aac78ad32062aefa2c836ee4d6e58f9dcf8b3f4407c9eefe304615318", "OFL-1.1",
                 "LXGW WenKai font (c) LXGW, SIL Open Font License 1.1, from Debian's fonts-lxgw-wenkai")
WALLPAPERS = Package("debian", "lomiri-wallpapers-16.04", "20.04.0-2",
                     "a99ff6a3bfe451e4cc0682ecb3cc82e71740626d59e4845ae34a0a0e45421eab", "CC-BY-4.0 / CC0-1.0",
                     "Photographs from Debian's lomiri-wallpapers-16.04 (credited one by one below)")


@dataclass(frozen=True)
class EmojiStyle:
    id: str
    word: str  # the style word in captions
    package: Package


STYLES = (
    EmojiStyle("fluent-3d", "3D风格", FLUENT_3D),
    EmojiStyle("fluent-color", "彩色风格", FLUENT_COLOR),
    EmojiStyle("fluent-flat", "扁平风格", FLUENT_FLAT),
    EmojiStyle("fluent-contrast", "黑白线条风格", FLUENT_CONTRAST),
    EmojiStyle("noto", "卡通风格", NOTO),
    EmojiStyle("twemoji", "简笔图标风格", TWEMOJI),
)
STYLE_BY_ID = {s.id: s for s in STYLES}


@dataclass(frozen=True)
class Photo:
    file: str  # path inside the wallpaper package
    licence: str
    credit: str
    captions: tuple[str, ...]  # written by hand from looking at the photograph


_BG = "usr/share/backgrounds/"
PHOTOS = (
    Photo(_BG + "sunset_by_Aitzol_Berasategi.jpg", "CC-BY-4.0", "Sunset, by Aitzol Berasategi (2018), CC-BY 4.0",
          ("山顶的日落", "夕阳照在山坡上", "太阳落山时的山野", "金色阳光下的高山草地")),
    Photo(_BG + "picosdeeuropa_by_Aitzol_Berasategi.jpg", "CC-BY-4.0",
          "Picos de Europa, by Aitzol Berasategi (2018), CC-BY 4.0",
          ("蓝天白云下的雪山", "草地上的小路通向群山", "高山牧场和岩石山峰", "山谷里的草原和雪山")),
    Photo(_BG + "life_by_Aitzol_Berasategi.jpg", "CC-BY-4.0", "Life, by Aitzol Berasategi (2018), CC-BY 4.0",
          ("森林里的小溪", "树林中流过岩石的溪水", "绿树环绕的山涧瀑布", "青苔石头间的溪流")),
    Photo(_BG + "aitzgorri_by_Aitzol_Berasategi.jpg", "CC-BY-4.0", "Aitzgorri, by Aitzol Berasategi (2018), CC-BY 4.0",
          ("秋天的山和草地", "远山与秋天的树林", "绿色草坡上的秋色", "山下金黄的树林")),
    Photo(_BG + "seeding_by_Clements_Engelhardt.jpg", "CC0-1.0", "Seeding, by Clemens Engelhardt (2018), CC0 1.0",
          ("夕阳下草地上的蒲公英", "草丛里的蒲公英", "傍晚阳光中的野草地", "开满蒲公英的草原")),
)
