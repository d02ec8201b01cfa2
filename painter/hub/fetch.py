"""Getting model files over HTTP, safely: streamed, resumable, verified, locked, and honest when offline.

A download goes to ``NAME.part`` in the cache; an interrupted one (Ctrl-C, a cut connection) resumes with
an HTTP Range request next time, and starts over cleanly when the server ignores Range. Only a file whose
size and (when known) sha256 check out is renamed into place. Archives are unpacked into a temporary
directory with every member checked (no absolute paths, no "..", no links leaving the archive, no device
files, a size limit), the layout is checked, and only then is the model moved into the cache.
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import logging
import os
import shutil
import socket
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Callable, Iterator

from tqdm import tqdm

from painter.data.files import file_sha256
from painter.errors import PainterError

log = logging.getLogger(__name__)

CHUNK = 1 << 20
MIN_SPEED = 1024  # bytes per second, averaged over SPEED_WINDOW: slower is a stalled server, retried
SPEED_WINDOW = 60.0
MAX_EXTRACTED_BYTES = 20 * 1024**3  # no pai-painter archive comes close (the large one is ~1.8 GB)
# A download whose size neither the registry nor the server gives stops here (twice the largest pai-painter
# archive), and every download keeps this much disk free as it goes: a server that never ends fills no disk.
MAX_UNSIZED_BYTES = 4 * 1024**3
KEEP_FREE_BYTES = 256 * 1024**2
REQUIRED_FILES = ("config.json", "pytorch_model.bin", "vocab.txt")

# Told (bytes so far, total bytes or None) as a download goes: the studio's progress bar.
Progress = Callable[[int, "int | None"], None]


class DownloadError(PainterError):
    """A download or an archive that cannot be used; nothing was written to the model's place."""


def offline() -> bool:
    return any(os.environ.get(k, "").lower() in ("1", "true", "yes") for k in ("PAINTER_OFFLINE", "HF_HUB_OFFLINE"))


def with_mirror(url: str, mirror: str | None) -> str:
    """Replace the scheme and host of ``url`` by those (and any path prefix) of ``mirror``."""
    if not mirror:
        return url
    parts, base = urllib.parse.urlsplit(url), urllib.parse.urlsplit(mirror)
    return urllib.parse.urlunsplit((base.scheme, base.netloc, base.path.rstrip("/") + parts.path, parts.query, ""))


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock held across processes (two downloads of one model wait for each other)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class SpeedFloor:
    """Raises ConnectionError when a download has been slower than MIN_SPEED over a whole SPEED_WINDOW: a
    server trickling a byte every few seconds never trips a socket timeout, and would hang for ever."""

    def __init__(self):
        self.start, self.bytes = time.monotonic(), 0

    def add(self, n: int) -> None:
        self.bytes += n
        elapsed = time.monotonic() - self.start
        if elapsed >= SPEED_WINDOW:
            if self.bytes < MIN_SPEED * elapsed:
                raise ConnectionError(f"the server sent {self.bytes} bytes in {elapsed:.0f} s (under "
                                      f"{MIN_SPEED} bytes/s)")
            self.start, self.bytes = time.monotonic(), 0


def _check_disk(folder: Path, needed: int) -> None:
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise DownloadError(f"not enough disk space in {folder}: {needed / 1e9:.2f} GB needed, "
                            f"{free / 1e9:.2f} GB free (set PAINTER_CACHE to a larger disk)")


def _check_bounds(url: str, part: Path, done: int, total: int | None) -> None:
    """Stop a download that runs past its size (or, unsized, past MAX_UNSIZED_BYTES), or that would leave the
    disk with less than KEEP_FREE_BYTES (checked every 64 MB)."""
    limit = total if total is not None else MAX_UNSIZED_BYTES
    if done > limit:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{url} sent more than {limit / 1e9:.2f} GB" + ("" if total is not None else
                            " without saying its size") + "; the download was discarded")
    if done % (64 * CHUNK) < CHUNK and shutil.disk_usage(part.parent).free < KEEP_FREE_BYTES:
        raise DownloadError(f"the disk holding {part.parent} is nearly full ({KEEP_FREE_BYTES // 2**20} MB left); "
                            f"{part} is kept: free some space and try again to resume")


