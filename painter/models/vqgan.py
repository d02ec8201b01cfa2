"""A VQGAN (encoder, vector quantizer, decoder) weight-compatible with taming-transformers' VQModel.

Written from the documented architecture: GroupNorm + swish residual blocks, single-head attention at the
listed resolutions, padded stride-2 downsampling, nearest-neighbour upsampling. Module names match taming's
state-dict keys (``encoder.down.L.block.B.*``, ``decoder.up.L.upsample.conv``, ``quantize.embedding.weight``…)
so the pai-painter checkpoints load strictly. Every size comes from :class:`VQGANConfig`, so the small demo
VQGAN uses this same code.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from painter.errors import CheckpointError


@dataclass(frozen=True)
class VQGANConfig:
    """Sizes of the VQGAN; the defaults are taming's f16/16384 model used by every pai-painter checkpoint."""

    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    z_channels: int = 256
    embed_dim: int = 256
    n_embed: int = 16384
    resolution: int = 256
    in_channels: int = 3
    out_ch: int = 3
    norm_groups: int = 32
    encoder: bool = True  # False for decoder-only weights (PaddleNLP ships the VQGAN decoder alone)
    # The one code every white cell is encoded as (None: the nearest code, as taming). A VQGAN encodes a white
    # background as dozens of interchangeable codes that depend on what lies around each cell; a GPT trained on
    # them memorises that noise and loses its picture at the first background cell it samples differently.
    white_code: int | None = None

    def __post_init__(self):
        # JSON gives lists; keep the dataclass hashable and comparable.
        object.__setattr__(self, "ch_mult", tuple(self.ch_mult))
        object.__setattr__(self, "attn_resolutions", tuple(self.attn_resolutions))

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    @property
    def grid_size(self) -> int:
        """Side of the code grid (16 for 256x256 images at f16)."""
        return self.resolution // self.downsample_factor

    @property
    def num_codes(self) -> int:
        return self.grid_size ** 2


WHITE_LEVEL = 1 - 2 * 5 / 255  # a pixel at 250 of 255 or above in every channel counts as white


def white_cells(images: torch.Tensor, cell: int) -> torch.Tensor:
    """images [B, 3, R, R] in [-1, 1] -> [B, (R/cell)^2] True where every pixel of the cell is white."""
    darkest = images.amin(1, keepdim=True)  # [B, 1, R, R]
    return (-F.max_pool2d(-darkest, cell) >= WHITE_LEVEL).flatten(1)


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=groups, num_channels=channels, eps=1e-6, affine=True)


