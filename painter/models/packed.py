"""Linear layers prepacked for inference on CPU: oneDNN (fp32/bf16) and fbgemm dynamic int8.

Sampling feeds one token per row, so every Linear of the GPT is a matrix-vector product bound by memory
bandwidth. PyTorch's default CPU path (MKL GEMV) reads the weights at 13-20 GB/s on this project's 2-core
machine; oneDNN reading a weight it has reordered once reaches 25-30 GB/s, at batch 1 and 4 alike, with the
same fp32 arithmetic (results differ by rounding only). This is the kernel Inductor uses for CPU linears.

Int8 goes further: a quarter of fp32's bytes per weight. Weights are quantized once per output channel
(symmetric, scale = max|w| / 127); each call quantizes its activations on the fly (fbgemm's dynamic linear),
accumulates in int32 and returns fp32. fbgemm quantizes a whole input with one range, so a row's result
would depend on the other rows of its batch (and a picture on who else paints at the same time); each row is
therefore first mapped onto [0, 1] by its own minimum and span, which the output undoes exactly:
W x + b = span * (W x') + lo * W 1 + b with x' = (x - lo) / span. Every row then quantizes as it would alone.

Int4 halves int8's bytes again: weights only, in groups of INT4_GROUP inputs per output channel (asymmetric,
16 levels between the group's minimum and maximum), multiplied by ATen's CPU kernel with bf16 activations
(in fp32 it falls back to a path 30 times slower). No activation is quantized, so rows never interact.
Its cost grows with the rows where int8's stays flat (base's Linears per step, AVX-512 CPU: int4 2.8 ms at one
row and 9.7 ms at eight, int8 5.3 ms at both), so the int4 mode keeps both packings of every layer
(``BatchAwareLinear``, the memory of both) and each step takes int4 up to INT4_MAX_ROWS rows, int8 above:
one user gets int4's latency and a crowd int8's throughput.
"""

from __future__ import annotations

import functools
import logging
import warnings
from pathlib import Path
from typing import Callable

import torch
from torch import nn

log = logging.getLogger(__name__)


def onednn_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


class PackedLinear(nn.Module):
    """Inference-only stand-in for an ``nn.Linear``: holds the weight in oneDNN's blocked layout.

    The packed weight is not a parameter: a packed model cannot be trained or saved, only run.
    """

    def __init__(self, linear: nn.Linear, batch_hint: int):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.packed_weight = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), batch_hint)
        self.bias = None if linear.bias is None else linear.bias.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x.contiguous(), self.packed_weight, self.bias, "none", [], "")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, oneDNN-packed"


def int8_available() -> bool:
    """fbgemm (x86 with AVX2 or better) is built in; elsewhere int8 would fall back to slow reference kernels."""
    return any(engine in torch.backends.quantized.supported_engines for engine in ("x86", "fbgemm"))


