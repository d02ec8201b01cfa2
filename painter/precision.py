"""Choosing the device and the number format a model runs in."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import torch

from painter.errors import DeviceError

log = logging.getLogger(__name__)

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
INFERENCE_MODES = ("auto", "fp32", "bf16", "fp16", "int8", "int4")
# What 'auto' tries, fastest first: the first usable mode whose quality check (serving/quality.py: next-token
# KL <= 0.02 nats and decoder PSNR >= 40 dB against fp32) passes for the model on this device.
# int4 leads only on a CPU where its kernel beats int8's at every batch the engine runs (int4_pays).
AUTO_ORDER = {"cpu": ("int4", "int8", "bf16", "fp32"), "cuda": ("bf16", "fp16", "fp32")}
INT4_MARGIN = 1.2  # int4 must be this much faster than int8, at batch 1 and at the CPU engine's 8 rows


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
        return None if int4_available() else "this PyTorch build has no int4 CPU kernels"
    raise DeviceError(f"unknown precision {mode!r}; choose one of {', '.join(INFERENCE_MODES)}")


def auto_candidates(device: torch.device) -> list[str]:
    """The modes 'auto' may pick on ``device``, fastest first: AUTO_ORDER's usable ones, ending with fp32."""
    modes = []
    for mode in AUTO_ORDER[device.type]:
        reason = mode_usable(mode, device)
        if reason is None and mode == "int4" and not int4_pays():
            reason = f"its kernel is not {INT4_MARGIN}x faster than int8's on this CPU at batch 1 and 8"
        if reason is None:
            modes.append(mode)
        else:
            log.info("auto precision: skipping %s (%s)", mode, reason)
    return modes


@functools.cache
def int4_pays() -> bool:
    """Whether int4 beats int8 here by INT4_MARGIN at 1 and at 8 rows (a 768 -> 3072 layer, the best of 5
    runs of 20 calls each; once per process). Its kernel reads half the bytes but unpacks in bf16, which CPUs
    without native bf16 do slowly, and its cost grows with the rows where int8's stays flat."""
    import time

    from painter.models.packed import Int4Linear, Int8Linear, int4_available, int8_available

    if not (int4_available() and int8_available()):
        return False
    torch.manual_seed(0)
    linear = torch.nn.Linear(768, 3072)
    layers = {"int4": Int4Linear(linear), "int8": Int8Linear(linear)}
    for rows in (1, 8):
        x = torch.randn(rows, 768)
        best = {}
        with torch.inference_mode():
            for name, layer in layers.items():
                layer(x)
                times = []
                for _ in range(5):
                    start = time.perf_counter()
                    for _ in range(20):
                        layer(x)
                    times.append(time.perf_counter() - start)
                best[name] = min(times)
        log.info("int4 against int8 at %d rows: %.2f against %.2f ms", rows, best["int4"] * 50, best["int8"] * 50)
        if best["int4"] * INT4_MARGIN > best["int8"]:
            return False
    return True


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
