"""Choosing the device and the number format a model runs in."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from painter.errors import DeviceError

log = logging.getLogger(__name__)

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
INFERENCE_MODES = ("auto", "fp32", "bf16", "fp16", "int8", "int4")
# What 'auto' tries, fastest first: the first usable mode whose quality check (serving/quality.py: next-token
# KL <= 0.02 nats and decoder PSNR >= 40 dB against fp32) passes for the model on this device.
# int4 (int4 for steps of few rows, int8 for more) leads only on a CPU with native bf16, which its kernel
# needs to beat int8's: decided from the hardware, not timed, so the same machine and model always get the
# same mode (and the same pictures for a seed), however busy the machine is at the first load.
AUTO_ORDER = {"cpu": ("int4", "int8", "bf16", "fp32"), "cuda": ("bf16", "fp16", "fp32")}


def cpu_description() -> str:
    """The CPU's model name and its widest vector extension, which speed figures depend on (benches and model
    cards print it beside every number)."""
    try:
        text = open("/proc/cpuinfo", encoding="utf-8").read()
    except OSError:
        return "unknown CPU"
    name = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")),
                "unknown CPU")
    flags = set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))
    vector = next((f for f in ("avx512_bf16", "avx512_vnni", "avx2") if f in flags), "")
    return f"{name}, {vector.upper()}" if vector else name


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
    reason = mode_usable("fp16", device) if precision == "fp16" else None
    if reason:
        raise DeviceError(f"{reason}; use bf16 or fp32 on CPU")
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


@dataclass(frozen=True)
class InferencePrecision:
    """How a loaded model runs: the GPT's mode (int8 means int8 Linear layers with fp32 elsewhere, the key/value
    cache included) and the VQGAN decoder's dtype, which may differ (on CPU: int8 GPT, bf16 decoder)."""

    mode: str
    gpt_dtype: torch.dtype
    decoder_dtype: torch.dtype

    @property
    def quantized(self) -> bool:
        """int8 or int4 Linear layers (CPU): fp32 around them, and a traceable step."""
        return self.mode in ("int8", "int4")


def native_bf16(device: torch.device) -> bool:
    """bf16 is only worth it with hardware bf16 math (CPU: AVX512-BF16 or AMX; GPU: Ampere or newer)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def mode_usable(mode: str, device: torch.device) -> str | None:
    """None when ``mode`` can run well on ``device``, else the reason it cannot."""
    from painter.models.packed import int4_available, int8_available  # models depend on precision, not back

    if mode == "fp32":
        return None
    if mode == "fp16":
        return None if device.type == "cuda" else "fp16 needs a CUDA GPU (CPUs have no fast fp16 matmul)"
    if mode == "bf16":
        return None if native_bf16(device) else f"this {device.type.upper()} has no native bf16 arithmetic"
    if mode == "int8":
        if device.type != "cpu":
            return "int8 is the CPU mode; on a GPU use bf16 or fp16"
        return None if int8_available() else "this PyTorch build has no fbgemm int8 kernels (x86 CPUs only)"
    if mode == "int4":
        if device.type != "cpu":
            return "int4 is a CPU mode; on a GPU use bf16 or fp16"
        if not int4_available():
            return "this PyTorch build has no int4 CPU kernels"
        return None if int8_available() else ("this PyTorch build has no fbgemm int8 kernels, which int4 uses for "
                                              "batches (x86 CPUs only)")
    raise DeviceError(f"unknown precision {mode!r}; choose one of {', '.join(INFERENCE_MODES)}")


def auto_candidates(device: torch.device) -> list[str]:
    """The modes 'auto' may pick on ``device``, fastest first: AUTO_ORDER's usable ones, ending with fp32."""
    modes = []
    for mode in AUTO_ORDER[device.type]:
        reason = mode_usable(mode, device)
        if reason is None and mode == "int4" and not native_bf16(device):
            reason = "without native bf16 its kernel is slower than int8's on this CPU"
        if reason is None:
            modes.append(mode)
        else:
            log.info("auto precision: skipping %s (%s)", mode, reason)
    return modes


def resolve_inference(mode: str, device: torch.device) -> InferencePrecision:
    """What running in an explicit ``mode`` means on ``device``, where it must be usable ('auto' depends on the
    model too: Painter.from_pretrained resolves it with auto_candidates and the model's quality check)."""
    if mode not in INFERENCE_MODES:
        raise DeviceError(f"unknown precision {mode!r}; choose one of {', '.join(INFERENCE_MODES)}")
    if mode == "auto":
        raise ValueError("'auto' is resolved per model by Painter.from_pretrained")
    reason = mode_usable(mode, device)
    if reason:
        raise DeviceError(f"precision {mode} is not available here: {reason}; use --precision auto or fp32")
    if mode in ("int8", "int4"):
        # A bf16 key/value cache would halve its reads, but CPU attention in bf16 is twice as slow as in fp32
        # at these sizes (base: 2.9 s against 2.2 s of tokens per image), so only the decoder narrows.
        return InferencePrecision(mode, torch.float32, torch.bfloat16 if native_bf16(device) else torch.float32)
    return InferencePrecision(mode, PRECISIONS[mode], PRECISIONS[mode])
