"""Sampling image codes from the GPT: settings, filtering the logits, drawing with per-image generators, and
the compiled one-token step (the loop itself is the batching engine's, serving/engine.py).

Seed contract: every image has its own ``torch.Generator`` seeded with ``seed + j`` (image j of a prompt), and
draws with ``torch.multinomial`` on its own [1, V] row exactly as the reference does after
``torch.manual_seed(seed)`` at batch size 1. So an image does not depend on the batch it was made in, and in
fp32 on CPU it is token-for-token the reference's image.
"""

from __future__ import annotations

import logging
import secrets
import threading
import warnings
import weakref
from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from painter.errors import SamplingError
from painter.models import GPT, KVCache
from painter.models.model import MAX_CODEBOOK

log = logging.getLogger(__name__)

MAX_SEED = 2**63 - 1
DEFAULT_TOP_K = 100  # the reference's default; capped at the codebook size for small models
# The documented ranges, shared by the studio's sliders, its API, PNG restore, the CLI and Painter: beyond them
# a picture is noise (temperature 5) or the arithmetic overflows (temperature 1e-300 made every logit infinite).
TOP_P_RANGE = (0.05, 1.0)
TEMPERATURE_RANGE = (0.05, 2.0)
GUIDANCE_RANGE = (0.0, 10.0)
SETTING_TYPES = {"top_k": int, "top_p": float, "temperature": float, "guidance_scale": float,
                 "detail_from": int, "detail_top_k": int, "detail_temperature": float}


