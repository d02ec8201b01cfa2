"""``painter eval``: how good a model is, in three numbers.

* validation loss: the training objective on held-out rows;
* VQGAN PSNR: reconstruction quality of held-out images (8-bit, as images are written);
* R-precision@1: for N captions, paint one image each with a fixed seed, and count how often the caption's
  true image is the nearest (pixel L2 at 32x32) among itself and ``candidates - 1`` other images.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from painter.checkpoints import build_model, load_checkpoint
from painter.data.images import psnr
from painter.errors import PainterError
from painter.serving.pipeline import Painter
from painter.text import TextTokenizer
from painter.training.data import read_examples
from painter.training.gpt_trainer import encode_images, mean_loss


def small(images: torch.Tensor, size: int = 32) -> torch.Tensor:
    """[B, 3, R, R] in [-1, 1] -> flattened 32x32 versions for the nearest-image search."""
    return F.interpolate(images.float(), size=(size, size), mode="area").flatten(1)


def pil_to_tensor(image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)


@torch.no_grad()
def validation_metrics(model_dir: Path, valid: Path) -> dict[str, float]:
    checkpoint = load_checkpoint(model_dir)
    model = build_model(checkpoint)
    cfg = model.config
    tokenizer = TextTokenizer(checkpoint.vocab_file, cfg.text_len, cfg.img_vocab_size)
    examples = read_examples(valid, cfg.vqgan.resolution)
    codes = encode_images(model, examples.images, torch.device("cpu"))
    recon = torch.cat([model.first_stage_model.decode(c) for c in codes.split(32)])
    ids = torch.tensor([tokenizer(t).ids for t in examples.texts])
    loss = mean_loss(model.transformer, ids, codes[examples.image_of_row])
    return {"valid_loss": loss, "vqgan_psnr": psnr(recon, examples.images)}


def r_precision(painter: Painter, data: Path, captions: int = 200, candidates: int = 100, seed: int = 0,
                guidance_scale: float | None = None, batch_size: int = 16, top_k: int | None = None,
                temperature: float | None = None, pool: Path | None = None) -> float:
    """R@1 of captions from ``data``; the other candidates come from ``data`` and ``pool`` (distinct images)."""
    examples = read_examples(data, painter.config.vqgan.resolution)
    images, hashes = examples.images, list(examples.image_hashes)
    if pool:
        extra = read_examples(pool, painter.config.vqgan.resolution)
        keep = [i for i, h in enumerate(extra.image_hashes) if h not in set(hashes)]
        images = torch.cat([images, extra.images[keep]])
    n_images = len(images)
    if n_images < candidates:
        raise PainterError(f"{data} has {n_images} distinct images; R@1 needs at least {candidates}")
    rng = random.Random(seed)
    rows = rng.sample(range(len(examples.texts)), min(captions, len(examples.texts)))
    targets = small(images)
    generated = painter.generate([examples.texts[r] for r in rows], seed=seed, batch_size=batch_size,
                                 guidance_scale=guidance_scale, top_k=top_k, temperature=temperature)
    hits = 0
    for r, images in zip(rows, generated):
        truth = examples.image_of_row[r]
        others = rng.sample([i for i in range(n_images) if i != truth], candidates - 1)
        pool = targets[[truth] + others]
        distances = (pool - small(pil_to_tensor(images[0])[None])).pow(2).sum(1)
        hits += int(distances.argmin().item() == 0)
    return hits / len(rows)


def evaluate(model: str, valid: Path, captions_from: Path | None = None, captions: int = 200,
             candidates: int = 100, seed: int = 0, guidance_scale: float | None = None, top_k: int | None = None,
             temperature: float | None = None) -> dict[str, float]:
    from painter import hub

    model_dir = hub.resolve(model)
    result = validation_metrics(model_dir, valid)
    painter = Painter.from_pretrained(model_dir, device="cpu")
    sources = [(captions_from, None), (valid, captions_from)] if captions_from else [(valid, None)]
    for source, pool in sources:
        result[f"r_at_1_{source.stem}"] = r_precision(painter, source, captions, candidates, seed, guidance_scale,
                                                      top_k=top_k, temperature=temperature, pool=pool)
    used = painter.sampling(top_k, temperature=temperature, guidance_scale=guidance_scale)
    result.update({"captions": captions, "candidates": candidates, "seed": seed, "guidance_scale": used.guidance_scale,
                   "top_k": used.top_k, "temperature": used.temperature, "precision": painter.precision})
    return result