@functools.cache
def vnni() -> bool:
    """Whether fbgemm can take full-range (8-bit) activations: with VNNI it multiplies u8 x s8 into int32;
    without it (AVX2 only) pairs of products are summed in int16 and saturate, which costs 15% relative error
    on a layer (measured), so activations must be quantized to 7 bits (reduce_range) there: 1.7%."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False  # unknown: the safe range
    return any(flag in flags.split() for flag in ("avx512_vnni", "avx_vnni", "amx_int8"))


class Int8Linear(nn.Module):
    """Inference-only stand-in for an fp32 ``nn.Linear`` with int8 weights (per output channel) and
    activations quantized per call and per row (see the module's docstring)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach().float()
        scales = (weight.abs().amax(dim=1) / 127).clamp_min(1e-12).double()
        with warnings.catch_warnings():  # quantized tensors are deprecated upstream; torch is pinned here
            warnings.simplefilter("ignore", UserWarning)
            qweight = torch.quantize_per_channel(weight, scales, torch.zeros_like(scales, dtype=torch.long), 0,
                                                 torch.qint8)
        self.packed = torch.ops.quantized.linear_prepack(qweight, None)
        self.row_sums = qweight.dequantize().sum(dim=1)  # W 1, what a row's shift adds to every output
        self.bias = torch.zeros(self.out_features) if linear.bias is None else linear.bias.detach().float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        lo, hi = torch.aminmax(x, dim=-1, keepdim=True)
        span = (hi - lo).clamp_min(1e-30)  # a constant row maps to zeros, which quantize exactly
        y = torch.ops.quantized.linear_dynamic((x - lo) / span, self.packed, not vnni())
        return torch.addcmul(self.bias, lo, self.row_sums) + y * span

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


INT4_GROUP = 32  # inputs per scale: 7.9% relative error per layer on random weights, against 10% at 128


def int4_available() -> bool:
    return hasattr(torch, "_weight_int4pack_mm_for_cpu") and hasattr(torch, "_convert_weight_to_int4pack_for_cpu")


def int4_groups(weight: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes 0..15 [N, K] (int32) and the kernel's bf16 (scale, zero) pairs [K / group, N, 2], where a weight
    is (code - 8) * scale + zero, i.e. code * scale + the group's minimum."""
    n, k = weight.shape
    groups = weight.float().reshape(n, k // group, group)
    lo, hi = groups.amin(-1, keepdim=True), groups.amax(-1, keepdim=True)
    scale = ((hi - lo) / 15).clamp_min(1e-12)
    codes = torch.clamp(torch.round((groups - lo) / scale), 0, 15).to(torch.int32).reshape(n, k)
    pairs = torch.stack([scale.squeeze(-1), (lo + 8 * scale).squeeze(-1)], -1).transpose(0, 1)
    return codes, pairs.contiguous().bfloat16()


class Int4Linear(nn.Module):
    """Inference-only stand-in for an fp32 ``nn.Linear`` with group-wise int4 weights and bf16 activations
    (see the module's docstring); fp32 in and out, like the layer it replaces."""

    def __init__(self, linear: nn.Linear, group: int = INT4_GROUP):
        super().__init__()
        self.in_features, self.out_features, self.group = linear.in_features, linear.out_features, group
        if self.in_features % group:
            raise ValueError(f"int4 needs in_features ({self.in_features}) to be a multiple of {group}")
        codes, self.scales_zeros = int4_groups(linear.weight.detach(), group)
        self.packed = torch._convert_weight_to_int4pack_for_cpu(codes, 8)  # 8 inner k-tiles, as ATen's tests
        self.bias = None if linear.bias is None else linear.bias.detach().float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).to(torch.bfloat16)
        y = torch._weight_int4pack_mm_for_cpu(flat, self.packed, self.group, self.scales_zeros).float()
        y = y.view(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int4 (groups of {self.group})"


INT4_MAX_ROWS = 2  # rows per call up to which int4 is faster than int8 (the engine's steps run 1, 2, 4, 8 rows)


class BatchAwareLinear(nn.Module):
    """Both packings of one layer, chosen per call by its rows (see the module's docstring). A traced step is
    built per row count, so each trace holds one of the two kernels."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.few, self.many = Int4Linear(linear), Int8Linear(linear)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // self.in_features
        return self.few(x) if rows <= INT4_MAX_ROWS else self.many(x)

    def extra_repr(self) -> str:
        return f"int4 up to {INT4_MAX_ROWS} rows, int8 above"


def replace_linears(module: nn.Module, make: Callable[[nn.Linear], nn.Module]) -> int:
    """Swap every CPU ``nn.Linear`` inside ``module`` for ``make(linear)``; return how many were swapped."""
    count = 0
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Linear) and child.weight.device.type == "cpu":
            setattr(module, name, make(child))
            count += 1
        else:
            count += replace_linears(child, make)
    return count


def pack_linears(module: nn.Module, batch_hint: int = 4) -> int:
    """Replace every CPU ``nn.Linear`` inside ``module`` (fp32 or bf16: oneDNN has no fast fp16 on CPU) by a
    PackedLinear; return how many.

    Does nothing (returns 0) where oneDNN is not built into this PyTorch.
    """
    if not onednn_available():
        log.info("oneDNN is not available in this PyTorch build; keeping plain Linear layers")
        return 0
    return replace_linears(module, lambda linear: PackedLinear(linear, batch_hint))


def quantize_linears(module: nn.Module, bits: int = 8) -> int:
    """Replace every CPU ``nn.Linear`` inside ``module`` by an Int8Linear (bits 8) or a BatchAwareLinear
    (bits 4: int4 for few rows, int8 for many); return how many."""
    if bits == 4:
        if not (int4_available() and int8_available()):
            raise RuntimeError("this PyTorch build lacks the int4 or the fbgemm int8 CPU kernels")
        return replace_linears(module, BatchAwareLinear)
    if not int8_available():
        raise RuntimeError("this PyTorch build has no fbgemm int8 kernels")
    return replace_linears(module, Int8Linear)