@dataclass(frozen=True)
class SamplingConfig:
    top_k: int | None = None  # None: the reference's 100, or the whole codebook if it is smaller
    top_p: float = 1.0
    temperature: float = 1.0
    guidance_scale: float = 1.0  # classifier-free guidance; 1.0 is plain conditional sampling
    # From image code ``detail_from`` on, codes are drawn with ``detail_top_k`` / ``detail_temperature`` (each
    # defaulting to the setting above): a small model that memorised its pictures keeps to the prompt's subject
    # when its first codes are drawn conservatively, and its pictures then differ between seeds only if the
    # rest is drawn more freely (bundled-large: at top-k 20 / 0.8 throughout, two correct pictures of a training
    # caption differed visibly for 58% of captions; with top-k 50 / 0.9 from code 160 for 65%, at R@1 0.76
    # against 0.75). None: one setting for the whole picture, as in the reference.
    detail_from: int | None = None
    detail_top_k: int | None = None
    detail_temperature: float | None = None

    def validate(self, codebook_size: int) -> "SamplingConfig":
        """A checked copy with ``top_k`` filled in; raises SamplingError naming the bad value."""
        if self.top_k is None:
            return replace(self, top_k=min(DEFAULT_TOP_K, codebook_size)).validate(codebook_size)
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or not 1 <= self.top_k <= codebook_size:
            raise SamplingError(f"top_k must be a whole number from 1 to the codebook size {codebook_size}, "
                                f"got {self.top_k!r}")
        for name, (low, high) in (("top_p", TOP_P_RANGE), ("temperature", TEMPERATURE_RANGE),
                                   ("guidance_scale", GUIDANCE_RANGE)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
                raise SamplingError(f"{name} must be a number from {low} to {high}, got {value!r}")
        if self.detail_from is not None:
            if isinstance(self.detail_from, bool) or not isinstance(self.detail_from, int) or self.detail_from < 1:
                raise SamplingError(f"detail_from must be a whole number of image codes from 1, "
                                    f"got {self.detail_from!r}")
            try:
                self.at(self.detail_from).validate(codebook_size)
            except SamplingError as exc:
                raise SamplingError(f"the detail settings (from image code {self.detail_from}): {exc}") from None
        elif self.detail_top_k is not None or self.detail_temperature is not None:
            raise SamplingError("detail_top_k and detail_temperature need detail_from: the image code they start at")
        return self

    def at(self, step: int) -> "SamplingConfig":
        """The settings that draw image code ``step`` (0-based): the detail ones from ``detail_from`` on."""
        if self.detail_from is None or step < self.detail_from:
            return self
        return replace(self, top_k=self.detail_top_k or self.top_k, detail_from=None, detail_top_k=None,
                       temperature=self.detail_temperature or self.temperature, detail_temperature=None)

    @property
    def guided(self) -> bool:
        return self.guidance_scale != 1.0

    def updated(self, **given: Any) -> "SamplingConfig":
        """This config with each setting the caller gave (not None) in place of its own."""
        return replace(self, **{k: v for k, v in given.items() if v is not None})


def sampling_settings(data: Any, codebook_size: int | None = None) -> dict[str, Any]:
    """Checked sampling settings from a JSON object (a style preset's, or a model's recommended ones in
    its config.json), so a typo fails when the file is read rather than at the first painting."""
    if not isinstance(data, Mapping):
        raise SamplingError(f"sampling settings must be a JSON object, got {data!r}")
    unknown = [k for k in data if k not in SETTING_TYPES]
    if unknown:
        raise SamplingError(f"unknown sampling setting {unknown[0]!r}; the settings are {', '.join(SETTING_TYPES)}")
    settings = {}
    for key, value in data.items():
        kind = SETTING_TYPES[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not float(value).is_integer()):
            raise SamplingError(f"sampling setting {key} must be {'a whole number' if kind is int else 'a number'}, "
                                f"got {value!r}")
        settings[key] = kind(value)
    # the ranges; top_k's upper bound is the codebook where it is known (a preset may serve any model), else
    # the largest codebook a model config may declare, so no number of any size passes unchecked
    SamplingConfig(**settings).validate(codebook_size or MAX_CODEBOOK)
    return settings


def resolve_seed(seed: int) -> int:
    """-1 means 'pick one'; the chosen seed is returned so it can be reported and reused."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise SamplingError(f"seed must be a whole number (or -1 for a random one), got {seed!r}")
    if seed == -1:
        return secrets.randbelow(2**31)
    if not 0 <= seed <= MAX_SEED:
        raise SamplingError(f"seed must be between 0 and {MAX_SEED}, or -1 for a random one; got {seed}")
    return seed


def image_seeds(seed: int, num_images: int) -> list[int]:
    if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1:
        raise SamplingError(f"the number of images must be at least 1, got {num_images!r}")
    if seed + num_images - 1 > MAX_SEED:
        raise SamplingError(f"seed {seed} + {num_images} images runs past the largest seed {MAX_SEED}")
    return [seed + j for j in range(num_images)]


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """The reference's top-k: logits below the k-th largest become -inf; ties with it are kept."""
    if k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(probs: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filter on probabilities: keep the most likely codes until their mass reaches p (at least one)."""
    if p >= 1.0:
        return probs
    sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
    mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
    sorted_probs = sorted_probs.masked_fill(mass_before >= p, 0.0)
    return torch.zeros_like(probs).scatter_(-1, order, sorted_probs)


def next_token_probs(logits: torch.Tensor, cfg: SamplingConfig) -> torch.Tensor:
    """Logits [B, V] of the last position -> (unnormalised after top-p) probabilities, reference order:
    temperature, top-k, softmax, then top-p."""
    logits = top_k_filter(logits.float() / cfg.temperature, cfg.top_k)
    return top_p_filter(torch.softmax(logits, dim=-1), cfg.top_p)


def guide(logits: torch.Tensor, scale: float) -> torch.Tensor:
    """Rows [cond; uncond] (2B, V) -> uncond + scale * (cond - uncond) (B, V)."""
    cond, uncond = logits.float().chunk(2)
    return uncond + scale * (cond - uncond)


NOT_FINITE = "the model's next-token probabilities are not finite (NaN or infinite weights?)"


def draw(probs: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
    """One code per row [B], each row from its own generator, as the reference draws at batch size 1. Rows
    whose probabilities are not finite (a model with NaN weights) raise SamplingError, naming the failure."""
    if not all(finite_rows(probs)):
        raise SamplingError(NOT_FINITE)
    return draw_rows(probs, generators)


def finite_rows(probs: torch.Tensor) -> list[bool]:
    """Whether each row of probabilities [B, V] is finite. Probabilities are never negative, so a NaN or an
    infinity anywhere in a row shows in its sum: one reduction, where ``isfinite(probs).all(-1)`` took 15x
    longer (357 against 24 us for 8 rows of 16,384 codes), a tenth of an 8-row step."""
    return probs.sum(dim=-1).isfinite().tolist()


def draw_rows(probs: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
    """``draw`` for probabilities already checked to be finite."""
    return torch.cat([torch.multinomial(probs[i:i + 1], 1, generator=g)[:, 0] for i, g in enumerate(generators)])


def make_generators(seeds: Sequence[int], device: torch.device) -> list[torch.Generator]:
    return [torch.Generator(device=device).manual_seed(s) for s in seeds]


ATTEND_BUCKET = 64  # the traced CPU step attends over the filled cache rounded up to a multiple of this


class StaticStep:
    """The one-token step for ``rows`` rows with fixed input and output buffers (``GPT.forward_static``), compiled
    once and run for every step: 256 steps of a small batch are otherwise dominated by launching ~300 small
    operations each. Each row is fed at its own position (rows of the batching engine are at different steps).

    On CUDA the step is captured as a CUDA graph and replayed. On CPU it is traced into TorchScript and frozen,
    which runs the same operations without Python (a quarter of a base model's step on 2 cores); TorchScript is
    deprecated, but torch.compile's CPU backend needs a C++ compiler at run time, which users often lack. There
    attention covers the filled part of the cache rounded up to ATTEND_BUCKET positions, one trace per bucket,
    instead of the whole cache (attention is about a fifth of a base model's step). Traces depend only on the model and
    the shapes, so they are kept (``traced_step``) for later calls. Capturing runs the step at position 0 of every
    row, so build it before the prefill (or keep position 0 aside). With ``compile=False`` it runs eagerly over
    the same windows (how the logic is tested).
    """

    def __init__(self, gpt: GPT, cache: KVCache, rows: int, compile: bool):
        device = cache.keys.device
        self.gpt, self.cache = gpt, cache
        self.idx = torch.zeros(rows, 1, dtype=torch.long, device=device)
        self.pos = torch.zeros(rows, dtype=torch.long, device=device)
        self.graph, self.trace = None, compile and device.type != "cuda"
        if compile and device.type == "cuda":
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):  # warm-up outside the graph: allocator pools, cuBLAS workspaces
                for _ in range(2):
                    gpt.forward_static(self.idx, cache, self.pos)
            torch.cuda.current_stream(device).wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.logits = gpt.forward_static(self.idx, cache, self.pos)

    def __call__(self, fed: torch.Tensor, positions: Sequence[int]) -> torch.Tensor:
        """Feed ``fed`` [rows, 1], row b at position ``positions[b]``; returns the next logits [rows, V]."""
        self.idx.copy_(fed)
        self.pos.copy_(torch.tensor(positions, dtype=torch.long))
        if self.graph is not None:
            self.graph.replay()
            return self.logits
        length = attention_window(self.cache.max_len, max(positions))
        window = KVCache(self.cache.keys[:, :, :, :length], self.cache.values[:, :, :, :length])
        traced = traced_step(self.gpt, self.idx, window, self.pos) if self.trace else None
        if traced is None:
            return self.gpt.forward_static(self.idx, window, self.pos)
        return traced(self.idx, window.keys, window.values, self.pos)


class _Step(nn.Module):
    """``forward_static`` with plain tensor arguments, as tracing needs."""

    def __init__(self, gpt: GPT):
        super().__init__()
        self.gpt = gpt

    def forward(self, idx: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        return self.gpt.forward_static(idx, KVCache(keys, values), pos)


_TRACED: "weakref.WeakKeyDictionary[GPT, dict]" = weakref.WeakKeyDictionary()
_TRACING = threading.Lock()  # the studio paints on several threads: one trace per shape, made once


def attention_window(max_len: int, last: int) -> int:
    """The cache length a traced CPU step attends over when its furthest row is at position ``last``: the filled
    part rounded up to a multiple of ATTEND_BUCKET, at most the whole cache."""
    return min(max_len, -(-(last + 1) // ATTEND_BUCKET) * ATTEND_BUCKET)


def attention_windows(max_len: int) -> list[int]:
    """Every cache length a traced CPU step can attend over (one trace each)."""
    return sorted({attention_window(max_len, last) for last in range(max_len)})


def trace_ahead(gpt: GPT, rows: int, max_len: int, dtype: torch.dtype, device: torch.device) -> int:
    """Make the traces a ``rows``-row step of this model will need (one per attention window) on a scratch cache
    of the same shapes, so that the first crowd of requests does not wait for them (each takes a tenth of a
    second or more; the studio measured a fifth of its owner's time tracing while 8 clients painted).
    Each trace also runs twice there: TorchScript's executor profiles a graph's first run and optimises it on
    the next, which made a warmed model's first picture 1.6x slower than its second (bundled-large).
    Returns how many windows are traced (0 where the model cannot be traced)."""
    scratch = KVCache.empty(gpt.config, rows, dtype, device, max_len=max_len)
    idx = torch.zeros(rows, 1, dtype=torch.long, device=device)
    pos = torch.zeros(rows, dtype=torch.long, device=device)
    traced = 0
    for length in attention_windows(max_len):
        window = KVCache(scratch.keys[:, :, :, :length], scratch.values[:, :, :, :length])
        step = traced_step(gpt, idx, window, pos)
        if step is not None:
            with torch.inference_mode():
                for _ in range(2):
                    step(idx, window.keys, window.values, pos)
            traced += 1
    return traced


def traced_step(gpt: GPT, idx: torch.Tensor, cache: KVCache, pos: torch.Tensor) -> torch.jit.ScriptModule | None:
    """The frozen TorchScript trace of ``gpt``'s static step for these shapes, made on first use; None where the
    model cannot be traced (oneDNN-packed weights, as in bf16 on CPU, are opaque tensors to the tracer)."""
    key = (tuple(idx.shape), tuple(cache.keys.shape), cache.keys.dtype)
    with _TRACING:
        traces = _TRACED.setdefault(gpt, {})
        if key not in traces:
            # warnings: the deprecation notices, and the note that the trace fixes a branch on the token count
            # (always one token here)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    traced = torch.jit.trace(_Step(gpt).eval(), (idx, cache.keys, cache.values, pos),
                                             check_trace=False)
                    traces[key] = torch.jit.freeze(traced)
                except RuntimeError as exc:
                    log.debug("the static step stays eager: it cannot be traced (%s)", exc)
                    traces[key] = None
        return traces[key]
