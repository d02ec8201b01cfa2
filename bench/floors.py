"""Hardware floors of a base-size 256x256 generation on this machine: how fast the kernels Painter can use
run here, and so how fast any engine built on them can paint.

    python -m bench.floors

Two costs dominate and neither is Python overhead:

* the VQGAN decode is compute-bound: its convolutions' FLOPs (counted on the real f16 config) over the rate
  this CPU reaches on the decoder's dominant layer (3x3, 128 -> 128 channels at 256x256, channels-last), in
  fp32, bf16 and int8 (oneDNN through PyTorch's x86 quantized engine);
* sampling is bound by reading the GPT's weights once per token: the base GPT's Linear layers (12 blocks of
  query/key/value, projection and MLP, plus the head), cache-cold, through fbgemm's dynamic int8 kernel (what
  the int8 mode runs), oneDNN's int8 kernel and ATen's weight-only int8 kernel, against the memory read
  bandwidth.

The floor of prompt -> image at batch 1 is the int8 weight reads of 256 steps plus the bf16 decode; attention,
sampling and PNG encoding come on top.
"""

from __future__ import annotations

import time
import warnings
from typing import Callable

import torch
from torch import nn

from bench.engine import CONFIGS, STEPS, read_bandwidth_gbs
from painter.models import VQGAN, VQGANConfig
from painter.models.packed import Int8Linear

TARGET_S = 1.5  # issue 6: base, batch 1, prompt -> PNG


def seconds(fn: Callable[[], object], repeat: int) -> float:
    """Best of ``repeat`` timed calls, after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def decoder_conv_flops(config: VQGANConfig) -> int:
    """FLOPs of every convolution of one decode, from output shapes (on the meta device: nothing computed)."""
    flops = 0

    def count(module: nn.Module, _inputs, output: torch.Tensor) -> None:
        nonlocal flops
        kh, kw = module.kernel_size
        flops += 2 * output.numel() * module.in_channels // module.groups * kh * kw

    with torch.device("meta"):
        vqgan = VQGAN(config)
        for module in vqgan.modules():
            if isinstance(module, nn.Conv2d):
                module.register_forward_hook(count)
        vqgan.decode(torch.zeros(1, config.num_codes, dtype=torch.long))
    return flops


def conv_rates(size: int = 256, channels: int = 128, repeat: int = 3) -> dict[str, float]:
    """GFLOP/s of the decoder's dominant convolution in each arithmetic."""
    flops = 2 * size * size * channels * channels * 9
    conv = nn.Conv2d(channels, channels, 3, padding=1).eval()
    x = torch.randn(1, channels, size, size).contiguous(memory_format=torch.channels_last)
    rates = {}
    with torch.inference_mode():
        for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            c, xx = conv.to(dtype).to(memory_format=torch.channels_last), x.to(dtype)
            rates[name] = flops / seconds(lambda: c(xx), repeat) / 1e9
        rates["int8"] = flops / seconds(int8_conv(conv.float(), x), repeat) / 1e9
    return rates


def int8_conv(conv: nn.Conv2d, x: torch.Tensor) -> Callable[[], torch.Tensor]:
    """The same convolution with int8 weights (per channel) and uint8 activations (per tensor)."""
    import torch.ao.nn.quantized as nnq

    torch.backends.quantized.engine = "x86"
    scales = (conv.weight.detach().abs().amax(dim=(1, 2, 3)) / 127).double()
    weight = torch.quantize_per_channel(conv.weight.detach(), scales, torch.zeros_like(scales, dtype=torch.long),
                                        0, torch.qint8)
    qconv = nnq.Conv2d(conv.in_channels, conv.out_channels, 3, padding=1)
    qconv.set_weight_bias(weight, conv.bias.detach())
    span = float(x.max() - x.min())
    qconv.scale, qconv.zero_point = span / 255, 128
    qx = torch.quantize_per_tensor(x, span / 255, 128, torch.quint8)
    return lambda: qconv(qx)


def base_linears(n_embd: int, n_layer: int, head: int = 16384) -> list[nn.Linear]:
    shapes = [(n_embd, 3 * n_embd), (n_embd, n_embd), (n_embd, 4 * n_embd), (4 * n_embd, n_embd)] * n_layer
    return [nn.Linear(k, n) for k, n in shapes + [(n_embd, head)]]


