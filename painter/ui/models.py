"""Which models the studio can paint with, loaded lazily and kept loaded, and downloading more.

Models come from the bundled pair, the download cache, ``--model`` flags and the ``PAINTER_MODELS``
variable (paths or names separated by ``os.pathsep``). A model that fails to load reports its error and
leaves the others usable. A known model can be downloaded while the studio runs (the Models tab, or
``PAINTER_PRELOAD`` at start): the same verified download as ``painter download``, in a background thread
that outlives the browser tab which started it, after which the model is in every list.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from painter import hub
from painter.checkpoints import read_config
from painter.errors import PainterError
from painter.serving.pipeline import Painter

log = logging.getLogger(__name__)

# Preference when a preset's model is missing: the biggest general model first, then the bundled 128 px pair
# (its subjects in every preset's domain, and prompts in other wordings: docs/bundled-models.md), then the
# 64 px emoji model.
FALLBACK_ORDER = ("pai-painter-large-zh", "pai-painter-base-zh", "bundled-large", "bundled-base", "demo-large")


@dataclass(frozen=True)
class ModelEntry:
    name: str
    path: Path
    family: str
    size: str
    source: str
    licence: str
    guidance: bool  # guidance_scale > 1 helps it (its config.json says so, else: trained with caption dropout)
    sampling: dict  # the settings it paints best with (config.json "sampling"); {}: the reference's
    domain_words: tuple[str, ...] = ()  # words it learnt for a domain (config.json "domain_words")

    @property
    def megabytes(self) -> float:
        return sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file()) / 1e6


def _entry(name: str, path: Path, source: str) -> ModelEntry | str:
    """The model's entry, or why its folder cannot be listed (the studio starts whatever a folder holds)."""
    try:
        config, _ = read_config(path)
    except Exception as exc:  # a PainterError names the problem; anything else is still one folder's, not ours
        reason = str(exc) if isinstance(exc, PainterError) else f"{type(exc).__name__}: {exc}"
        log.warning("model %s at %s skipped: %s", name, path, reason)
        return reason[:300]
    known = hub.registry().get(name, {})
    family = known.get("family") or "custom"
    size = known.get("size") or ("large" if config.gpt.n_layer >= 24 else "base")
    return ModelEntry(name, path, family, size, source, known.get("licence", "see the model's files"),
                      guidance=config.guidance_helps, sampling=config.sampling, domain_words=config.domain_words)


@dataclass
class Download:
    """How far one model's download is: ``state`` is downloading, installed, or the error that stopped it."""

    name: str
    done: int = 0
    total: int | None = None
    state: str = "downloading"

    @property
    def running(self) -> bool:
        return self.state == "downloading"


