"""Continuous batching: a model's engine samples every request sent to it in one running batch.

A request (a prompt's images with their seeds and sampling settings) joins the batch at the next token step:
its caption is prefilled into free rows of the engine's key/value cache, and from then on each step feeds one
token per row, every row at its own position (``GPT.forward_static``). A request leaves when its last code is
drawn or when its caller goes away (Stop, a closed browser tab), and its rows are reused at once. The batch
never decides what a request paints: each image keeps its own generator (the seed contract of sampling.py)
and its own settings (top-k, top-p, temperature, guidance per request), so in fp32 an image is token for token
what it is alone.

Threads: an engine has no thread of its own. Its rounds (admit waiting requests, one token step, leave) run on
the process's one owner of the CPU cores (``cores.OWNER``), in turns with every other model's engine and with
the decodes and previews callers hand over, so that one OpenMP pool works per process (see cores.py for why).
Callers submit and wait on their tickets; they never run the model.

Kept apart from the model, as in vLLM's scheduler: the engine only decides which rows run; the model code only
runs rows.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch

from painter.errors import SamplingError
from painter.models import GPT, KVCache
from painter.sampling import (NOT_FINITE, SamplingConfig, StaticStep, draw_rows, finite_rows, guide,
                              make_generators, next_token_probs, trace_ahead)
from painter.serving.cores import OWNER

log = logging.getLogger(__name__)

_END = object()


def server_engine_threads() -> int:
    """CPU threads for an engine inside a server: all cores but one, which the server keeps for sending
    frames. A step spread over every core stalls whenever the server takes one of them (on 2 cores it made
    a 2 s picture 0.25 s slower)."""
    return max(1, torch.get_num_threads() - 1)


@dataclass(eq=False)
class Request:
    """One prompt's images in the running batch. ``updates`` receives (step, codes [n, img_len]) whenever a
    preview is due and at the last step, an exception if sampling failed, then _END."""

    text_ids: list[int]
    seeds: list[int]
    sampling: SamplingConfig
    preview_every: int
    # repaint: the cells to keep [img_len] (bool) and their codes [img_len]; a kept cell is fed as given, a
    # free one sampled from the model given every cell before it (kept and sampled), in raster order
    keep: list[bool] | None = None
    forced: torch.Tensor | None = None
    updates: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    # set by the engine when the request joins
    generators: list[torch.Generator] = field(default_factory=list)
    codes: torch.Tensor | None = None
    step: int = 0  # codes drawn so far

    @property
    def rows(self) -> int:
        """Cache rows: one per image, and one more per image for the unconditional caption under guidance."""
        return len(self.seeds) * (2 if self.sampling.guided else 1)


class Ticket:
    """The caller's side of a request: iterate for (step, codes) updates; closing it (or dropping it) cancels."""

    def __init__(self, request: Request):
        self.request = request

    def __iter__(self) -> Iterator[tuple[int, torch.Tensor]]:
        try:
            while True:
                OWNER.wait_while(self.request.updates.empty)  # on the owner's thread: drive the engines
                item = self.request.updates.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.cancel()

    def result(self) -> torch.Tensor:
        """The codes [n, img_len] once the last one is drawn."""
        codes = None
        for _, codes in self:
            pass
        if codes is None:
            raise SamplingError("the request was cancelled")
        return codes

    def cancel(self) -> None:
        self.request.cancelled.set()

    def __del__(self):
        self.cancel()


def default_max_batch(device: torch.device) -> int:
    """Rows per step. On a CPU a step of up to 8 rows costs about what one row costs (measured for base's int8
    layers: 5.3 ms at 1 to 8 rows), so 8 serves 8 users for the price of one; a GPU takes many more."""
    return 32 if device.type == "cuda" else 8


