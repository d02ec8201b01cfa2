"""A Painter model: the GPT and the VQGAN under the attribute names the checkpoints use.

Holding both as ``transformer`` and ``first_stage_model`` makes ``state_dict()`` produce exactly the keys
of an EasyNLP ``pytorch_model.bin``, so one strict comparison covers both formats.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from torch import nn

from painter.errors import ConfigError
from painter.models.gpt import GPT, GPTConfig
from painter.models.vqgan import VQGAN, VQGANConfig


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to build the networks; checked for sizes that cannot fit together."""

    gpt: GPTConfig = field(default_factory=GPTConfig)
    vqgan: VQGANConfig = field(default_factory=VQGANConfig)
    text_len: int = 32
    caption_dropout: float = 0.0  # > 0: trained with empty captions too, so guidance_scale > 1 is meaningful
    # The sampling settings this model paints best with (config.json "sampling"), used where a caller gives
    # none: a small model that memorised its data wants a low temperature. Empty: the reference's defaults.
    sampling: dict = field(default_factory=dict)

    @property
    def img_vocab_size(self) -> int:
        return self.vqgan.n_embed

    @property
    def text_vocab_size(self) -> int:
        return self.gpt.vocab_size - self.img_vocab_size

    @property
    def img_len(self) -> int:
        return self.vqgan.num_codes

    def validate(self) -> "ModelConfig":
        g, v = self.gpt, self.vqgan
        problems = []
        if g.n_embd % g.n_head:
            problems.append(f"n_embd {g.n_embd} is not divisible by n_head {g.n_head}")
        if g.block_size != self.text_len + self.img_len:
            problems.append(f"block_size {g.block_size} != text_len {self.text_len} + image tokens {self.img_len} "
                            f"({v.grid_size}x{v.grid_size} grid of a {v.resolution}px VQGAN)")
        if self.text_vocab_size <= 0:
            problems.append(f"vocab_size {g.vocab_size} leaves no room for text after {self.img_vocab_size} image codes")
        if v.resolution % v.downsample_factor:
            problems.append(f"resolution {v.resolution} is not divisible by the downsampling factor {v.downsample_factor}")
        channels = [v.ch * m for m in v.ch_mult]
        if any(c % v.norm_groups for c in channels):
            problems.append(f"VQGAN channels {channels} are not all divisible by norm_groups {v.norm_groups}")
        if min(g.n_layer, g.n_head, g.n_embd, self.text_len, v.n_embed, v.embed_dim) <= 0:
            problems.append("sizes must be positive")
        if problems:
            raise ConfigError("inconsistent model config: " + "; ".join(problems))
        return self

    def to_dict(self) -> dict:
        data = {"gpt": asdict(self.gpt), "vqgan": asdict(self.vqgan), "text_len": self.text_len,
                "caption_dropout": self.caption_dropout}
        return {**data, "sampling": dict(self.sampling)} if self.sampling else data

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        try:
            return cls(gpt=GPTConfig(**data["gpt"]), vqgan=VQGANConfig(**data["vqgan"]),
                       text_len=int(data.get("text_len", 32)),
                       caption_dropout=float(data.get("caption_dropout", 0.0))).validate()
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"model config is missing or has unknown fields: {exc}") from exc


class PainterModel(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config.validate()
        self.transformer = GPT(config.gpt, config.img_vocab_size)
        self.first_stage_model = VQGAN(config.vqgan)
