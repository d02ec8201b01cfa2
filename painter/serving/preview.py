"""Near-free live previews: one linear map from a code's embedding to the RGB patch it paints.

A true partial decode runs the whole VQGAN decoder (about 200 GFLOP at 256x256), which costs more than the
sampling it illustrates when done every few tokens. But a code mostly paints its own cell with its own colour
and texture, so a least-squares map from code embeddings to the decoded patches (fitted once per VQGAN from
the real decodes of 16 random code grids, cached on disk) gives a recognisable preview for the price
of a [new cells, embed_dim] x [embed_dim, 3 * cell * cell] product. The final image is always a real decode.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from painter.data.files import atomic_output
from painter.models import VQGAN

log = logging.getLogger(__name__)

GREY = 0.0  # the middle of [-1, 1]: cells not yet sampled are shown as neutral grey


def code_features(codebook: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """codes [...] -> [..., embed_dim + 1]: the code's embedding and a constant 1 for the bias."""
    emb = codebook[codes]
    return torch.cat([emb, torch.ones_like(emb[..., :1])], dim=-1)


def image_patches(images: torch.Tensor, grid: int) -> torch.Tensor:
    """[B, 3, R, R] -> [B, grid*grid, 3*cell*cell], cells in row-major order (the order codes are sampled)."""
    b, c, r, _ = images.shape
    cell = r // grid
    patches = images.reshape(b, c, grid, cell, grid, cell).permute(0, 2, 4, 1, 3, 5)
    return patches.reshape(b, grid * grid, c * cell * cell)


def patches_to_images(patches: torch.Tensor, grid: int, channels: int = 3) -> torch.Tensor:
    """The inverse of image_patches."""
    b = patches.shape[0]
    cell = int(round((patches.shape[-1] / channels) ** 0.5))
    images = patches.reshape(b, grid, grid, channels, cell, cell).permute(0, 3, 1, 4, 2, 5)
    return images.reshape(b, channels, grid * cell, grid * cell)


def vqgan_fingerprint(vqgan: VQGAN) -> str:
    """Identifies a VQGAN's decoder cheaply: its codebook and output layer (a different VQGAN differs in both)."""
    h = hashlib.sha256(repr(vqgan.config).encode())
    for tensor in (vqgan.quantize.embedding.weight, vqgan.decoder.conv_out.weight, vqgan.decoder.conv_out.bias):
        h.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:20]


@dataclass
class PreviewMap:
    """weight [embed_dim + 1, 3*cell*cell]: code features -> the patch of its cell, in [-1, 1] units."""

    weight: torch.Tensor
    grid: int

    @classmethod
    @torch.inference_mode()
    def fit(cls, vqgan: VQGAN, grids: int = 16, side: int = 8, seed: int = 0, ridge: float = 1e-3) -> "PreviewMap":
        """Least squares (with a little ridge) over the cells of ``grids`` real decodes of random code grids.

        The grids are ``side`` x ``side`` codes (at most the model's grid): a cell's patch depends on its code
        and a few neighbours, so small grids fit as well as full ones (on the demo VQGAN: correlation 0.796
        with real decodes against 0.798) at a quarter of the decoding (base, 256x256: ~3 s instead of ~11)."""
        cfg = vqgan.config
        side = min(side, cfg.grid_size)
        generator = torch.Generator().manual_seed(seed)
        codes = torch.randint(0, cfg.n_embed, (grids, side * side), generator=generator)
        device = vqgan.post_quant_conv.weight.device
        images = torch.cat([vqgan.decode(row[None].to(device), side).float().cpu() for row in codes])
        codebook = vqgan.quantize.embedding.weight.detach().float().cpu()
        x = code_features(codebook, codes).reshape(-1, codebook.shape[1] + 1).double()
        y = image_patches(images, side).reshape(x.shape[0], -1).double()
        gram = x.T @ x
        gram += ridge * gram.diagonal().mean() * torch.eye(gram.shape[0], dtype=gram.dtype)
        return cls(torch.linalg.solve(gram, x.T @ y).float(), cfg.grid_size)

    @classmethod
    def for_vqgan(cls, vqgan: VQGAN, cache: Path) -> "PreviewMap":
        """The map from ``cache`` (keyed by the VQGAN's fingerprint), fitted and stored on first use."""
        path = Path(cache) / f"preview-{vqgan_fingerprint(vqgan)}.safetensors"
        if path.is_file():
            try:
                tensors = load_file(path)
                return cls(tensors["weight"], int(tensors["grid"]))
            except Exception as exc:  # a torn or foreign file: fit again rather than fail the preview
                log.warning("ignoring unreadable preview map %s (%s); fitting it again", path, exc)
        log.info("fitting the fast-preview map of this VQGAN (once; cached in %s)", path)
        preview = cls.fit(vqgan)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_output(path) as tmp:
                save_file({"weight": preview.weight.contiguous(), "grid": torch.tensor(preview.grid)}, str(tmp))
        except OSError as exc:  # a read-only or full cache only costs the refit next time
            log.warning("could not cache the preview map in %s: %s", path, exc)
        return preview


class PreviewCanvas:
    """Preview images of a batch being sampled: each update paints only the cells sampled since the last."""

    def __init__(self, preview: PreviewMap, codebook: torch.Tensor, batch: int, keep: torch.Tensor | None = None,
                 kept_codes: torch.Tensor | None = None):
        """``keep`` and ``kept_codes`` ([cells] each): a repaint's kept cells, painted from the first frame."""
        self.preview, self.codebook = preview, codebook.detach().float().cpu()
        cells = preview.grid * preview.grid
        self.patches = torch.full((batch, cells, preview.weight.shape[1]), GREY)
        if keep is not None:
            kept = keep.cpu().bool()
            self.patches[:, kept] = code_features(self.codebook, kept_codes.cpu()[kept]) @ self.preview.weight
        self.done = 0

    def update(self, codes: torch.Tensor, sampled: int) -> torch.Tensor:
        """codes [B, cells] (valid up to ``sampled``) -> preview images [B, 3, R, R] in [-1, 1]."""
        if sampled > self.done:
            new = codes[:, self.done:sampled].cpu()
            self.patches[:, self.done:sampled] = code_features(self.codebook, new) @ self.preview.weight
            self.done = sampled
        return patches_to_images(self.patches, self.preview.grid).clamp(-1, 1)
