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
DEFAULT_MODEL = "demo-large"


def cache_dir() -> Path:
    """Where downloaded models live: $PAINTER_CACHE, else ~/.cache/painter."""
    return Path(os.environ.get("PAINTER_CACHE") or Path.home() / ".cache" / "painter")


@lru_cache(maxsize=1)
def registry() -> dict[str, dict]:
    """Known model names and what is known about them (family, size, domain, sources, licence)."""
    return json.loads(resources.files(__package__).joinpath("registry.json").read_text(encoding="utf-8"))


def resolve(name_or_path: str | os.PathLike) -> Path:
    """A directory path is used as is; a known name is looked up in the cache. The error says where it looked."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    name = str(name_or_path)
    known = registry()
    for candidate in (name, name.removeprefix("alibaba-pai/")):
        if candidate in known:
            if "bundled" in known[candidate]:
                bundled = PROJECT_ROOT / known[candidate]["bundled"]
                if bundled.is_dir():
                    return bundled
                raise ModelNotFoundError(f"the bundled model {candidate!r} is missing from {bundled}; "
                                         "re-clone the repository or rebuild it with recipes/demo-models.sh")
            cached = cache_dir() / candidate
            if cached.is_dir():
                return cached
            raise ModelNotFoundError(
                f"model {candidate!r} is not on this machine: looked for {cached}. Download "
                f"{known[candidate]['sources'][0]} and unpack it there (config.json, pytorch_model.bin, vocab.txt)")
    close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close else f" Known models: {', '.join(sorted(known))}."
    raise ModelNotFoundError(f"unknown model {name!r}: no directory {path.resolve()} and no known model of "
                             f"that name.{hint}")
