"""``painter predict``: a TSV of prompts in, a TSV of base64 PNGs out, resumable after any interruption, in one
process or sharded among several under torchrun (serving/shards.py).

The output is always a prefix of the full answer (input order, ``num_images`` rows per prompt, image j with
seed + j). Re-running finds how much of that prefix is already there, repairs a torn last line, and paints
only the rest. Since every image depends only on its prompt and seed, resuming changes no pixel.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO, Iterator

from tqdm import tqdm

from painter.data.files import atomic_output
from painter.data.images import ImageDecodeError, decode_base64_image, png_base64
from painter.data.tsv import PromptRow, RejectedRow, read_prompt_rows, split_lines, tsv_line
from painter.errors import DataError, PainterError, SamplingError
from painter.sampling import image_seeds, resolve_seed
from painter.serving.pipeline import Painter
from painter.serving.shards import Group, Shard
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


def job_path(output: Path) -> Path:
    return output.with_name(output.name + ".job.json")


def claim_job(output: Path, job: dict, done: int) -> None:
    """Keep the job's identity (model, seed, images per prompt, sampling, precision) beside its output, and
    refuse to resume an output another job began: its rows would end the file with two jobs' pictures."""
    path = job_path(output)
    if done:
        try:
            earlier = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            earlier = None  # written before outputs kept their job: nothing to compare
        except (OSError, ValueError) as exc:
            raise DataError(f"{path} (the job that began {output}) is unreadable: {exc}; pass --overwrite to "
                            "start over") from None
        if isinstance(earlier, dict):
            differ = [f"{k} {earlier.get(k)!r} (now {job[k]!r})" for k in job if earlier.get(k) != job[k]]
            if differ:
                raise DataError(f"{output} was begun by another job: " + ", ".join(differ) + "; run the same "
                                "command to resume it, choose another output file, or pass --overwrite to start over")
    try:
        with atomic_output(path) as tmp:
            tmp.write_text(json.dumps(job, ensure_ascii=False, indent=1), encoding="utf-8")
    except OSError as exc:
        raise DataError(f"cannot write {path} (the job beside the output): {exc.strerror or exc}") from None


PNG_BASE64 = b"iVBORw0KGgo"  # how the base64 of every PNG begins
BASE64_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")
Todo = list[tuple[PromptRow, TokenizedPrompt, int]]


def _row_start(row: PromptRow) -> bytes:
    return f"{row.idx}\t{row.text}\t".encode("utf-8")


def _is_ours(line: bytes, row: PromptRow) -> bool:
    """A complete output line for ``row``: its idx and text, then the base64 of a PNG."""
    start = _row_start(row)
    image = line[len(start):]
    return line.startswith(start) and image.startswith(PNG_BASE64) and set(image) <= BASE64_CHARS


def _is_torn(tail: bytes, row: PromptRow) -> bool:
    """The beginning of an output line for ``row``, cut off by an interruption."""
    start = _row_start(row)
    if len(tail) <= len(start):
        return start.startswith(tail)
    image = tail[len(start):]
    return tail.startswith(start) and set(image) <= BASE64_CHARS and PNG_BASE64.startswith(image[:len(PNG_BASE64)])


def resume_point(output: Path, todo: Todo) -> int:
    """How many rows of ``todo`` ``output`` already holds. Nothing is changed unless every line is proven to be
    this job's (idx and text in input order, then a PNG); only then is a torn last line cut off."""
    data = output.read_bytes() if output.exists() else b""
    lines, tail = split_lines(data)
    end = len(data) - len(tail)
    lines = [line[:-1] for line in lines]
    if len(lines) + bool(tail) > len(todo):
        raise DataError(f"{output} already holds {len(lines) + bool(tail)} lines, more than this input gives "
                        f"({len(todo)}); it is not this job's output: choose another output file")
    for number, (line, (row, _, _)) in enumerate(zip(lines, todo), start=1):
        if not _is_ours(line, row):
            shown = line[:60].decode("utf-8", "replace")
            raise DataError(f"{output} line {number} ({shown!r}) is not this job's row for {row.idx!r} {row.text!r}; "
                            "it is left as it is: choose another output file")
    if tail:
        if not _is_torn(tail, todo[len(lines)][0]):
            raise DataError(f"{output} ends in {tail[:40].decode('utf-8', 'replace')!r}, which is not a row of this "
                            "job; it is left as it is: choose another output file")
        log.warning("%s ends in a partly written line (from an interrupted run); removing it", output)
        with open(output, "rb+") as fh:
            fh.truncate(end)
    return len(lines)


