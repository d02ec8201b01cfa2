"""Finding a model's files from a name or a path: the registry of known models and the local cache."""

from __future__ import annotations

import difflib
import json
import os
from functools import lru_cache
from importlib import resources
from pathlib import Path

from painter.errors import ModelNotFoundError


PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = "bundled-large"


def cache_dir() -> Path:
    """Where downloaded models live: $PAINTER_CACHE, else ~/.cache/painter."""
    return Path(os.environ.get("PAINTER_CACHE") or Path.home() / ".cache" / "painter")


@lru_cache(maxsize=1)
def registry() -> dict[str, dict]:
    """Known model names and what is known about them (family, size, domain, sources, licence)."""
    return json.loads(resources.files(__package__).joinpath("registry.json").read_text(encoding="utf-8"))


def installed() -> dict[str, tuple[Path, str]]:
    """Known models present on this machine: name -> (directory, "bundled" or "download cache")."""
    found = {}
    for name, meta in registry().items():
        path = PROJECT_ROOT / meta["bundled"] if "bundled" in meta else cache_dir() / name
        if path.is_dir():
            found[name] = (path, "bundled" if "bundled" in meta else "download cache")
    return found


def resolve(name_or_path: str | os.PathLike) -> Path:
    """A directory path is used as is; a known name is looked up in the cache and downloaded on first use
    (unless offline). The error says where it looked and what to do."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if path.is_symlink():
        try:
            path.resolve(strict=True)
        except (OSError, RuntimeError) as exc:  # a loop, or a link to nothing
            raise ModelNotFoundError(f"model {path} is a symbolic link that leads nowhere ({exc})") from None
    name = str(name_or_path)
    if name.startswith("hf:"):
        return download(name)
    known = registry()
    for candidate in (name, name.removeprefix("alibaba-pai/")):
        if candidate in known:
            if "bundled" in known[candidate]:
                bundled = PROJECT_ROOT / known[candidate]["bundled"]
                if bundled.is_dir():
                    return bundled
                raise ModelNotFoundError(f"the bundled model {candidate!r} is missing from {bundled}; "
                                         f"re-clone the repository or rebuild it with {known[candidate]['recipe']}")
            cached = cache_dir() / candidate
            if cached.is_dir():
                return cached
            return download(candidate)
    close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close else f" Known models: {', '.join(sorted(known))}."
    raise ModelNotFoundError(f"unknown model {name!r}: no directory {path.resolve()} and no known model of "
                             f"that name.{hint}")


def download(name: str, cache: str | os.PathLike | None = None, mirror: str | None = None,
             progress: bool = True, on_progress=None) -> Path:
    """Fetch a known model (EasyNLP archive) or ``hf:OWNER/REPO`` into the cache; return its directory.
    ``on_progress(bytes so far, total or None)`` follows an archive's download (the studio's progress bar)."""
    from painter.hub.fetch import ArchiveError, DownloadError, install_archive, offline, with_mirror

    cache = Path(cache) if cache else cache_dir()
    if name.startswith("hf:"):
        return _download_hf(name[3:], cache)
    known = registry()
    if name not in known:
        close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.5)
        raise ModelNotFoundError(f"unknown model {name!r}." + (f" Did you mean {', '.join(close)}?" if close else
                                 f" Known models: {', '.join(sorted(known))}."))
    meta = known[name]
    if "bundled" in meta:
        return resolve(name)
    mirror = mirror or os.environ.get("PAINTER_MIRROR")
    url = with_mirror(meta["sources"][0], mirror)
    if offline():
        raise ModelNotFoundError(
            f"model {name!r} is not in {cache / name} and PAINTER_OFFLINE is set, so it was not downloaded from "
            f"{url}. To install it by hand, download that archive elsewhere and unpack it so that "
            f"{cache / name} holds config.json, pytorch_model.bin and vocab.txt.")
    cache.mkdir(parents=True, exist_ok=True)
    try:
        return install_archive(url, name, cache, sha256=meta.get("sha256"), size=meta.get("bytes"), progress=progress,
                               on_progress=on_progress)
    except ArchiveError:
        raise
    except DownloadError as exc:
        raise DownloadError(f"{exc}. Offline? Place the files by hand in {cache / name} "
                            f"(config.json, pytorch_model.bin, vocab.txt from {url}).") from exc


def _download_hf(repo_id: str, cache: Path) -> Path:
    """A model in our own layout published on the Hugging Face Hub (honours HF_HUB_OFFLINE)."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:
        raise ModelNotFoundError("hf: models need the huggingface_hub package: pip install huggingface_hub") from exc
    try:
        return Path(snapshot_download(repo_id, cache_dir=cache / "hf",
                                      allow_patterns=["config.json", "*.safetensors", "vocab.txt", "README.md"]))
    except Exception as exc:  # the hub raises many types (offline, not found, auth)
        raise ModelNotFoundError(f"could not get hf:{repo_id} from the Hugging Face Hub: {exc}") from exc
