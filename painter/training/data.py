"""Training examples from the reference's TSV (``idx<TAB>text<TAB>imgbase64``): every bad row is skipped,
counted and listed with its file and line; identical images are decoded and encoded once."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch

from painter.data.files import atomic_output
from painter.data.images import ImageDecodeError, decode_base64_image, to_model_input
from painter.data.tsv import RejectedRow, tsv_rows
from painter.errors import DataError

log = logging.getLogger(__name__)


@dataclass
class Examples:
    texts: list[str]
    ids: list[str]  # each row's idx (the bundled data set's are STYLE/SUBJECT/N)
    lines: list[int]  # line number of each text in its file
    image_of_row: list[int]  # index into ``images`` for each text
    images: torch.Tensor  # [N_unique, 3, R, R] in [-1, 1]
    image_hashes: list[str]
    rejects: list[tuple[str, int, str]] = field(default_factory=list)  # (file, line, reason)


def picture_rows(path: str | Path) -> Iterator[tuple[int, str, str, str] | RejectedRow]:
    """(line number, idx, caption, base64 picture) of every row with a caption, else a RejectedRow. The
    pictures are not decoded here, so that a sample of a large file decodes only what it keeps."""
    for row in tsv_rows(path, (3,), "idx<TAB>text<TAB>imgbase64"):
        if isinstance(row, RejectedRow):
            yield row
            continue
        number, cols = row
        text = cols[1].strip()
        if text:
            yield number, cols[0], text, cols[2].strip()
        else:
            yield RejectedRow(number, "empty text", "\t".join(cols))


def read_examples(path: str | Path, resolution: int) -> Examples:
    path = Path(path)
    texts, ids, lines, image_of_row, tensors, hashes, rejects = [], [], [], [], [], [], []
    index_of: dict[str, int] = {}
    for row in picture_rows(path):
        if isinstance(row, RejectedRow):
            rejects.append((str(path), row.line, row.reason))
            continue
        number, idx, text, b64 = row
        key = hashlib.sha1(b64.encode()).hexdigest()
        if key not in index_of:
            try:
                tensors.append(to_model_input(decode_base64_image(b64), resolution))
            except ImageDecodeError as exc:
                rejects.append((str(path), number, str(exc)))
                continue
            index_of[key] = len(hashes)
            hashes.append(key)
        texts.append(text)
        ids.append(idx)
        lines.append(number)
        image_of_row.append(index_of[key])
    for file, line, reason in rejects[:20]:
        log.warning("%s line %d skipped: %s", file, line, reason)
    if len(rejects) > 20:
        log.warning("... and %d more rows skipped", len(rejects) - 20)
    if not texts:
        raise DataError(f"{path} has no valid rows (idx<TAB>text<TAB>imgbase64); {len(rejects)} rejected")
    return Examples(texts, ids, lines, image_of_row, torch.stack(tensors), hashes, rejects)


def write_rejects(output: Path, rejects: list[tuple[str, int, str]]) -> None:
    """List skipped rows (once each, even when a file is read twice, e.g. as train and valid)."""
    rejects = sorted(set(rejects), key=lambda r: (r[0], r[1]))
    path = output / "rejects.tsv"
    if not rejects:
        path.unlink(missing_ok=True)
        return
    with atomic_output(path) as tmp:
        tmp.write_text("".join(f"{f}\t{line}\t{reason}\n" for f, line, reason in rejects), encoding="utf-8")
    log.warning("%d row(s) skipped; listed in %s", len(rejects), path)
