"""Checking a rebuilt data set against the committed manifest of the one the shipped models learned from.

Ids, subjects, styles, splits and captions must match exactly: they come from pinned packages and this
code. PNG bytes may differ by a few grey levels under another Pillow or resvg version, so a differing
picture hash is reported (with the count) but does not stop the recipe.

``python -m painter.data.manifest check COMMITTED REBUILT``

``python -m painter.data.manifest words MANIFEST`` prints ``--domain-word=W`` for each domain and style word
the data set's captions teach (白底商品图, 风景, 水墨画, 3D风格, …), for ``painter convert`` to record in the
trained model.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from painter.errors import DataError

log = logging.getLogger(__name__)


def read_manifest(path: Path) -> dict[str, list[str]]:
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DataError(f"cannot read manifest {path}: {exc.strerror or exc}") from exc
    header = lines[0].split("\t") if lines else []
    if header[:1] != ["id"]:
        raise DataError(f"{path} is not a data manifest (no 'id' header)")
    return {cols[0]: cols[1:] for cols in (line.split("\t") for line in lines[1:] if line)}


def compare(committed: Path, rebuilt: Path) -> int:
    """Raise DataError when the data sets differ in anything but PNG bytes; return how many PNGs differ."""
    old, new = read_manifest(committed), read_manifest(rebuilt)
    if old.keys() != new.keys():
        missing, extra = sorted(old.keys() - new.keys()), sorted(new.keys() - old.keys())
        raise DataError(f"{rebuilt} has other pictures than {committed}: {len(missing)} missing "
                        f"(e.g. {missing[:3]}), {len(extra)} extra (e.g. {extra[:3]})")
    changed = [k for k in old if old[k][:3] + old[k][4:] != new[k][:3] + new[k][4:]]
    if changed:
        raise DataError(f"{len(changed)} pictures have other subjects, styles, splits or captions than in "
                        f"{committed}, e.g. {changed[0]}: {old[changed[0]]} vs {new[changed[0]]}")
    pixels = sum(old[k][3] != new[k][3] for k in old)
    if pixels:
        log.warning("%d of %d pictures differ in their PNG bytes from %s (another Pillow or resvg version?)",
                    pixels, len(old), committed)
    return pixels


def domain_words(path: Path) -> list[str]:
    """The words a data set's captions teach for its domains and art styles (白底商品图, 风景, 水墨画, 3D风格, …):
    DOMAIN_WORDS' for the domains it holds, then the style words of its emoji styles."""
    from painter.data.captions import DOMAIN_WORDS
    from painter.data.sources import STYLES

    styles = {cols[1] for cols in read_manifest(path).values()}
    words = [word for domain, (word, _) in DOMAIN_WORDS.items() if domain in styles]
    return list(dict.fromkeys(words + [s.word for s in STYLES if s.id in styles]))


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if len(argv) == 2 and argv[0] == "words":
        print(*(f"--domain-word={w}" for w in domain_words(Path(argv[1]))))
        return 0
    if len(argv) != 3 or argv[0] != "check":
        print("usage: python -m painter.data.manifest check COMMITTED REBUILT | words MANIFEST", file=sys.stderr)
        return 2
    try:
        differ = compare(Path(argv[1]), Path(argv[2]))
    except DataError as exc:
        log.error("%s", exc)
        return 1
    log.info("data set matches %s (%d PNGs differ in bytes)", argv[1], differ)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
