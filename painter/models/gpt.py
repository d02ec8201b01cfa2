"""The minGPT transformer of the pai-painter checkpoints, with a preallocated key/value cache.

Parameter names follow the reference exactly (``tok_emb``, ``pos_emb``, ``blocks.N.attn.{key,query,value,proj}``,
``mlp.0``/``mlp.2``, ``ln_f``, bias-free ``head``) so a checkpoint loads with ``strict=True``. The reference
re-runs the whole sequence for each sampled token; here a prefill fills the cache with the text tokens and
every later call feeds one new token per row, which is ~30x less work for 256 image tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn


@dataclass(frozen=True)
class GPTConfig:
    """Sizes of the transformer; the defaults are those of pai-painter-base-zh."""

    vocab_size: int = 37512
    block_size: int = 288
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    embd_pdrop: float = 0.0
    resid_pdrop: float = 0.0
    attn_pdrop: float = 0.0
    n_unmasked: int = 0

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


@dataclass
class KVCache:
    """Keys and values of every layer for a batch, allocated once for the whole sequence.

    ``length`` is how many positions are filled; each forward writes its new positions in place, so a
    sampling loop allocates nothing per step.
    """

    keys: torch.Tensor  # [n_layer, B, H, max_len, head_dim]
    values: torch.Tensor
    length: int = 0

    @classmethod
    def empty(cls, config: GPTConfig, batch: int, dtype: torch.dtype, device: torch.device,
              max_len: int | None = None) -> "KVCache":
        # Zeros, not torch.empty: the fixed-shape step attends over unfilled positions too, and a masked weight
        # of 0 times a NaN left in uninitialised memory is still NaN.
        shape = (config.n_layer, batch, config.n_head, max_len or config.block_size, config.head_dim)
        return cls(torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device))

    @property
    def max_len(self) -> int:
        return self.keys.shape[3]


def attention_mask(start: int, length: int, n_unmasked: int, device: torch.device) -> torch.Tensor | None:
    """Boolean mask [length, start+length] for queries at positions start.. (None when plain causal
    attention is implied: a single new token sees everything before it)."""
    total = start + length
    if length == 1 and start >= n_unmasked:
        return None
    query_pos = torch.arange(start, total, device=device)[:, None]
    key_pos = torch.arange(total, device=device)[None, :]
    mask = key_pos <= query_pos
    if n_unmasked:
        mask |= (query_pos < n_unmasked) & (key_pos < n_unmasked)
    return mask


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        if config.n_embd % config.n_head:
            raise ValueError(f"n_embd {config.n_embd} is not a multiple of n_head {config.n_head}")
        self.key = nn.Linear(config.n_embd, config.n_embd)
        self.query = nn.Linear(config.n_embd, config.n_embd)
        self.value = nn.Linear(config.n_embd, config.n_embd)
        self.proj = nn.Linear(config.n_embd, config.n_embd)
        self.resid_drop = nn.Dropout(config.resid_pdrop)
        self.attn_pdrop = config.attn_pdrop
        self.n_head = config.n_head
        self.n_unmasked = config.n_unmasked
        self.qkv: nn.Module | None = None  # set by fuse_qkv() for inference

    def fuse_qkv(self) -> None:
        """Inference only: one Linear for query, key and value. A one-token step is bound by weight reads and
        per-call overhead, and one [3E, E] product costs about half of three [E, E] ones. Idempotent."""
        if self.qkv is not None:
            return
        qkv = nn.Linear(self.query.in_features, 3 * self.query.out_features, device=self.query.weight.device,
                        dtype=self.query.weight.dtype)
        with torch.no_grad():
            qkv.weight.copy_(torch.cat([self.query.weight, self.key.weight, self.value.weight]))
            qkv.bias.copy_(torch.cat([self.query.bias, self.key.bias, self.value.bias]))
        self.qkv = qkv
        del self.query, self.key, self.value

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, e = x.shape
        return x.view(b, t, self.n_head, e // self.n_head).transpose(1, 2)

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, t, e = x.shape
        if self.qkv is None:
            return self._heads(self.query(x)), self._heads(self.key(x)), self._heads(self.value(x))
        if t == 1:  # one token per row (every sampling step): the fused output is already [B, 3, H, 1, D]
            return self.qkv(x).view(b, 3, self.n_head, 1, e // self.n_head).unbind(1)
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        return self._heads(q), self._heads(k), self._heads(v)

    def _out(self, y: torch.Tensor) -> torch.Tensor:
        b, h, t, d = y.shape
        return self.resid_drop(self.proj(y.transpose(1, 2).reshape(b, t, h * d)))

    def forward(self, x: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor] | None = None,
                start: int = 0) -> torch.Tensor:
        t = x.shape[1]
        q, k, v = self._qkv(x)
        if cache is not None:
            k_buf, v_buf = cache
            k_buf[:, :, start:start + t] = k
            v_buf[:, :, start:start + t] = v
            k, v = k_buf[:, :, :start + t], v_buf[:, :, :start + t]
        mask = attention_mask(start, t, self.n_unmasked, x.device)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                           dropout_p=self.attn_pdrop if self.training else 0.0)
        return self._out(y)

    def forward_static(self, x: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor], pos: torch.Tensor,
                       visible: torch.Tensor) -> torch.Tensor:
        """One token per row, row b at position ``pos[b]`` (a [B] device tensor), with shapes that never
        change: each row's key/value are written at its own position and attention covers the whole cache,
        ``visible`` [B, 1, 1, L] masking what a row has not filled. A CUDA graph can capture this once and
        replay it for every step, and rows at different steps (continuous batching) share one call."""
        q, k, v = self._qkv(x)
        k_buf, v_buf = cache
        rows = torch.arange(x.shape[0], device=x.device)
        k_buf[rows, :, pos] = k[:, :, 0]
        v_buf[rows, :, pos] = v[:, :, 0]
        return self._out(F.scaled_dot_product_attention(q, k_buf, v_buf, attn_mask=visible))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(config.n_embd)
        self.ln2 = nn.LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.mlp = nn.Sequential(
            nn.Linear(config.n_embd, 4 * config.n_embd),
            nn.GELU(),
            nn.Linear(4 * config.n_embd, config.n_embd),
            nn.Dropout(config.resid_pdrop),
        )

    def forward(self, x: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor] | None = None,
                start: int = 0) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), cache, start)
        return x + self.mlp(self.ln2(x))

    def forward_static(self, x: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor], pos: torch.Tensor,
                       visible: torch.Tensor) -> torch.Tensor:
        x = x + self.attn.forward_static(self.ln1(x), cache, pos, visible)
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """Predicts the next image code given text tokens and the image codes so far."""

    def __init__(self, config: GPTConfig, img_vocab_size: int):
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.n_embd)
        self.pos_emb = nn.Parameter(torch.zeros(1, config.block_size, config.n_embd))
        self.drop = nn.Dropout(config.embd_pdrop)
        self.blocks = nn.Sequential(*[Block(config) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.head = nn.Linear(config.n_embd, img_vocab_size, bias=False)
        self.apply(_init_weights)
        nn.init.normal_(self.pos_emb, std=0.02)
        self.gradient_checkpointing = False  # recompute block activations in backward to save memory

    def _embed(self, idx: torch.Tensor, start: int) -> torch.Tensor:
        t = idx.shape[1]
        if start + t > self.config.block_size:
            raise ValueError(f"sequence of {start + t} tokens exceeds block_size {self.config.block_size}")
        return self.drop(self.tok_emb(idx) + self.pos_emb[:, start:start + t])

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Full forward over ``idx`` [B, T] -> logits [B, T, img_vocab] (training, reference recompute)."""
        x = self._embed(idx, 0)
        for block in self.blocks:
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return self.head(self.ln_f(x))

    def forward_cached(self, idx: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Append ``idx`` [B, T] at ``cache.length`` and return logits of the last position only [B, V].

        The head is applied to one position, because only the next token is ever needed when sampling.
        """
        start = cache.length
        if start + idx.shape[1] > cache.max_len:
            raise ValueError(f"cache holds {cache.max_len} positions, asked for {start + idx.shape[1]}")
        x = self._embed(idx, start)
        for layer, block in enumerate(self.blocks):
            x = block(x, (cache.keys[layer], cache.values[layer]), start)
        cache.length = start + idx.shape[1]
        return self.head(self.ln_f(x[:, -1]))

    def forward_static(self, idx: torch.Tensor, cache: KVCache, pos: torch.Tensor) -> torch.Tensor:
        """The fixed-shape twin of ``forward_cached`` for one token per row (idx [B, 1]), row b at position
        ``pos[b]`` (a [B] long tensor on the model's device): no Python int depends on the step, so the call
        can be graph-captured. Each row's positions before its own must be filled; the caller advances ``pos``
        (and ``cache.length``, which the cache's other users read)."""
        x = self.drop(self.tok_emb(idx) + self.pos_emb[0].index_select(0, pos).unsqueeze(1))
        visible = (torch.arange(cache.max_len, device=idx.device) <= pos[:, None]).view(len(pos), 1, 1, -1)
        for layer, block in enumerate(self.blocks):
            x = block.forward_static(x, (cache.keys[layer], cache.values[layer]), pos, visible)
        return self.head(self.ln_f(x[:, -1]))


def fuse_qkv(module: nn.Module) -> nn.Module:
    """Fuse every attention layer inside ``module`` (a GPT or one of its blocks) for inference (see
    CausalSelfAttention.fuse_qkv); fused layers keep no query/key/value weights, so they cannot be saved in the
    checkpoint layout."""
    for attention in module.modules():
        if isinstance(attention, CausalSelfAttention):
            attention.fuse_qkv()
    return module


def _init_weights(module: nn.Module) -> None:
    """minGPT's initialisation; only used for models trained from scratch and random bench models."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def reference_attention_mask(block_size: int, n_unmasked: int) -> torch.Tensor:
    """The constant ``attn.mask`` buffer the reference saves with every block ([1, 1, T, T] floats)."""
    mask = torch.tril(torch.ones(block_size, block_size))
    if n_unmasked:
        mask[:n_unmasked, :n_unmasked] = 1
    return mask.view(1, 1, block_size, block_size)


__all__ = ["GPT", "GPTConfig", "KVCache", "attention_mask", "fuse_qkv", "reference_attention_mask"]