class Engine:
    """Samples image codes for every request submitted, ``max_batch`` cache rows at most (a guided image
    takes two); requests beyond that wait for rows to free. Its rounds run on the owner of the cores."""

    def __init__(self, gpt: GPT, uncond_ids: Sequence[int], img_len: int, device: torch.device, max_batch: int,
                 compile: bool = False):
        if max_batch < 1:
            raise SamplingError(f"max_batch must be at least 1, got {max_batch}")
        self.gpt, self.img_len, self.device, self.max_batch = gpt, img_len, device, max_batch
        self.text_len = len(uncond_ids)
        self.uncond = torch.tensor([list(uncond_ids)], dtype=torch.long, device=device)
        self.dtype = gpt.pos_emb.dtype  # the activations' dtype (int8 keeps its token embedding in bf16)
        self.compile = compile
        self._steps: dict[int, StaticStep] = {}  # compiled steps by row count (a power of two)
        self.cache = KVCache.empty(gpt.config, max_batch, self.dtype, device, max_len=self.text_len + img_len - 1)
        self.waiting: queue.SimpleQueue[list[Request]] = queue.SimpleQueue()  # each call's requests together
        self.pending: list[Request] = []  # taken from ``waiting``, not yet admitted (the owner's side)
        self.active: list[Request] = []  # their rows fill the cache from row 0, in this order

    # -- the caller's side --------------------------------------------------------------------------------

    def submit(self, text_ids: Sequence[int], seeds: Sequence[int], sampling: SamplingConfig,
               preview_every: int = 0, keep: torch.Tensor | None = None, forced: torch.Tensor | None = None) -> Ticket:
        """One caption's images; with ``keep`` and ``forced`` (repaint), the kept cells are the given codes."""
        return self.submit_all([(text_ids, seeds)], sampling, preview_every, keep, forced)[0]

    def submit_all(self, prompts: Sequence[tuple[Sequence[int], Sequence[int]]], sampling: SamplingConfig,
                   preview_every: int = 0, keep: torch.Tensor | None = None,
                   forced: torch.Tensor | None = None) -> list[Ticket]:
        """One request per (caption, seeds), handed over together: when they fit they join at the same step,
        so one call paints the same whatever the engine's thread was doing (rows side by side at one
        position take the same kernels as they would in any other run of the same call)."""
        if (keep is None) != (forced is None):
            raise SamplingError("a repaint needs both the cells to keep and their codes")
        if keep is not None:
            if keep.shape != (self.img_len,) or forced.shape != (self.img_len,):
                raise SamplingError(f"a repaint's mask and codes must have {self.img_len} cells each, got "
                                    f"{tuple(keep.shape)} and {tuple(forced.shape)}")
            keep, forced = keep.bool().tolist(), forced.to(self.device, torch.long)
        requests = [Request(list(text_ids), list(seeds), sampling, preview_every, keep, forced)
                    for text_ids, seeds in prompts]
        for request in requests:
            if len(request.text_ids) != self.text_len:
                raise SamplingError(f"a caption of {len(request.text_ids)} tokens; this model reads {self.text_len}")
            if request.rows > self.max_batch:
                raise SamplingError(f"{len(request.seeds)} images{' with guidance' if sampling.guided else ''} "
                                    f"need {request.rows} rows; this engine has {self.max_batch} (Painter's max_batch)")
        self.waiting.put(requests)
        OWNER.attach(self)
        return [Ticket(request) for request in requests]

    def trace_ahead(self) -> int:
        """Trace every step this engine can take ahead of use (each padded row count, each attention window),
        one row count per job on the owner so that painting goes on between them; a compiled CPU engine only
        (CUDA graphs are captured when a row count first runs). Returns the number of traces made or found."""
        if not self.compile or self.device.type == "cuda":
            return 0
        counts = sorted({self._padded(rows) for rows in range(1, self.max_batch + 1)})
        return sum(OWNER.call(trace_ahead, self.gpt, rows, self.cache.max_len, self.dtype, self.device)
                   for rows in counts)

    # -- the owner's side ---------------------------------------------------------------------------------

    def work_pending(self) -> bool:
        return bool(self.active or self.pending or not self.waiting.empty())

    def work(self) -> bool:
        """One round: take and admit waiting requests, one token step for the active rows, let finished and
        cancelled requests leave. Returns whether requests remain; an engine with none costs nothing."""
        while not self.waiting.empty():
            self.pending.extend(self.waiting.get())
        self.pending = [r for r in self.pending if not self._dropped(r)]
        self._admit()
        if self.active:
            try:
                self._step()
            except Exception as exc:  # a failed forward fails the requests in it, never the engine
                self._fail(self.active, exc)
        self._leave()
        return self.work_pending()

    def _fail(self, requests: list[Request], exc: Exception) -> None:
        """These requests end with ``exc`` and leave at this round's end; the others paint on."""
        if not isinstance(exc, SamplingError):
            log.error("sampling failed: %s: %s", type(exc).__name__, exc)
        for request in requests:
            request.updates.put(exc)
            request.cancelled.set()  # _leave drops it and frees its rows

    @staticmethod
    def _dropped(request: Request) -> bool:
        if request.cancelled.is_set():
            request.updates.put(_END)
            return True
        return False

    def _used_rows(self) -> int:
        return sum(r.rows for r in self.active)

    @torch.inference_mode()
    def _admit(self) -> None:
        """Prefill the captions of the waiting requests that fit (in order of arrival) and draw their first
        codes. They leave ``pending`` before anything runs, so a failure can never admit them twice."""
        free, joining, rest = self.max_batch - self._used_rows(), [], []
        for request in self.pending:
            if not rest and request.rows <= free:
                joining.append(request)
                free -= request.rows
            else:
                rest.append(request)
        self.pending = rest
        if not joining:
            return
        for request in joining:
            request.generators = make_generators(request.seeds, self.device)
            request.codes = torch.zeros(len(request.seeds), self.img_len, dtype=torch.long, device=self.device)
            self.active.append(request)
        try:
            ids = torch.tensor([row for r in joining for row in self._row_ids(r)], dtype=torch.long,
                               device=self.device)
            scratch = KVCache.empty(self.gpt.config, len(ids), self.dtype, self.device, max_len=self.text_len)
            logits = self.gpt.forward_cached(ids, scratch)
            first = self._used_rows() - len(ids)
            self.cache.keys[:, first:first + len(ids), :, :self.text_len] = scratch.keys
            self.cache.values[:, first:first + len(ids), :, :self.text_len] = scratch.values
        except Exception as exc:
            self._fail(joining, exc)
            return
        self._draw(joining, logits)

    def _row_ids(self, request: Request) -> list[list[int]]:
        rows = [request.text_ids] * len(request.seeds)
        if request.sampling.guided:
            rows += self.uncond.tolist() * len(request.seeds)
        return rows

    @torch.inference_mode()
    def _step(self) -> None:
        """Feed every active row its last code at its own position; draw each request's next codes."""
        fed, pos = [], []
        for request in self.active:
            last = request.codes[:, request.step - 1]
            fed.append(torch.cat([last, last]) if request.sampling.guided else last)
            pos += [self.text_len + request.step - 1] * request.rows
        self._draw(self.active, self._forward(torch.cat(fed).view(-1, 1), pos))

    def _forward(self, fed: torch.Tensor, pos: list[int]) -> torch.Tensor:
        """Logits [rows, V] for the active rows. Compiled, the rows are padded to a power of two (padding rows
        use free cache rows at position 0), so a handful of traces or CUDA graphs serve every batch."""
        rows = len(pos)
        if not self.compile and min(pos) == max(pos):
            # eager, every row at one position (a lone request, or requests in step): the plain cached step
            # over the filled part of the cache, which skips forward_static's masked attention and scattered
            # writes (7.1 against 5.0 ms a step on demo-large)
            return self.gpt.forward_cached(fed, KVCache(self.cache.keys[:, :rows], self.cache.values[:, :rows],
                                                        length=pos[0]))
        padded = self._padded(rows) if self.compile else rows
        step = self._steps.get(padded)
        if step is None:
            step = self._steps[padded] = self._build(padded)
        if padded > rows:
            fed = torch.cat([fed, fed.new_zeros(padded - rows, 1)])
        return step(fed, pos + [0] * (padded - rows))[:rows]

    def _padded(self, rows: int) -> int:
        """The rows a compiled step runs for ``rows`` active ones: the next power of two, at most max_batch."""
        return min(self.max_batch, 1 << (rows - 1).bit_length())

    def _build(self, rows: int) -> StaticStep:
        cache = KVCache(self.cache.keys[:, :rows], self.cache.values[:, :rows])
        if not (self.compile and self.device.type == "cuda"):
            return StaticStep(self.gpt, cache, rows, compile=self.compile)
        # capturing a CUDA graph runs the step at position 0 of its rows: keep the captions' first position
        kept = cache.keys[:, :, :, 0].clone(), cache.values[:, :, :, 0].clone()
        step = StaticStep(self.gpt, cache, rows, compile=True)
        cache.keys[:, :, :, 0], cache.values[:, :, :, 0] = kept
        return step

    def _draw(self, requests: list[Request], logits: torch.Tensor) -> None:
        """Each request's next codes from its rows of ``logits`` (the requests' rows in order). Requests with the
        same settings have their probabilities computed together (top-k, softmax and the finite check once for
        all their rows: a tenth of an 8-row step when each ran per request); each image still draws from its
        own generator, so a picture is the one it is alone. A failure here fails its requests alone."""
        groups: dict[SamplingConfig, list[tuple[Request, torch.Tensor]]] = {}
        start = 0
        for request in requests:
            rows, start = logits[start:start + request.rows], start + request.rows
            if request.keep is not None and request.keep[request.step]:
                request.codes[:, request.step] = request.forced[request.step]  # kept: fed as given, no draw
                self._advance(request)
            else:
                groups.setdefault(request.sampling.at(request.step), []).append((request, rows))
        for cfg, members in groups.items():
            try:
                guided = [guide(rows, cfg.guidance_scale) if cfg.guided else rows for _, rows in members]
                probs = next_token_probs(torch.cat(guided), cfg)
                finite = finite_rows(probs)
            except Exception as exc:
                self._fail([request for request, _ in members], exc)
                continue
            start = 0
            for (request, _), rows in zip(members, guided):
                span = slice(start, start + len(rows))
                start = span.stop
                try:
                    if not all(finite[span]):
                        raise SamplingError(NOT_FINITE)
                    request.codes[:, request.step] = draw_rows(probs[span], request.generators)
                except Exception as exc:
                    self._fail([request], exc)
                    continue
                self._advance(request)

    def _advance(self, request: Request) -> None:
        """A code was drawn (or kept) for each image: next step, and the caller's update when one is due."""
        request.step += 1
        if request.step == self.img_len or (request.preview_every and request.step % request.preview_every == 0):
            request.updates.put((request.step, request.codes.clone()))

    def _leave(self) -> None:
        """Drop finished and cancelled requests and move the rows after them up, so the active rows stay
        packed from row 0 (one step then runs rows 0..n-1 only)."""
        keep, old_rows, start = [], [], 0
        for request in self.active:
            span = range(start, start + request.rows)
            start += request.rows
            if request.step == self.img_len or request.cancelled.is_set():
                request.updates.put(_END)
                request.generators, request.codes = [], None  # nothing of a finished request stays held
            else:
                keep.append(request)
                old_rows.extend(span)
        if len(keep) == len(self.active):
            return
        moved = [(new, old) for new, old in enumerate(old_rows) if new != old]
        if moved:
            new_rows, src_rows = (torch.tensor(x, device=self.device) for x in zip(*moved))
            for buffer in (self.cache.keys, self.cache.values):
                buffer[:, new_rows] = buffer[:, src_rows]
        self.active = keep
