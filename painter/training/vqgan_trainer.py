"""``painter train-vqgan``: a VQGAN for domains where none exists (the demo models' 64x64 emoji VQGAN).

Losses: L1 + L2 on pixels, the commitment loss (beta 0.25) and, after ``disc_start`` steps, an optional
hinge-loss patch discriminator. The codebook is not learned by gradient but by exponential moving averages
of the encoder outputs assigned to each code (as in VQ-VAE-2), and a code that no batch has used for a while
is restarted on a random encoder output of the current batch; this keeps the whole codebook in use, which
plain VQGAN training on small data does not.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from painter.checkpoints import save_vqgan
from painter.data.images import psnr
from painter.models import VQGAN, VQGANConfig
from painter.precision import training_autocast
from painter.training.data import read_examples, write_rejects
from painter.training.loop import Distributed, LoopConfig, claim_output, run

log = logging.getLogger(__name__)

PRESETS = {
    # 64x64 images, 16x16 codes (f4), as the demo models use.
    "small": VQGANConfig(ch=64, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(), z_channels=64,
                         embed_dim=32, n_embed=1024, resolution=64, norm_groups=16),
    # 128x128 images, 16x16 codes (f8), as the bundled models use: narrow at full resolution, where a
    # 2-core CPU spends its time, wider deeper down.
    "f8": VQGANConfig(ch=32, ch_mult=(1, 2, 4, 4), num_res_blocks=1, attn_resolutions=(), z_channels=64,
                      embed_dim=32, n_embed=2048, resolution=128, norm_groups=16),
    # taming's f16/16384 model of the pai-painter checkpoints.
    "f16": VQGANConfig(),
}


class CodebookEMA(nn.Module):
    """Running code usage and sums of assigned vectors; the codebook is their ratio."""

    def __init__(self, n_embed: int, dim: int, decay: float = 0.99, dead_after: float = 0.1):
        super().__init__()
        self.decay, self.dead_after = decay, dead_after
        self.register_buffer("usage", torch.zeros(n_embed))
        self.register_buffer("sums", torch.zeros(n_embed, dim))
        self.register_buffer("initialised", torch.tensor(False))

    @torch.no_grad()
    def update(self, codebook: torch.Tensor, flat: torch.Tensor, codes: torch.Tensor) -> int:
        """Move the codebook towards the mean of its assigned vectors; restart dead codes. Returns restarts."""
        n = codebook.shape[0]
        if not self.initialised:  # start from the data instead of a tiny uniform init
            codebook.copy_(flat[torch.randint(0, flat.shape[0], (n,), device=flat.device)])
            if dist.is_initialized():
                dist.broadcast(codebook, 0)
            self.sums.copy_(codebook)
            self.usage.fill_(1.0)
            self.initialised.fill_(True)
            return 0
        counts = torch.bincount(codes, minlength=n).to(flat.dtype)
        sums = torch.zeros_like(self.sums).index_add_(0, codes, flat)
        if dist.is_initialized():
            dist.all_reduce(counts)
            dist.all_reduce(sums)
        self.usage.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.sums.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        total = self.usage.sum()
        smoothed = (self.usage + 1e-5) / (total + n * 1e-5) * total
        codebook.copy_(self.sums / smoothed[:, None])
        dead = (self.usage < self.dead_after).nonzero().flatten()
        if len(dead):
            picks = flat[torch.randint(0, flat.shape[0], (len(dead),), device=flat.device)]
            if dist.is_initialized():
                dist.broadcast(picks, 0)
            codebook[dead] = picks
            self.sums[dead] = picks
            self.usage[dead] = 1.0
        return len(dead)


class PatchDiscriminator(nn.Module):
    """A small PatchGAN: one real/fake score per overlapping patch."""

    def __init__(self, channels: int = 64, layers: int = 3):
        super().__init__()
        mods: list[nn.Module] = [nn.Conv2d(3, channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        c = channels
        for _ in range(layers - 1):
            mods += [nn.Conv2d(c, c * 2, 4, 2, 1), nn.GroupNorm(8, c * 2), nn.LeakyReLU(0.2)]
            c *= 2
        mods.append(nn.Conv2d(c, 1, 3, 1, 1))
        self.net = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Reconstruction(nn.Module):
    """The training forward pass as one module, so that DistributedDataParallel can wrap it."""

    def __init__(self, vqgan: VQGAN):
        super().__init__()
        self.vqgan = vqgan
        vqgan.quantize.embedding.weight.requires_grad_(False)  # learned by EMA, not by gradient

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """images -> (reconstruction, encoder outputs [N, C], their codebook vectors [N, C], codes [N])."""
        v = self.vqgan
        z = v.quant_conv(v.encoder(x))
        b, c, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, c)
        codes = v.quantize.nearest_codes(z.detach()).flatten()
        quantized = v.quantize.embedding.weight[codes]
        straight = flat + (quantized - flat).detach()
        z_q = straight.view(b, h, w, c).permute(0, 3, 1, 2)
        return v.decoder(v.post_quant_conv(z_q)), flat, quantized, codes


def random_crops(images: torch.Tensor, size: int, step: int) -> torch.Tensor:
    """A random ``size`` square of each image, the same for the same step (so a resumed run repeats it).

    The VQGAN has no attention and is fully convolutional, so it learns from crops what it needs for whole
    pictures at a quarter of the cost per image for 64-pixel crops of 128-pixel pictures."""
    n, _, h, w = images.shape
    if size >= min(h, w):
        return images
    g = torch.Generator().manual_seed(step)
    ys = torch.randint(0, h - size + 1, (n,), generator=g)
    xs = torch.randint(0, w - size + 1, (n,), generator=g)
    return torch.stack([img[:, y:y + size, x:x + size] for img, y, x in zip(images, ys.tolist(), xs.tolist())])


class VQGANTask:
    def __init__(self, config: VQGANConfig, train_images: torch.Tensor, valid_images: torch.Tensor | None,
                 lr: float, weight_decay: float, device: torch.device, dist_info: Distributed,
                 beta: float = 0.25, disc_start: int | None = None, disc_weight: float = 0.1,
                 precision: str = "auto", crop: int | None = None):
        self.device = device
        self.crop = crop
        self.autocast, self.precision = training_autocast(precision, device)
        self.vqgan = VQGAN(config).to(device)
        self.ema = CodebookEMA(config.n_embed, config.embed_dim).to(device)
        self.modules: dict[str, nn.Module] = {"vqgan": self.vqgan, "ema": self.ema}
        self.net: nn.Module = Reconstruction(self.vqgan)
        params = [p for p in self.vqgan.parameters() if p.requires_grad]
        self.optimizers = {"vqgan": torch.optim.AdamW(params, lr=lr, betas=(0.5, 0.9), weight_decay=weight_decay)}
        if dist_info.world > 1:
            self.net = nn.parallel.DistributedDataParallel(self.net)
        self.disc = None
        if disc_start is not None:
            self.disc = PatchDiscriminator().to(device)
            self.modules["disc"] = self.disc
            self.optimizers["disc"] = torch.optim.AdamW(self.disc.parameters(), lr=lr, betas=(0.5, 0.9))
        self.disc_start, self.disc_weight, self.beta = disc_start, disc_weight, beta
        self.images, self.valid = train_images, valid_images
        self.dataset_size = len(train_images)

    def train_step(self, indices: list[int], scale: float, step: int) -> dict[str, float]:
        self.vqgan.train()
        x = self.images[indices]
        if self.crop:
            x = random_crops(x, self.crop, step)
        x = x.to(self.device)
        with self.autocast:
            recon, flat, quantized, codes = self.net(x)
        recon, flat, quantized = recon.float(), flat.float(), quantized.float()
        l1, l2 = F.l1_loss(recon, x), F.mse_loss(recon, x)
        commit = F.mse_loss(flat, quantized)
        loss = l1 + l2 + self.beta * commit
        out = {"loss": 0.0, "l1": l1.item(), "l2": l2.item(), "commit": commit.item()}
        use_disc = self.disc is not None and step >= self.disc_start
        if use_disc:
            self.disc.requires_grad_(False)
            with self.autocast:
                g_loss = -self.disc(recon).float().mean()
            self.disc.requires_grad_(True)
            loss = loss + self.disc_weight * g_loss
            out["g_loss"] = g_loss.item()
        (loss * scale).backward()
        out["loss"] = loss.item()
        if use_disc:
            with self.autocast:
                real, fake = self.disc(x).float(), self.disc(recon.detach()).float()
            d_loss = F.relu(1 - real).mean() + F.relu(1 + fake).mean()
            (d_loss * scale).backward()
            out["d_loss"] = d_loss.item()
        out["restarts"] = float(self.ema.update(self.vqgan.quantize.embedding.weight.data, flat.detach(), codes))
        out["codes_used"] = float(codes.unique().numel())
        return out

    def optimizer_step(self, max_grad_norm: float) -> dict[str, float]:
        norm = torch.nn.utils.clip_grad_norm_(self.vqgan.parameters(), max_grad_norm)
        for opt in self.optimizers.values():
            opt.step()
            opt.zero_grad(set_to_none=True)
        return {"grad_norm": float(norm)}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        if self.valid is None:
            return {}
        self.vqgan.eval()
        recon = torch.cat([self.vqgan.decode(self.vqgan.encode(chunk.to(self.device))).cpu()
                           for chunk in self.valid.split(64)])
        return {"psnr": psnr(recon, self.valid), "l1": F.l1_loss(recon, self.valid).item()}

    def export(self, output: Path) -> None:
        save_vqgan(self.vqgan, output / "vqgan")


def train_vqgan(train: Path, output: Path, preset: str, loop: LoopConfig, valid: Path | None = None,
                device: torch.device = torch.device("cpu"), resume: bool = False, overwrite: bool = False,
                disc_start: int | None = None, disc_weight: float = 0.1, precision: str = "auto",
                crop: int | None = None) -> dict:
    config = PRESETS[preset]
    dist_info = Distributed.from_env(device)
    info = {"kind": "vqgan", "preset": preset, "precision": precision, "config": asdict(config),
            "train": str(train), "valid": str(valid) if valid else None, "loop": asdict(loop), "crop": crop}
    resume = claim_output(Path(output), info, resume, overwrite, dist_info)
    examples = read_examples(train, config.resolution)
    valid_images = read_examples(valid, config.resolution).images if valid else None
    if dist_info.main:
        write_rejects(Path(output), examples.rejects)
    log.info("training a %s VQGAN on %d images from %s", preset, len(examples.images), train)
    task = VQGANTask(config, examples.images, valid_images, loop.lr, loop.weight_decay, device, dist_info,
                     disc_start=disc_start, disc_weight=disc_weight, precision=precision, crop=crop)
    return run(task, loop, Path(output), resume, dist_info)