def fetch(url: str, dest: Path, sha256: str | None = None, size: int | None = None, retries: int = 5,
          timeout: float = 30.0, progress: bool = True, space_factor: float = 2.2,
          on_progress: Progress | None = None) -> Path:
    """Download ``url`` to ``dest`` (resuming ``dest.part``); verify; rename into place. ``progress`` draws a
    bar on the terminal; ``on_progress`` is told the bytes so far after every chunk."""
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    attempt = 0
    while True:
        have = part.stat().st_size if part.exists() else 0
        request = urllib.request.Request(url, headers={"User-Agent": "painter", **({"Range": f"bytes={have}-"} if have else {})})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                landed = urllib.parse.urlsplit(response.geturl()).netloc
                if landed != urllib.parse.urlsplit(url).netloc:
                    log.warning("%s redirected the download to %s%s", urllib.parse.urlsplit(url).netloc, landed,
                                "; its sha256 is checked" if sha256 else "")
                if have and response.status != 206:
                    log.info("%s ignores Range requests; starting the download over", urllib.parse.urlsplit(url).netloc)
                    have = 0
                length = response.headers.get("Content-Length")
                total = have + int(length) if length is not None else size
                _check_disk(dest.parent, int(((total or 0) - have) * space_factor))
                with open(part, "ab" if have else "wb") as out, tqdm(
                        total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                        desc=dest.name, disable=not progress) as bar:
                    speed, done = SpeedFloor(), have
                    while chunk := response.read1(CHUNK):  # read1: what has arrived, so a trickle is noticed
                        out.write(chunk)
                        bar.update(len(chunk))
                        speed.add(len(chunk))
                        done += len(chunk)
                        _check_bounds(url, part, done, total)
                        if on_progress:
                            on_progress(done, total)
                got = part.stat().st_size
                if total is not None and got != total:
                    raise ConnectionError(f"connection closed after {got} of {total} bytes")
            break
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and have:  # asked past the end: the part file is bad, start over
                part.unlink(missing_ok=True)
            elif exc.code < 500:
                raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
            attempt = _retry(url, attempt, retries, f"HTTP {exc.code}", part)
        except (urllib.error.URLError, ConnectionError, socket.timeout, TimeoutError, OSError,
                http.client.HTTPException) as exc:  # HTTPException: e.g. IncompleteRead from broken chunking
            if isinstance(exc, OSError) and exc.errno == 28:
                raise DownloadError(f"the disk is full while downloading {url}; {part} is kept for resuming") from exc
            if isinstance(getattr(exc, "reason", None), socket.gaierror):  # no network (or no DNS): retrying won't help
                host = urllib.parse.urlsplit(url).netloc
                raise DownloadError(f"cannot reach {host} (offline, or its name does not resolve): "
                                    f"{_kept(part)}") from exc
            attempt = _retry(url, attempt, retries, str(exc), part)
    got = part.stat().st_size
    if size is not None and got != size:
        part.unlink()
        raise DownloadError(f"{url}: got {got} bytes, expected {size}; the download was discarded")
    if sha256:
        digest = file_sha256(part)
        if digest != sha256.lower():
            part.unlink()
            raise DownloadError(f"{url}: checksum mismatch (sha256 {digest}, expected {sha256}); the download was "
                                "discarded and nothing was installed")
    os.replace(part, dest)
    return dest


def _kept(part: Path) -> str:
    """What a failed download leaves, and what to do: resume what was fetched, or check the connection."""
    have = part.stat().st_size if part.exists() else 0
    if have:
        return (f"{have / 1e6:.1f} MB are kept; try again (the same command, or Download in the studio) to resume "
                "from where it stopped")
    return ("nothing was fetched; check the network connection (or set a mirror: --mirror / PAINTER_MIRROR), "
            "then try again")


def _retry(url: str, attempt: int, retries: int, why: str, part: Path) -> int:
    if attempt >= retries:
        raise DownloadError(f"{url}: gave up after {retries + 1} attempts ({why}); {_kept(part)}")
    wait = min(30.0, 0.5 * 2**attempt)
    log.warning("download interrupted (%s); retrying in %.1f s", why, wait)
    time.sleep(wait)
    return attempt + 1



class ArchiveError(DownloadError):
    """A downloaded archive whose contents are refused (unsafe members, too large, no model in it): being
    offline has nothing to do with it, so the error says only what is wrong."""


def safe_extract(archive: Path, dest: Path, limit: int | None = None) -> None:
    """Unpack a tar archive into ``dest`` after checking every member; refuse the whole archive otherwise."""
    limit = MAX_EXTRACTED_BYTES if limit is None else limit
    room = shutil.disk_usage(dest).free
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            total = 0
            for m in members:
                name = m.name
                parts = Path(name).parts
                if name.startswith(("/", "\\")) or Path(name).is_absolute() or ".." in parts:
                    raise ArchiveError(f"{archive} is unsafe: member {name!r} points outside the archive")
                if m.isdev() or m.isfifo():
                    raise ArchiveError(f"{archive} is unsafe: member {name!r} is a device or pipe")
                if m.issym() or m.islnk():  # a model needs none, and a link's target moves with the folder
                    raise ArchiveError(f"{archive} is unsafe: member {name!r} is a link (-> {m.linkname!r}); "
                                        "model archives hold plain files only")
                total += max(m.size, 0)
                if total > limit:
                    raise ArchiveError(f"{archive} expands to more than {limit / 1e9:.1f} GB; refused")
                if total > room:
                    raise ArchiveError(f"{archive} expands to more than the {room / 1e9:.2f} GB free in {dest}; "
                                        "refused (free some space, or set PAINTER_CACHE to a larger disk)")
            tar.extractall(dest, members=members, filter="data")
    except (tarfile.TarError, EOFError) as exc:
        raise ArchiveError(f"{archive} is not a readable tar archive: {exc}") from exc


def find_model_root(folder: Path) -> Path:
    """The directory inside an unpacked archive that holds the model files."""
    for candidate in [folder, *sorted(p for p in folder.rglob("*") if p.is_dir())]:
        if all((candidate / f).is_file() for f in REQUIRED_FILES):
            return candidate
    present = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())[:10]
    raise ArchiveError(f"the archive holds no model directory with {', '.join(REQUIRED_FILES)}; found {present}")


def install_archive(url: str, name: str, cache: Path, sha256: str | None = None, size: int | None = None,
                    progress: bool = True, on_progress: Progress | None = None) -> Path:
    """Download and unpack a model archive into ``cache/name`` (atomically, under a lock)."""
    target = cache / name
    with file_lock(cache / f".{name}.lock"):
        if target.is_dir():
            return target  # another process finished it while we waited
        archive = fetch(url, cache / f".{name}.tgz", sha256=sha256, size=size, progress=progress,
                        on_progress=on_progress)
        try:
            with tempfile.TemporaryDirectory(prefix=f".{name}-", dir=cache) as tmp:
                safe_extract(archive, Path(tmp))
                root = find_model_root(Path(tmp))
                os.replace(root, target)
        finally:  # a refused archive is not kept either
            archive.unlink(missing_ok=True)
    return target