def onednn_int8(linear: nn.Linear) -> Callable[[torch.Tensor], torch.Tensor]:
    """oneDNN's int8 linear with activations quantized per call (per tensor, uint8), as a dynamic kernel would."""
    weight = linear.weight.detach()
    scales = (weight.abs().amax(dim=1) / 127).clamp_min(1e-12)
    packed = torch.ops.onednn.qlinear_prepack(torch.round(weight / scales[:, None]).to(torch.int8), None)
    zeros, bias = torch.zeros(len(scales), dtype=torch.long), linear.bias.detach()

    def run(x: torch.Tensor) -> torch.Tensor:
        lo, hi = x.min().clamp(max=0), x.max().clamp(min=0)
        scale = ((hi - lo) / 255).clamp_min(1e-8)
        zero = torch.round(-lo / scale).long()
        qx = torch.clamp(torch.round(x / scale) + zero, 0, 255).to(torch.uint8)
        return torch.ops.onednn.qlinear_pointwise.tensor(qx, scale, zero, packed, scales, zeros, bias, 1.0, 0,
                                                         torch.float32, "none", [], "")
    return run


def weight_only_int8(linear: nn.Linear) -> Callable[[torch.Tensor], torch.Tensor]:
    """ATen's weight-only int8 matmul (what torch.compile lowers weight-only quantization to on CPU), with
    bf16 activations."""
    weight = linear.weight.detach()
    scales = (weight.abs().amax(dim=1) / 127).clamp_min(1e-12)
    qweight = torch.round(weight / scales[:, None]).to(torch.int8).contiguous()
    scales, bias = scales.bfloat16(), linear.bias.detach().bfloat16()
    return lambda x: torch.ops.aten._weight_int8pack_mm(x.bfloat16(), qweight, scales) + bias


def weight_read_ms(kernels: list[Callable[[torch.Tensor], torch.Tensor]], widths: list[int], batch: int) -> float:
    """One sampling step's Linear layers in sequence (all the weights, far larger than the caches)."""
    xs = {w: torch.randn(batch, w) for w in set(widths)}

    def step() -> None:
        for kernel, width in zip(kernels, widths):
            kernel(xs[width])
    return seconds(step, 10) * 1e3


def main() -> None:
    warnings.simplefilter("ignore", UserWarning)  # quantized tensors are deprecated upstream; torch is pinned
    torch.manual_seed(0)
    bandwidth = read_bandwidth_gbs()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, read bandwidth {bandwidth:.1f} GB/s\n")

    flops = decoder_conv_flops(VQGANConfig())
    rates = conv_rates()
    print(f"VQGAN decode 256x256 (f16 config): {flops / 1e9:.0f} GFLOP of convolutions")
    print("| arithmetic | 3x3 conv GFLOP/s | decode floor s |\n|---|---|---|")
    for name, rate in rates.items():
        print(f"| {name} | {rate:.0f} | {flops / 1e9 / rate:.2f} |")

    base = CONFIGS["base"]
    linears = base_linears(base["n_embd"], base["n_layer"])
    widths = [linear.in_features for linear in linears]
    int8_bytes = sum(linear.weight.numel() for linear in linears)
    kernels = {"fbgemm dynamic int8 (Painter's int8 mode)": [Int8Linear(linear) for linear in linears],
               "oneDNN int8": [onednn_int8(linear) for linear in linears],
               "ATen weight-only int8, bf16 activations": [weight_only_int8(linear) for linear in linears]}
    print(f"\nbase GPT Linear weights: {int8_bytes / 1e6:.0f} MB in int8; at {bandwidth:.1f} GB/s one step needs "
          f"{int8_bytes / bandwidth / 1e6:.2f} ms, {STEPS} steps {STEPS * int8_bytes / bandwidth / 1e9:.2f} s")
    print("| kernel | batch | ms/step | GB/s | 256 steps s/img |\n|---|---|---|---|---|")
    floor_tokens = float("inf")
    for name, layer_kernels in kernels.items():
        for batch in (1, 4):
            ms = weight_read_ms(layer_kernels, widths, batch)
            per_image = STEPS * ms / 1e3 / batch
            print(f"| {name} | {batch} | {ms:.2f} | {int8_bytes / ms / 1e6:.1f} | {per_image:.2f} |")
            if batch == 1:
                floor_tokens = min(floor_tokens, per_image)
    floor = floor_tokens + flops / 1e9 / rates["bf16"]
    print(f"\nbase, batch 1: int8 weight reads {floor_tokens:.2f} s + bf16 decode {flops / 1e9 / rates['bf16']:.2f} s "
          f"= {floor:.2f} s before attention, sampling and PNG (target {TARGET_S} s)")


if __name__ == "__main__":
    main()