@contextlib.contextmanager
def locked_output(output: Path) -> Iterator[IO[str]]:
    """The output opened for appending, locked against a second run on the same file (which stops at once)."""
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        fh = open(output, "a", encoding="utf-8")
    except OSError as exc:
        raise DataError(f"cannot write output {output}: {exc.strerror or exc}") from exc
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DataError(f"another painter predict is writing {output}; wait for it to finish, or choose "
                            "another output file") from None
        yield fh


def write_rejects(output: Path, rejected: list[RejectedRow]) -> None:
    path = rejects_path(output)
    try:
        if not rejected:
            path.unlink(missing_ok=True)
            return
        with atomic_output(path) as tmp:
            with open(tmp, "w", encoding="utf-8") as fh:
                for r in rejected:
                    fh.write(f"{r.line}\t{r.reason}\t{r.raw.replace(chr(9), ' ')}\n")
    except OSError as exc:
        raise DataError(f"cannot write the list of rejected rows {path}: {exc.strerror or exc}; the output's folder "
                        "must be writable") from exc


def predict(painter: Painter, input_path: str | Path, output_path: str | Path, seed: int = 0, num_images: int = 1,
            top_k: int | None = None, top_p: float | None = None, temperature: float | None = None,
            guidance_scale: float | None = None, batch_size: int = 8, progress: bool = True,
            shard: Shard | None = None, overwrite: bool = False) -> PredictReport:
    """Paint every prompt of ``input_path`` into ``output_path``; with ``shard`` (under torchrun), this
    process's block of the rows, merged into the output by rank 0 when every block is done. An output begun by
    another job (model, seed, sampling, precision: kept beside it) is resumed only by the same job, or started
    over with ``overwrite`` (one process)."""
    output = Path(output_path)
    if batch_size < 1:
        raise SamplingError(f"--batch-size must be at least 1, got {batch_size}")
    group = Group(shard) if shard else None
    if seed == -1:
        seed = resolve_seed(seed) if group is None else group.broadcast(resolve_seed(seed))
        log.warning("--seed -1 picked seed %d; pass --seed %d to resume this job with the same images", seed, seed)
    image_seeds(resolve_seed(seed), num_images)
    sampling = painter.sampling(top_k, top_p, temperature, guidance_scale)
    input_path = Path(input_path)
    if input_path.exists() and output.exists() and os.path.samefile(input_path, output):
        raise DataError(f"{output} is the input file; choose another output file")

    good: list[tuple[PromptRow, TokenizedPrompt]] = []
    rejected: list[RejectedRow] = []
    regions: dict[int, tuple] = {}  # line -> (cells to keep, codes) of a repaint row
    for row in read_prompt_rows(input_path):
        if isinstance(row, RejectedRow):
            rejected.append(row)
            continue
        try:
            tokens = painter.tokenize(row.text)
            if row.box is not None:
                regions[row.line] = painter.region(decode_base64_image(row.image), box=row.box)
            good.append((row, tokens))
        except (PainterError, ImageDecodeError) as exc:
            rejected.append(RejectedRow(row.line, str(exc), f"{row.idx}\t{row.text}"))
    if not shard or shard.rank == 0:
        for r in rejected:
            log.warning("%s line %d rejected: %s", input_path, r.line, r.reason)
    todo = [(row, tokens, j) for row, tokens in good for j in range(num_images)]
    identity = {"model": str(painter.model_dir or painter.name), "vqgan": painter.vqgan_id, "seed": seed,
                "num_images": num_images, "top_k": sampling.top_k, "top_p": sampling.top_p,
                "temperature": sampling.temperature, "guidance_scale": sampling.guidance_scale,
                "precision": painter.precision}
    job = partial(_paint_into, painter, seed=seed, sampling=sampling, batch_size=batch_size, progress=progress,
                  regions=regions)
    if group is None:
        with locked_output(output) as fh:
            if overwrite:
                fh.truncate(0)
            done = resume_point(output, todo)
            write_rejects(output, rejected)
            claim_job(output, identity, done)
            if done:
                log.info("resuming: %d image row(s) already in %s, %d to go", done, output, len(todo) - done)
            written = job(fh, output, todo[done:], done)
        return PredictReport(written=written, skipped=done, rejected=rejected)
    try:
        if overwrite:
            raise DataError("--overwrite is for one process; under torchrun remove the output and its part files")
        return _predict_shard(job, group, output, todo, rejected, batch_size, identity)
    finally:
        group.close()


