"""Linear layers prepacked for oneDNN, for inference on CPU.

Sampling feeds one token per row, so every Linear of the GPT is a matrix-vector product bound by memory
bandwidth. PyTorch's default CPU path (MKL GEMV) reads the weights at 13-20 GB/s on this project's 2-core
machine; oneDNN reading a weight it has reordered once reaches 25-30 GB/s, at batch 1 and 4 alike, with the
same fp32 arithmetic (results differ by rounding only). This is the kernel Inductor uses for CPU linears.
"""

from __future__ import annotations

import logging

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


def pack_linears(module: nn.Module, batch_hint: int = 4) -> int:
    """Replace every CPU fp32/bf16 ``nn.Linear`` inside ``module`` by a PackedLinear; return how many.

    Does nothing (returns 0) where oneDNN is not built into this PyTorch.
    """
    if not onednn_available():
        log.info("oneDNN is not available in this PyTorch build; keeping plain Linear layers")
        return 0
    count = 0
    for name, child in list(module.named_children()):
        if (isinstance(child, nn.Linear) and child.weight.device.type == "cpu"
                and child.weight.dtype in (torch.float32, torch.bfloat16)):
            setattr(module, name, PackedLinear(child, batch_hint))
            count += 1
        else:
            count += pack_linears(child, batch_hint)
    return count
