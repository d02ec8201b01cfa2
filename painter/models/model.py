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

MAX_CODEBOOK = 1 << 20  # the largest codebook a config may declare; top-k's bound where no model is known


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
    # Whether guidance_scale > 1 helps this model (config.json "guidance"); None: it may, when the model was
    # trained with caption dropout. A model that memorised its data paints worse with guidance and says so.
    guidance: bool | None = None
    # The words this model learnt for a domain (config.json "domain_words", e.g. 白底商品图, 风景, 水墨画): a
    # preset wraps a prompt in its fallback template only for a model that knows the template's word, since
    # words a model never saw paint noise. Empty: prompts reach the model as typed.
    domain_words: tuple[str, ...] = ()
    # The text wordpieces (vocabulary ids) its training captions used (config.json "learnt_text"): a prompt's
    # other wordpieces are left out (TextTokenizer). Empty: every wordpiece reaches the model, as in the reference.
    learnt_text: tuple[int, ...] = ()
    # The wordpiece pairs side by side in those captions (config.json "learnt_pairs", [a, b] lists; [w, 0] for a
    # caption of one wordpiece w): a learnt wordpiece beside none of its neighbours as in a caption is left out
    # too (text.read_positions). Empty: any learnt wordpiece reaches the model.
    learnt_pairs: tuple[tuple[int, int], ...] = ()

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
        """Every size a whole number within sane bounds (named field by field), then sizes that fit together.

        The bounds come first so that a config.json with n_layer 10^9 fails at once instead of building
        modules for minutes; they are far above any pai-painter model (large: 24 x 1024)."""
        g, v = self.gpt, self.vqgan
        problems = [p for name, value, low, high in (
            ("n_layer", g.n_layer, 1, 256), ("n_head", g.n_head, 1, 256), ("n_embd", g.n_embd, 1, 16384),
            ("vocab_size", g.vocab_size, 1, 1 << 20), ("block_size", g.block_size, 1, 1 << 16),
            ("n_unmasked", g.n_unmasked, 0, 1 << 16), ("text_len", self.text_len, 1, 1024))
            if (p := _whole_number(name, value, low, high))] + vqgan_bounds(v)
        for name, value in (("embd_pdrop", g.embd_pdrop), ("resid_pdrop", g.resid_pdrop),
                            ("attn_pdrop", g.attn_pdrop), ("caption_dropout", self.caption_dropout)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
                problems.append(f"{name} must be a number in [0, 1), got {value!r}")
        if problems:
            raise ConfigError("bad model config: " + "; ".join(problems))
        if g.n_embd % g.n_head:
            problems.append(f"n_embd {g.n_embd} is not divisible by n_head {g.n_head}")
        if g.block_size != self.text_len + self.img_len:
            problems.append(f"block_size {g.block_size} != text_len {self.text_len} + image tokens {self.img_len} "
                            f"({v.grid_size}x{v.grid_size} grid of a {v.resolution}px VQGAN)")
        if self.text_vocab_size <= 0:
            problems.append(f"vocab_size {g.vocab_size} leaves no room for text after {self.img_vocab_size} image codes")
        problems += vqgan_fit(v)
        if problems:
            raise ConfigError("inconsistent model config: " + "; ".join(problems))
        return self

    def to_dict(self) -> dict:
        return {"gpt": asdict(self.gpt), "vqgan": asdict(self.vqgan), "text_len": self.text_len,
                "caption_dropout": self.caption_dropout, **self.optional_fields()}

    def optional_fields(self) -> dict:
        """What a model recommends and learnt, as both checkpoint layouts write it: only the keys that are set,
        so that a config without them stays the reference's."""
        data: dict = {}
        if self.sampling:
            data["sampling"] = dict(self.sampling)
        if self.guidance is not None:
            data["guidance"] = self.guidance
        if self.domain_words:
            data["domain_words"] = list(self.domain_words)
        if self.learnt_text:
            data["learnt_text"] = list(self.learnt_text)
        if self.learnt_pairs:
            data["learnt_pairs"] = [list(p) for p in self.learnt_pairs]
        return data

    @property
    def guidance_helps(self) -> bool:
        return self.caption_dropout > 0 if self.guidance is None else self.guidance

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        try:
            return cls(gpt=GPTConfig(**data["gpt"]), vqgan=VQGANConfig(**data["vqgan"]),
                       text_len=data.get("text_len", 32), caption_dropout=data.get("caption_dropout", 0.0)).validate()
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"model config is missing or has unknown fields: {exc}") from exc


