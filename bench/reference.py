"""The reference's sampling loop, re-implemented as EasyNLP's article describes it, to measure against.

256 steps; each step re-runs the WHOLE sequence through the GPT (no key/value cache, gradients tracked, as
the reference does), divides the last logits by the temperature, keeps values >= the k-th largest, softmax,
``torch.multinomial(probs, 1)``, append. The RNG is the global one, seeded once before the loop.
"""

from __future__ import annotations

import torch

from painter.models import GPT


def reference_sample(gpt: GPT, text_ids: torch.Tensor, steps: int, top_k: int = 100, temperature: float = 1.0,
                     seed: int | None = None) -> torch.Tensor:
    """text_ids [B, 32] -> image codes [B, steps]."""
    if seed is not None:
        torch.manual_seed(seed)
    cidx = text_ids
    for _ in range(steps):
        logits = gpt(cidx)[:, -1, :] / temperature
        v, _ = torch.topk(logits, top_k)
        out = logits.clone()
        out[out < v[:, [-1]]] = -float("inf")
        probs = torch.nn.functional.softmax(out, dim=-1)
        ix = torch.multinomial(probs, num_samples=1)
        cidx = torch.cat((cidx, ix), dim=1)
    return cidx[:, text_ids.shape[1]:]