def _paint_into(painter: Painter, fh: IO[str], output: Path, todo: Todo, done: int, seed: int, sampling,
                batch_size: int, progress: bool, regions: dict) -> int:
    """Append the rows of ``todo`` to ``fh`` (``output``, holding ``done`` rows), each batch flushed to disk;
    returns how many were written."""
    bar = tqdm(total=len(todo) + done, initial=done, unit="img", disable=not progress, desc="painting")
    written = 0
    try:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            images = painter.paint([(tokens, seed + j) for _, tokens, j in chunk], sampling,
                                   [regions.get(row.line) for row, _, _ in chunk])
            fh.write("".join(tsv_line(row.idx, row.text, png_base64(im)) for (row, _, _), im in zip(chunk, images)))
            fh.flush()
            os.fsync(fh.fileno())
            written += len(chunk)
            bar.update(len(chunk))
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise DataError(f"the disk is full while writing {output}; {done + written} complete rows are "
                            "kept: free some space and run the same command again to resume") from exc
        raise
    finally:
        bar.close()
    return written


def _predict_shard(job, group: Group, output: Path, todo: Todo, rejected: list[RejectedRow],
                   batch_size: int, identity: dict) -> PredictReport:
    """This rank's block into its part file, then (rank 0) every part appended to the output in order."""
    shard = group.shard
    error, written, skipped = None, 0, 0
    try:
        stale = shard.stale_parts(output, batch_size)
        if stale:
            raise DataError(f"{stale[0]} is left by an interrupted run with another number of processes or "
                            "another --batch-size; run with those (--nproc_per_node N, --batch-size B in its "
                            "name: partRofN-bB) to finish it, or delete its part files")
        done = group.broadcast(_merged(output, todo, identity) if shard.rank == 0 else None)
        block = shard.block(len(todo), batch_size)
        if block.stop > done:  # blocks already in the output (a merge cut short) are not painted again
            part = shard.part(output, batch_size)
            rows = todo[block.start:block.stop]
            with locked_output(part) as fh:
                skipped = resume_point(part, rows)
                if skipped:
                    log.info("rank %d resuming: %d of its %d rows already in %s", shard.rank, skipped, len(rows), part)
                written = job(fh, part, rows[skipped:], skipped)
    except PainterError as exc:
        error = str(exc)
    errors = group.all_ok(error)
    if errors:
        raise DataError("sharded predict stopped (the parts written so far are kept): " + "; ".join(errors))
    if shard.rank == 0:
        write_rejects(output, rejected)
        _merge(shard, output, todo, batch_size)
    return PredictReport(written=written, skipped=skipped, rejected=rejected)


def _merged(output: Path, todo: Todo, identity: dict) -> int:
    """How many rows the output holds (repairing a torn last line, under its lock), once it is this job's."""
    with locked_output(output):
        done = resume_point(output, todo)
        claim_job(output, identity, done)
        return done


def _merge(shard: Shard, output: Path, todo: Todo, batch_size: int) -> None:
    """Append every part to the output in order, each row once (a merge cut short resumes where it stopped),
    then remove the parts."""
    parts = [shard.part(output, batch_size, rank) for rank in range(shard.world)]
    with locked_output(output) as fh:
        count = resume_point(output, todo)
        for rank, part in enumerate(parts):
            block = Shard(rank, shard.world).block(len(todo), batch_size)
            if block.stop <= count:
                continue
            if not part.is_file():
                raise DataError(f"rank {rank}'s part {part} is not there: on several machines the output's "
                                "folder must be one they all see (a shared file system)")
            rows = todo[block.start:block.stop]
            if resume_point(part, rows) != len(rows):
                raise DataError(f"{part} is not complete; run the same command again to finish it")
            lines, _ = split_lines(part.read_bytes())
            try:
                fh.write(b"".join(lines[max(count - block.start, 0):]).decode("utf-8"))
                fh.flush()
                os.fsync(fh.fileno())
            except OSError as exc:
                raise DataError(f"cannot append {part} to {output} ({exc.strerror or exc}); the parts are kept: "
                                "free some space and run the same command again to finish the merge") from None
            count = block.stop
    for part in parts:
        part.unlink(missing_ok=True)
    log.info("merged %d parts into %s (%d rows)", len(parts), output, count)
