"""One owner of the CPU cores: the single thread that runs every torch op of Painter's inference in a process.

Why: torch on a CPU runs parallel ops on libgomp (OpenMP), which keeps a separate thread pool for each thread
that runs one. Once the pools' threads outnumber the cores, libgomp stops spin-waiting between parallel regions
and every small op pays a futex wake-up. A picture is 256 steps of small ops, so when the batching engine's
thread and a caller's thread (decoding its pictures) both had pools, a script's picture took 2-2.5x longer on a
2-core CPU, even after the other thread went idle (a pool lives as long as its thread).

The rule: every engine's token steps (all models', in turns), decodes and previews run on the owner's thread;
callers (a script's main thread, Gradio's workers, the server's threads) hand work over with ``OWNER.call`` or
``Engine.submit`` and wait, running no torch op that could open a parallel region (building a model's engine
included: its key/value cache is allocated in parallel, and built on a script's main thread it gave that
thread a pool for life, which kept a script's picture at 2.3-2.9x the bare loop until it was traced). So a
process has one busy pool, whatever the number of callers and models. Loading a model is the one exception:
it takes seconds to minutes, which on the owner would stop every other model's painting, so it runs on a
thread of its own that ends with the load (``apart``), and libgomp frees its pool when it ends (a test counts
the threads).

Work is interleaved: the owner runs one queued job (a decode, a preview), then one token step of each
engine with requests, and so on; a decode waits for at most one step, and a step for at most one job. A job
that itself waits for the owner drives the engines while it waits, so nothing deadlocks. The owner sleeps when
there is nothing to do.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from concurrent.futures import Future
from typing import Callable, Protocol, TypeVar

import torch

log = logging.getLogger(__name__)

T = TypeVar("T")


class Stepper(Protocol):
    def work(self) -> bool:
        """One round of the engine's requests (admit, one token step, leave); whether it still has any."""

    def work_pending(self) -> bool:
        """Whether requests wait or run (a cheap check, made under the owner's lock)."""


class CoreOwner:
    """The process's owner thread (``OWNER``), started on first use.

    ``threads``: torch threads for the owner (None: torch's default, every core). A server sets all cores but
    one, so that sending frames never stalls a step; it is read each time the owner wakes."""

    def __init__(self) -> None:
        self.threads: int | None = None
        self._jobs: deque[tuple[Callable, Future]] = deque()
        self._engines: list[Stepper] = []  # engines with requests, in turn order
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._nested = 0  # jobs waiting on the owner's own thread (each drives the engines while it waits)

    def on_owner(self) -> bool:
        return threading.current_thread() is self._thread

    def call(self, fn: Callable[..., T], *args, **kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` on the owner and return its result (or raise its exception); inline when
        already on the owner."""
        if self.on_owner():
            return fn(*args, **kwargs)
        future: Future = Future()
        with self._cond:
            self._jobs.append((lambda: fn(*args, **kwargs), future))
            self._start()
            self._cond.notify()
        return future.result()

    def attach(self, engine: Stepper) -> None:
        """An engine has new requests: give it turns until it has none."""
        with self._cond:
            if engine not in self._engines:
                self._engines.append(engine)
            self._start()
            self._cond.notify()

    def wait_while(self, pending: Callable[[], bool]) -> None:
        """On the owner's thread, drive the engines until ``pending()`` is false (a job waiting for its own
        request); elsewhere, return at once (the caller blocks on its own queue)."""
        if not self.on_owner():
            return
        self._nested += 1
        try:
            while pending():
                if not self._turn(jobs=False) and pending():
                    raise RuntimeError("waiting on the owner thread for work that no engine holds")
        finally:
            self._nested -= 1

    def _start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="painter-cores", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._jobs and not self._engines:
                    self._cond.wait()
            if self.threads and torch.get_num_threads() != self.threads:
                torch.set_num_threads(self.threads)  # this thread's own count; callers' stay as they are
            self._turn(jobs=True)

    def _turn(self, jobs: bool) -> bool:
        """One queued job (unless ``jobs`` is false), then one round of every engine; whether anything ran."""
        ran = False
        job = None
        if jobs:
            with self._cond:
                job = self._jobs.popleft() if self._jobs else None
        if job is not None:
            fn, future = job
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn())
                except BaseException as exc:  # the caller gets it; the owner goes on
                    future.set_exception(exc)
            ran = True
        with self._cond:
            engines = list(self._engines)
        for engine in engines:
            ran = True
            try:
                busy = engine.work()
            except Exception:  # a bug in a round must not end the owner, which every model depends on
                log.exception("an engine's round failed")
                busy = False
            if not busy:
                with self._cond:  # a request submitted since work() returned re-attached it: keep it then
                    if engine in self._engines and not engine.work_pending():
                        self._engines.remove(engine)
        return ran


OWNER = CoreOwner()


def apart(fn: Callable[..., T], *args, **kwargs) -> T:
    """Run ``fn`` on a new thread that ends when it returns, and return its result (or raise its exception).
    Long work (loading a model) neither stops the owner nor leaves an OpenMP pool on the caller's thread:
    libgomp frees a thread's pool when the thread ends."""
    result: list = []

    def run():
        try:
            result.append((True, fn(*args, **kwargs)))
        except BaseException as exc:  # handed to the caller
            result.append((False, exc))

    thread = threading.Thread(target=run, name="painter-load", daemon=True)
    thread.start()
    thread.join()
    ok, value = result[0]
    if not ok:
        raise value
    return value