def vqgan_bounds(v: VQGANConfig) -> list[str]:
    """Problems with a VQGAN config's fields one by one (types and sane bounds, before anything is built)."""
    problems = [p for name, value, low, high in (
        ("vqgan.ch", v.ch, 1, 4096), ("vqgan.num_res_blocks", v.num_res_blocks, 0, 64),
        ("vqgan.z_channels", v.z_channels, 1, 4096), ("vqgan.embed_dim", v.embed_dim, 1, 4096),
        ("vqgan.n_embed", v.n_embed, 1, MAX_CODEBOOK), ("vqgan.resolution", v.resolution, 8, 4096),
        ("vqgan.in_channels", v.in_channels, 1, 4), ("vqgan.out_ch", v.out_ch, 1, 4),
        ("vqgan.norm_groups", v.norm_groups, 1, 4096))
        if (p := _whole_number(name, value, low, high))]
    if not isinstance(v.ch_mult, tuple) or not 1 <= len(v.ch_mult) <= 8:
        problems.append(f"vqgan.ch_mult must list 1 to 8 channel multipliers, got {v.ch_mult!r}")
    else:
        problems += [p for m in v.ch_mult if (p := _whole_number("vqgan.ch_mult", m, 1, 64))]
    if not isinstance(v.attn_resolutions, tuple) or not all(
            isinstance(r, int) and not isinstance(r, bool) for r in v.attn_resolutions):
        problems.append(f"vqgan.attn_resolutions must be whole numbers, got {v.attn_resolutions!r}")
    last = v.n_embed - 1 if isinstance(v.n_embed, int) else MAX_CODEBOOK - 1
    if v.white_code is not None and (p := _whole_number("vqgan.white_code", v.white_code, 0, last)):
        problems.append(p)
    return problems


def vqgan_fit(v: VQGANConfig) -> list[str]:
    """Problems with how a (bounded) VQGAN config's sizes fit together."""
    problems = []
    if v.resolution % v.downsample_factor:
        problems.append(f"resolution {v.resolution} is not divisible by the downsampling factor {v.downsample_factor}")
    channels = [v.ch * m for m in v.ch_mult]
    if any(c % v.norm_groups for c in channels):
        problems.append(f"VQGAN channels {channels} are not all divisible by norm_groups {v.norm_groups}")
    return problems


def check_vqgan(v: VQGANConfig) -> VQGANConfig:
    """A standalone VQGAN's config, checked as a model's is (so 10^7 residual blocks fail at once)."""
    problems = vqgan_bounds(v)
    if problems:
        raise ConfigError("bad VQGAN config: " + "; ".join(problems))
    problems = vqgan_fit(v)
    if problems:
        raise ConfigError("inconsistent VQGAN config: " + "; ".join(problems))
    return v


def _whole_number(name: str, value, low: int, high: int) -> str | None:
    """A problem with one size field, or None: JSON gives floats and strings as readily as integers."""
    if isinstance(value, bool) or not isinstance(value, int):
        return f"{name} must be a whole number, got {value!r}"
    if not low <= value <= high:
        return f"{name} must be between {low} and {high}, got {value}"
    return None


class PainterModel(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config.validate()
        self.transformer = GPT(config.gpt, config.img_vocab_size)
        self.first_stage_model = VQGAN(config.vqgan)