class ModelManager:
    def __init__(self, extra: list[str] = (), device: str = "auto", precision: str = "auto",
                 engine_threads: int | None = None):
        self.device, self.precision = device, precision
        if engine_threads is not None:  # the owner of the cores loads and paints every model with them
            Painter.set_engine_threads(engine_threads)
        self._entries: dict[str, ModelEntry] = {}
        self.broken: dict[str, tuple[str, str]] = {}  # folders that could not be listed: name -> (source, why)
        self._loaded: dict[str, Painter] = {}
        self._errors: dict[str, str] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self.preparing: dict[str, str] = {}  # model -> waiting, preparing, ready, or its error
        self.downloads: dict[str, Download] = {}
        for name, (path, source) in hub.installed().items():
            self._add(name, path, source)
        env = [p for p in os.environ.get("PAINTER_MODELS", "").split(os.pathsep) if p]
        for spec in [*env, *extra]:
            try:
                path = hub.resolve(spec)
            except PainterError as exc:
                log.warning("model %s skipped: %s", spec, exc)
                continue
            name = spec if spec in hub.registry() else path.name
            self._add(name, path, "--model" if spec in extra else "PAINTER_MODELS")

    def _add(self, name: str, path: Path, source: str) -> None:
        if path.is_dir():
            entry = _entry(name, path, source)
            if isinstance(entry, str):
                self.broken[name] = (source, entry)
            else:
                self._entries[name] = entry
                self._locks[name] = threading.Lock()

    @property
    def names(self) -> list[str]:
        return list(self._entries)

    def entry(self, name: str) -> ModelEntry:
        if name not in self._entries:
            raise PainterError(f"模型 {name!r} 未安装 (model {name!r} is not installed)")
        return self._entries[name]

    def first_installed(self, names: Iterable[str]) -> str | None:
        return next((n for n in names if n in self._entries), None)

    def best_for(self, preferred: Iterable[str]) -> tuple[str, bool]:
        """(model to use, whether it is one of the preferred ones, which are in order of preference)."""
        name = self.first_installed(preferred)
        if name:
            return name, True
        for name in FALLBACK_ORDER:
            if name in self._entries:
                return name, False
        if not self._entries:
            raise PainterError("no model is installed: run `painter download pai-painter-base-zh` or pass --model DIR")
        return next(iter(self._entries)), False

    def get(self, name: str) -> Painter:
        """The loaded model (loading it on first use, once even when requests race); a failed load raises
        its error every time."""
        entry = self.entry(name)
        with self._guard:
            lock = self._locks[name]
        with lock:
            if name in self._loaded:
                return self._loaded[name]
            if name in self._errors:
                raise PainterError(self._errors[name])
            try:
                painter = Painter.from_pretrained(entry.path, device=self.device, precision=self.precision)
            except PainterError as exc:
                self._errors[name] = f"模型 {name} 加载失败 (failed to load): {exc}"
                raise PainterError(self._errors[name]) from exc
            painter.name = name
            self._loaded[name] = painter
            return painter

    def prepare(self, names: list[str]) -> threading.Thread:
        """Load these models in the background (with the quality check of ``auto``) and warm them up (their
        engines' traces, the preview map fitted on first use), so the first painting does not wait for them;
        ``preparing`` says how far it got."""
        names = [n for n in names if n in self._entries]
        self.preparing = {n: "waiting" for n in names}

        def run():
            for name in names:
                self.preparing[name] = "preparing"
                try:
                    self.get(name).warm_up()
                    self.preparing[name] = "ready"
                except PainterError as exc:
                    self.preparing[name] = str(exc)
                    log.warning("model %s could not be prepared: %s", name, exc)

        thread = threading.Thread(target=run, name="painter-prepare", daemon=True)
        thread.start()
        return thread

    def preparation_note(self) -> str:
        """One line while models are being prepared, '' once they are."""
        busy = [n for n, state in self.preparing.items() if state in ("waiting", "preparing")]
        if not busy:
            return ""
        done = len(self.preparing) - len(busy)
        return (f"首次启动：正在准备模型 {busy[0]}…（{done}/{len(self.preparing)}） "
                f"(First start: preparing {busy[0]}, {done} of {len(self.preparing)} ready.)")

    def downloadable(self) -> list[tuple[str, dict]]:
        return [(n, m) for n, m in hub.registry().items() if n not in self._entries and "bundled" not in m]

    @property
    def downloading(self) -> bool:
        """Whether a download is under way (a visitor's, or a preload)."""
        return any(job.running for job in list(self.downloads.values()))

    def download(self, name: str) -> Download:
        """Start downloading a known model in the background (or follow the download already running); once
        installed it is in ``names``. Only the registry's models: never a path or URL a visitor typed."""
        with self._guard:
            current = self.downloads.get(name)
            if current and current.running:
                return current
            available = [n for n, _ in self.downloadable()]
            if name not in available:
                known = ", ".join(available) or "none"
                raise PainterError(f"{name!r} 不能下载 (cannot be downloaded): it is installed or not a known "
                                   f"model; downloadable: {known}")
            job = self.downloads[name] = Download(name)

        def progress(done: int, total: int | None) -> None:
            job.done, job.total = done, total

        def run() -> None:
            try:
                path = hub.download(name, progress=False, on_progress=progress)
            except Exception as exc:  # the thread's end: whatever stopped it is the download's state
                job.state = str(exc) or type(exc).__name__
                log.warning("download of %s failed: %s", name, job.state)
                return
            with self._guard:
                self._add(name, path, "download cache")
            job.state = "installed"
            log.info("model %s downloaded to %s", name, path)

        threading.Thread(target=run, name=f"painter-download-{name}", daemon=True).start()
        return job

    def preload(self, names: Iterable[str]) -> list[Download]:
        """A Space owner's models (PAINTER_PRELOAD, --preload): downloaded in the background at start unless
        installed; an unknown name is logged and skipped, so a typo cannot keep the studio from starting."""
        started = []
        for name in dict.fromkeys(names):
            if name in self._entries:
                continue
            try:
                started.append(self.download(name))
            except PainterError as exc:
                log.warning("preload skipped: %s", exc)
        return started
