"""Reading the reference's TSV files row by row, turning every bad row into a reason with its line number."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from painter.errors import DataError


@dataclass(frozen=True)
class PromptRow:
    line: int  # 1-based line number in the file
    idx: str
    text: str
    image: str = ""  # a repaint row's picture (base64), with the box of cells to repaint
    box: tuple[int, int, int, int] | None = None


@dataclass(frozen=True)
class RejectedRow:
    line: int
    reason: str
    raw: str  # the line as read (undecodable bytes replaced), for the rejects file


def tsv_rows(path: str | Path, columns: tuple[int, ...], layout: str) -> Iterator[tuple[int, list[str]] | RejectedRow]:
    """(line number, fields) of every non-blank line; a line that is not UTF-8 or has a column count
    outside ``columns`` comes back as a RejectedRow naming ``layout``."""
    path = Path(path)
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise DataError(f"cannot read input {path}: {exc.strerror or exc}") from exc
    with fh:
        for number, raw in enumerate(fh, start=1):
            raw = raw.rstrip(b"\r\n")
            if number == 1:
                raw = raw.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark (Windows editors) is no text
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield RejectedRow(number, f"not UTF-8 text (byte {exc.start})", raw.decode("utf-8", "replace"))
                continue
            cols = line.split("\t")
            if len(cols) not in columns:
                yield RejectedRow(number, f"expected {layout}, found {len(cols)} column(s)", line)
            else:
                yield number, cols


def read_prompt_rows(path: str | Path) -> Iterator[PromptRow | RejectedRow]:
    """Rows ``idx<TAB>text[<TAB>anything]`` (so a training TSV works too), or ``idx<TAB>text<TAB>imgbase64<TAB>
    x0,y0,x1,y1`` to repaint that box of the picture (in cells); blank lines are skipped."""
    for row in tsv_rows(path, (2, 3, 4), "idx<TAB>text (optionally <TAB>image, or <TAB>image<TAB>box to repaint)"):
        if isinstance(row, RejectedRow):
            yield row
            continue
        number, cols = row
        if not cols[1].strip():
            yield RejectedRow(number, "empty text", "\t".join(cols))
        elif "\r" in cols[0] or "\r" in cols[1]:  # a lone carriage return: no TSV line could hold the output row
            yield RejectedRow(number, "a carriage return inside the idx or text", "\t".join(cols).replace("\r", " "))
        elif len(cols) == 4:
            box = parse_box(cols[3])
            if box is None:
                yield RejectedRow(number, f"the box {cols[3][:40]!r} is not x0,y0,x1,y1 (whole numbers, in cells)",
                                  "\t".join(cols[:2] + ["…", cols[3][:40]]))
            else:
                yield PromptRow(number, cols[0], cols[1], cols[2], box)
        else:
            yield PromptRow(number, cols[0], cols[1])


def parse_box(text: str) -> tuple[int, int, int, int] | None:
    """"x0,y0,x1,y1" -> four whole numbers (a repaint's box, in cells), or None when it is not that."""
    try:
        box = tuple(int(v) for v in text.split(","))
    except ValueError:
        return None
    return box if len(box) == 4 else None


def split_lines(data: bytes) -> tuple[list[bytes], bytes]:
    """The complete lines of TSV bytes (each with its ``\n``) and the unterminated tail after the last one.

    The one line-counting rule for every TSV we read, resume, shard or merge: bytes, and ``\n`` only. Python's
    ``str.splitlines`` also breaks at ``\x0c``, ``\x1c``-``\x1e``, ``\x85``, U+2028 and U+2029, which are text
    inside a prompt; counting with it while resuming by ``\n`` once duplicated a row in a merge."""
    end = data.rfind(b"\n") + 1
    return [line + b"\n" for line in data[:end].split(b"\n")[:-1]], data[end:]


def tsv_line(*fields: str) -> str:
    for f in fields:
        if "\t" in f or "\n" in f or "\r" in f:
            raise DataError(f"field {f[:40]!r} contains a tab or line break and cannot be written to a TSV")
    return "\t".join(fields) + "\n"