def _norm_swish(norm: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
    """swish(norm(x)); in place on the fresh norm output when no gradient is needed, which keeps one fewer
    full-resolution activation alive while decoding (33 MB per tensor at 256x256x128)."""
    return F.silu(norm(x), inplace=not torch.is_grad_enabled())


class ResnetBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, groups: int):
        super().__init__()
        self.norm1 = _norm(in_channels, groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = _norm(out_channels, groups)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(_norm_swish(self.norm1, x))
        h = self.conv2(_norm_swish(self.norm2, h))
        return h.add_(x if self.nin_shortcut is None else self.nin_shortcut(x))


class AttnBlock(nn.Module):
    """Single-head self-attention over all pixels of a feature map, with 1x1 conv projections."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = _norm(channels, groups)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        n = self.norm(x)
        # [B, 1, HW, C]: one head; SDPA scales by C^-0.5 as the reference does.
        q, k, v = (conv(n).reshape(b, 1, c, h * w).transpose(2, 3) for conv in (self.q, self.k, self.v))
        y = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj_out(y.transpose(2, 3).reshape(b, c, h, w))


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Level(nn.Module):
    """One resolution level: residual blocks, optional attention after each, optional resampling.

    Attribute names (block, attn, downsample/upsample) are those of the checkpoint keys.
    """

    def __init__(self, channels_in: int, channels_out: int, n_blocks: int, attend: bool, groups: int):
        super().__init__()
        self.block = nn.ModuleList()
        self.attn = nn.ModuleList()
        for _ in range(n_blocks):
            self.block.append(ResnetBlock(channels_in, channels_out, groups))
            channels_in = channels_out
            if attend:
                self.attn.append(AttnBlock(channels_out, groups))

    def run_blocks(self, h: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.block):
            h = block(h)
            if len(self.attn):
                h = self.attn[i](h)
        return h


class _Mid(nn.Module):
    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, groups)
        self.attn_1 = AttnBlock(channels, groups)
        self.block_2 = ResnetBlock(channels, channels, groups)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(h)))


class Encoder(nn.Module):
    def __init__(self, cfg: VQGANConfig):
        super().__init__()
        g = cfg.norm_groups
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.ch, 3, padding=1)
        self.down = nn.ModuleList()
        res = cfg.resolution
        channels = cfg.ch
        for i, mult in enumerate(cfg.ch_mult):
            level = _Level(channels, cfg.ch * mult, cfg.num_res_blocks, res in cfg.attn_resolutions, g)
            channels = cfg.ch * mult
            if i != len(cfg.ch_mult) - 1:
                level.downsample = Downsample(channels)
                res //= 2
            self.down.append(level)
        self.mid = _Mid(channels, g)
        self.norm_out = _norm(channels, g)
        self.conv_out = nn.Conv2d(channels, cfg.z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level.run_blocks(h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = self.mid(h)
        return self.conv_out(_norm_swish(self.norm_out, h))


class Decoder(nn.Module):
    def __init__(self, cfg: VQGANConfig):
        super().__init__()
        g = cfg.norm_groups
        channels = cfg.ch * cfg.ch_mult[-1]
        res = cfg.grid_size
        self.conv_in = nn.Conv2d(cfg.z_channels, channels, 3, padding=1)
        self.mid = _Mid(channels, g)
        levels = []
        for i in reversed(range(len(cfg.ch_mult))):
            level = _Level(channels, cfg.ch * cfg.ch_mult[i], cfg.num_res_blocks + 1, res in cfg.attn_resolutions, g)
            channels = cfg.ch * cfg.ch_mult[i]
            if i != 0:
                level.upsample = Upsample(channels)
                res *= 2
            levels.append(level)
        self.up = nn.ModuleList(reversed(levels))  # indexed by level, as in the checkpoint keys
        self.norm_out = _norm(channels, g)
        self.conv_out = nn.Conv2d(channels, cfg.out_ch, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level.run_blocks(h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(_norm_swish(self.norm_out, h))


class VectorQuantizer(nn.Module):
    """Nearest-code quantizer with taming's distance ‖z‖² + ‖e‖² − 2 z·e (ties go to the lowest index)."""

    def __init__(self, n_embed: int, embed_dim: int, beta: float = 0.25):
        super().__init__()
        self.embedding = nn.Embedding(n_embed, embed_dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / n_embed, 1.0 / n_embed)
        self.beta = beta

    def nearest_codes(self, z: torch.Tensor) -> torch.Tensor:
        """z [B, C, H, W] -> code indices [B, H*W] in row-major order."""
        b, c, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, c).float()  # distances in fp32 even under autocast
        codebook = self.embedding.weight.float()
        dist = flat.pow(2).sum(1, keepdim=True) + codebook.pow(2).sum(1)[None, :] - 2 * flat @ codebook.t()
        return dist.argmin(dim=1).view(b, h * w)

    def lookup(self, codes: torch.Tensor, grid: int) -> torch.Tensor:
        """codes [B, grid*grid] -> quantized latents [B, C, grid, grid]."""
        b = codes.shape[0]
        return self.embedding(codes).view(b, grid, grid, -1).permute(0, 3, 1, 2).contiguous()


class VQGAN(nn.Module):
    """Images in [-1, 1] <-> grids of codebook indices."""

    def __init__(self, config: VQGANConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config) if config.encoder else None
        self.decoder = Decoder(config)
        self.quantize = VectorQuantizer(config.n_embed, config.embed_dim)
        self.quant_conv = nn.Conv2d(config.z_channels, config.embed_dim, 1) if config.encoder else None
        self.post_quant_conv = nn.Conv2d(config.embed_dim, config.z_channels, 1)

    def drop_encoder(self) -> "VQGAN":
        """Free the encoder (29M parameters in the f16 model): painting only ever decodes."""
        self.encoder = self.quant_conv = None
        return self

    def nearest_codes(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, 3, R, R] in [-1, 1] -> the nearest code of every cell [B, grid*grid], as taming encodes."""
        if self.encoder is None:
            raise CheckpointError("this VQGAN has no encoder (decoder-only weights, or freed for painting), so it "
                               "cannot turn images into codes; use a checkpoint with the encoder (EasyNLP's archive)")
        return self.quantize.nearest_codes(self.quant_conv(self.encoder(images)))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, 3, R, R] in [-1, 1] -> codes [B, grid*grid]; white cells get ``white_code`` if set."""
        codes = self.nearest_codes(images)
        if self.config.white_code is None:
            return codes
        return codes.masked_fill(white_cells(images, self.config.downsample_factor), self.config.white_code)

    def decode(self, codes: torch.Tensor, grid: int | None = None) -> torch.Tensor:
        """codes [B, grid*grid] -> images [B, 3, R, R], nominally in [-1, 1] (not clamped, as the reference).
        ``grid`` defaults to the model's; the decoder is convolutional, so a smaller grid decodes to a smaller
        image at the same scale."""
        z = self.quantize.lookup(codes, grid or self.config.grid_size).to(self.post_quant_conv.weight.dtype)
        return self.decoder(self.post_quant_conv(z))
