"""``painter predict``: a TSV of prompts in, a TSV of base64 PNGs out, resumable after any interruption.

The output is always a prefix of the full answer (input order, ``num_images`` rows per prompt, image j with
seed + j). Re-running finds how much of that prefix is already there, repairs a torn last line, and paints
only the rest. Since every image depends only on its prompt and seed, resuming changes no pixel.
"""

from __future__ import annotations

import errno
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from tqdm import tqdm

from painter.data.files import atomic_output
from painter.data.images import png_base64
from painter.data.tsv import PromptRow, RejectedRow, read_prompt_rows, tsv_line
from painter.errors import DataError, PainterError, SamplingError
from painter.sampling import image_seeds, resolve_seed
from painter.serving.pipeline import Painter
from painter.text import TokenizedPrompt

log = logging.getLogger(__name__)


@dataclass
class PredictReport:
    written: int  # image rows written by this run
    skipped: int  # image rows already present from an earlier run
    rejected: list[RejectedRow]

    @property
    def ok(self) -> bool:
        return not self.rejected


def rejects_path(output: Path) -> Path:
    return output.with_name(output.name + ".rejected")


def existing_rows(output: Path) -> list[tuple[str, str]]:
    """(idx, text) of the complete rows already in ``output``; a torn last line is cut off the file."""
    if not output.exists():
        return []
    data = output.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        log.warning("%s ends in a partly written line (from an interrupted run); removing it", output)
        with open(output, "rb+") as fh:
            fh.truncate(end)
    rows = []
    for number, raw in enumerate(data[:end].splitlines(), start=1):
        cols = raw.decode("utf-8", "replace").split("\t")
        if len(cols) != 3:
            raise DataError(f"{output} line {number} is not an idx<TAB>text<TAB>image row; "
                            "move the file away to start over")
        rows.append((cols[0], cols[1]))
    return rows


def plan(rows: Sequence[tuple[PromptRow, TokenizedPrompt]], num_images: int, done: list[tuple[str, str]],
         output: Path) -> list[tuple[PromptRow, TokenizedPrompt, int]]:
    """The (row, tokens, image index) still to paint, after checking ``done`` matches this input."""
    todo = [(row, tokens, j) for row, tokens in rows for j in range(num_images)]
    if len(done) > len(todo):
        raise DataError(f"{output} already holds {len(done)} rows, more than this input gives ({len(todo)}); "
                        "it belongs to another job: choose another output file")
    for number, ((idx, text), (row, _, _)) in enumerate(zip(done, todo), start=1):
        if (idx, text) != (row.idx, row.text):
            raise DataError(f"{output} line {number} is for {idx!r} {text!r} but this input has {row.idx!r} "
                            f"{row.text!r} there; it belongs to another job: choose another output file")
    return todo[len(done):]


def write_rejects(output: Path, rejected: list[RejectedRow]) -> None:
    path = rejects_path(output)
    if not rejected:
        path.unlink(missing_ok=True)
        return
    with atomic_output(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            for r in rejected:
                fh.write(f"{r.line}\t{r.reason}\t{r.raw.replace(chr(9), ' ')}\n")


def check_writable(output: Path) -> None:
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        with open(output, "ab"):
            pass
    except OSError as exc:
        raise DataError(f"cannot write output {output}: {exc.strerror or exc}") from exc


def predict(painter: Painter, input_path: str | Path, output_path: str | Path, seed: int = 0, num_images: int = 1,
            top_k: int | None = None, top_p: float | None = None, temperature: float | None = None,
            guidance_scale: float | None = None, batch_size: int = 8, progress: bool = True) -> PredictReport:
    output = Path(output_path)
    if batch_size < 1:
        raise SamplingError(f"--batch-size must be at least 1, got {batch_size}")
    if seed == -1:
        seed = resolve_seed(seed)
        log.warning("--seed -1 picked seed %d; pass --seed %d to resume this job with the same images", seed, seed)
    image_seeds(resolve_seed(seed), num_images)
    sampling = painter.sampling(top_k, top_p, temperature, guidance_scale)
    check_writable(output)

    good: list[tuple[PromptRow, TokenizedPrompt]] = []
    rejected: list[RejectedRow] = []
    for row in read_prompt_rows(input_path):
        if isinstance(row, RejectedRow):
            rejected.append(row)
            continue
        try:
            good.append((row, painter.tokenize(row.text)))
        except PainterError as exc:
            rejected.append(RejectedRow(row.line, str(exc), f"{row.idx}\t{row.text}"))
    for r in rejected:
        log.warning("%s line %d rejected: %s", input_path, r.line, r.reason)
    write_rejects(output, rejected)

    done = existing_rows(output)
    todo = plan(good, num_images, done, output)
    if done:
        log.info("resuming: %d image row(s) already in %s, %d to go", len(done), output, len(todo))
    bar = tqdm(total=len(todo) + len(done), initial=len(done), unit="img", disable=not progress, desc="painting")
    written = 0
    try:
        with open(output, "a", encoding="utf-8") as fh:
            for start in range(0, len(todo), batch_size):
                chunk = todo[start:start + batch_size]
                images = painter.paint([(tokens, seed + j) for _, tokens, j in chunk], sampling)
                fh.write("".join(tsv_line(row.idx, row.text, png_base64(im)) for (row, _, _), im in zip(chunk, images)))
                fh.flush()
                os.fsync(fh.fileno())
                written += len(chunk)
                bar.update(len(chunk))
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise DataError(f"the disk is full while writing {output}; {len(done) + written} complete rows are "
                            "kept: free some space and run the same command again to resume") from exc
        raise
    finally:
        bar.close()
    return PredictReport(written=written, skipped=len(done), rejected=rejected)
