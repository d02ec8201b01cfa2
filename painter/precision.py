"""Choosing the device and the number format a model runs in."""

from __future__ import annotations

import torch

from painter.errors import DeviceError

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' -> CUDA when present, else CPU; an explicit device must exist."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise DeviceError(f"unknown device {device!r}; use auto, cpu or cuda[:N]") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {device!r} was asked for but this machine has no CUDA GPU; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"device {device!r} does not exist: {torch.cuda.device_count()} GPU(s) present")
    elif dev.type != "cpu":
        raise DeviceError(f"device type {dev.type!r} is not supported; use auto, cpu or cuda[:N]")
    return dev


def resolve_dtype(precision: str, device: torch.device) -> torch.dtype:
    if precision not in PRECISIONS:
        raise DeviceError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "fp16" and device.type != "cuda":
        raise DeviceError("fp16 needs a CUDA GPU (CPUs have no fast fp16 matmul); use bf16 or fp32 on CPU")
    return PRECISIONS[precision]


def training_autocast(precision: str, device: torch.device):
    """The autocast context for a training forward pass: 'auto' is bf16 where the hardware has it
    (CUDA with bf16, or a CPU with AVX512-BF16/AMX), else fp32; fp16 is CUDA only (with a GradScaler)."""
    import contextlib

    if precision == "auto":
        if device.type == "cuda":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = "bf16" if torch.backends.cpu.get_cpu_capability() in ("AVX512", "AVX512_BF16", "AMX") else "fp32"
    if precision == "fp32":
        return contextlib.nullcontext(), "fp32"
    dtype = resolve_dtype(precision, device)
    return torch.autocast(device.type, dtype=dtype), precision
