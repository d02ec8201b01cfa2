"""``painter eval``: how good a model is, in a few numbers.

* validation loss: the training objective on held-out rows;
* VQGAN PSNR: reconstruction quality of held-out images (8-bit, as images are written);
* R-precision@1: for N captions, paint one image each with a fixed seed, and count how often the caption's
  true image is the nearest (pixel L2 at 32x32) among itself and ``candidates - 1`` other images;
* caption use (with training captions): the objective with each picture's own caption and with another's.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from painter.checkpoints import build_model, load_checkpoint
from painter.data.images import decode_base64_image, psnr, to_model_input
from painter.data.tsv import RejectedRow
from painter.errors import PainterError
from painter.models import PainterModel
from painter.serving.pipeline import Painter
from painter.text import TextTokenizer
from painter.training.data import picture_rows, read_examples
from painter.training.gpt_trainer import encode_images, mean_loss


def small(images: torch.Tensor, size: int = 32) -> torch.Tensor:
    """[B, 3, R, R] in [-1, 1] -> flattened 32x32 versions for the nearest-image search."""
    return F.interpolate(images.float(), size=(size, size), mode="area").flatten(1)


def pil_to_tensor(image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)


def load_fp32(model_dir: Path) -> tuple[PainterModel, TextTokenizer]:
    """The model as trained (fp32, the checkpoint's own layers) and its tokenizer, for teacher-forced measures."""
    checkpoint = load_checkpoint(model_dir)
    model = build_model(checkpoint)
    cfg = model.config
    return model, TextTokenizer(checkpoint.vocab_file, cfg.text_len, cfg.img_vocab_size)


@torch.no_grad()
def validation_metrics(model: PainterModel, tokenizer: TextTokenizer, valid: Path) -> dict[str, float]:
    examples = read_examples(valid, model.config.vqgan.resolution)
    codes = encode_images(model.first_stage_model, examples.images, torch.device("cpu"))
    recon = torch.cat([model.first_stage_model.decode(c) for c in codes.split(32)])
    ids = torch.tensor([tokenizer(t).ids for t in examples.texts])
    loss = mean_loss(model.transformer, ids, codes[examples.image_of_row])
    return {"valid_loss": loss, "vqgan_psnr": psnr(recon, examples.images)}


def sample_rows(path: Path, rows: int, seed: int) -> list[tuple[str, str]]:
    """(caption, base64 picture) of ``rows`` rows drawn at random from a TSV, reading only their pictures
    (a training file holds thousands)."""
    usable = [row[2:] for row in picture_rows(path) if not isinstance(row, RejectedRow)]  # (caption, picture)
    return random.Random(seed).sample(usable, min(rows, len(usable)))


@torch.no_grad()
def caption_use(model: PainterModel, tokenizer: TextTokenizer, path: Path, rows: int = 256,
                seed: int = 0) -> dict[str, float]:
    """How much a caption decides its picture: the objective (nats per image code) on rows of ``path`` with
    each row's own caption, and with the caption of another picture of the sample. A model that ignores
    captions scores the same on both; one that has memorised its pictures from their first codes scores
    low on both (every code but the first few follows from the codes before it), and R@1 then depends on
    how far the caption chooses those first codes, which the gap between the two measures."""
    sample = sample_rows(path, rows, seed)
    # another picture's caption: the sample's next row whose picture differs
    other = [next((j % len(sample) for j in range(i + 1, i + len(sample)) if sample[j % len(sample)][1] != b64), None)
             for i, (_, b64) in enumerate(sample)]
    if not sample or None in other:
        raise PainterError(f"{path}: caption use needs usable rows of at least 2 different pictures")
    images = torch.stack([to_model_input(decode_base64_image(b64), model.config.vqgan.resolution)
                          for _, b64 in sample])
    codes = encode_images(model.first_stage_model, images, torch.device("cpu"))
    ids = torch.tensor([tokenizer(text).ids for text, _ in sample])
    own = mean_loss(model.transformer, ids, codes)
    swapped = mean_loss(model.transformer, ids[other], codes)
    return {"caption_loss_own": own, "caption_loss_other": swapped, "caption_rows": len(sample)}


def style_of(row_id: str) -> str:
    """The style a row id names (the bundled data set's ids are STYLE/SUBJECT/N); '' for other ids."""
    return row_id.split("/", 1)[0] if "/" in row_id else ""


def grey_rms(a: Image.Image, b: Image.Image) -> float:
    """RMS difference of two pictures in grey levels (0-255)."""
    x, y = (np.asarray(im.convert("L"), dtype=np.float32) for im in (a, b))
    return float(np.sqrt(np.mean((x - y) ** 2)))


@dataclass
class Retrieval:
    """What a model painted for N captions with several seeds, and whether each picture retrieved its
    caption's true image among the candidates."""

    hits: list[list[bool]]  # [caption][seed]
    pictures: list[list[Image.Image]]  # [caption][seed]

    @property
    def r_at_1(self) -> float:
        """R@1 with the first seed."""
        return sum(h[0] for h in self.hits) / len(self.hits)

    def per_seed(self) -> list[float]:
        return [sum(h[s] for h in self.hits) / len(self.hits) for s in range(len(self.hits[0]))]

    def variety(self, threshold: float = 8.0) -> float | None:
        """Among captions with at least two correct pictures, the share where two of them differ by more
        than ``threshold`` grey levels RMS (None when no caption has two)."""
        varied = []
        for hits, pictures in zip(self.hits, self.pictures):
            right = [p for h, p in zip(hits, pictures) if h]
            if len(right) >= 2:
                varied.append(any(grey_rms(a, b) > threshold for i, a in enumerate(right) for b in right[i + 1:]))
        return sum(varied) / len(varied) if varied else None

    def summary(self, name: str) -> dict[str, float | list[float] | None]:
        out: dict[str, float | list[float] | None] = {name: self.r_at_1}
        if len(self.hits[0]) > 1:
            out[f"{name}_per_seed"] = self.per_seed()
            out[f"{name}_variety"] = self.variety()
        return out


def retrieval(painter: Painter, data: Path, captions: int = 200, candidates: int = 100, seed: int = 0,
              seeds: int = 1, guidance_scale: float | None = None, batch_size: int = 16, top_k: int | None = None,
              temperature: float | None = None, pool: Path | None = None, same_style: bool = False,
              top_p: float | None = None, unseen: int = 0) -> Retrieval:
    """Paint ``captions`` distinct prompts from ``data`` with seeds ``seed`` .. ``seed + seeds - 1`` and look
    each picture up among the prompt's true images and distinct others from ``data`` and ``pool``, ``candidates``
    in all (with ``same_style`` only images of a style the prompt's rows in ``data`` name). With ``unseen`` the
    prompts are drawn from those outside the ``unseen`` an evaluation of that many with this seed scores, so
    that settings chosen on them are not chosen on the evaluation's own prompts.

    A prompt's true images are all the pictures ``data`` and ``pool`` pair it with: a caption without a style
    word, or a keyword naming up to three subjects, is trained on several pictures, and painting any of them is
    what the data taught (counting only one would score the seed-to-seed variety the data set is built for as
    misses)."""
    examples = read_examples(data, painter.config.vqgan.resolution)
    images = examples.images
    styles = [""] * len(images)
    index = {h: i for i, h in enumerate(examples.image_hashes)}
    pictures_of: dict[str, set[int]] = {}
    for row, image in enumerate(examples.image_of_row):
        styles[image] = style_of(examples.ids[row])
        pictures_of.setdefault(examples.texts[row], set()).add(image)
    home = {text: {styles[i] for i in found} for text, found in pictures_of.items()}
    if pool:
        extra = read_examples(pool, painter.config.vqgan.resolution)
        new: list[int] = []
        for row, image in enumerate(extra.image_of_row):
            if extra.image_hashes[image] not in index:
                index[extra.image_hashes[image]] = len(styles)
                new.append(image)
                styles.append(style_of(extra.ids[row]))
            if extra.texts[row] in pictures_of:
                pictures_of[extra.texts[row]].add(index[extra.image_hashes[image]])
        images = torch.cat([images, extra.images[new]])
    if len(images) < candidates:
        raise PainterError(f"{data} has {len(images)} distinct images; R@1 needs at least {candidates}")
    prompts = list(pictures_of)
    if unseen:
        scored = set(random.Random(seed).sample(prompts, min(unseen, len(prompts))))
        prompts = [text for text in prompts if text not in scored]
        if not prompts:
            raise PainterError(f"{data} has no prompts beyond the {len(scored)} an evaluation scores")
    rng = random.Random(seed)
    texts = rng.sample(prompts, min(captions, len(prompts)))
    targets = small(images)
    painted = [[pictures[0] for pictures in painter.generate(texts, seed=seed + s, batch_size=batch_size,
                                                             guidance_scale=guidance_scale, top_k=top_k,
                                                             top_p=top_p, temperature=temperature)]
               for s in range(seeds)]
    hits, pictures = [], []
    for n, text in enumerate(texts):
        eligible = [i for i in range(len(images)) if not same_style or styles[i] in home[text]]
        truths = sorted(pictures_of[text] & set(eligible))
        others = [i for i in eligible if i not in pictures_of[text]]
        pool_ids = truths + rng.sample(others, min(max(candidates - len(truths), 0), len(others)))
        found = []
        for s in range(seeds):
            distances = (targets[pool_ids] - small(pil_to_tensor(painted[s][n])[None])).pow(2).sum(1)
            found.append(distances.argmin().item() < len(truths))
        hits.append(found)
        pictures.append([painted[s][n] for s in range(seeds)])
    return Retrieval(hits, pictures)


def r_precision(painter: Painter, data: Path, captions: int = 200, candidates: int = 100, seed: int = 0,
                guidance_scale: float | None = None, batch_size: int = 16, top_k: int | None = None,
                temperature: float | None = None, pool: Path | None = None) -> float:
    """R@1 of captions from ``data`` with one seed; the other candidates come from ``data`` and ``pool``."""
    return retrieval(painter, data, captions, candidates, seed, 1, guidance_scale, batch_size, top_k, temperature,
                     pool).r_at_1


def domain_measures(image: Image.Image) -> dict[str, float]:
    """How much a picture looks like each preset's domain, in numbers the preset table reports:

    * ``white_border``: share of the outer eighth that is near-white (电商: a product on white, close to 1);
    * ``fills_frame``: share of the whole picture that is not near-white (风景: a scene to the edges, near 1);
    * ``ink_tones``: share of pixels with little colour (国画: grey ink on paper, the seal aside, near 1);
    * ``colour``: share of the picture's subject (what is not near-white) in clear colour (表情 and 电商: a
      coloured subject, well above ink's)."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    white = rgb.min(axis=2) > 235
    edge = max(1, rgb.shape[0] // 8)
    ring = np.ones(white.shape, dtype=bool)
    ring[edge:-edge, edge:-edge] = False
    chroma = rgb.max(axis=2) - rgb.min(axis=2)
    subject = ~white
    return {"white_border": float(white[ring].mean()), "fills_frame": float(subject.mean()),
            "ink_tones": float((chroma < 40).mean()),
            "colour": float((chroma[subject] >= 40).mean()) if subject.any() else 0.0}


# When a picture is in a preset's domain, by its measures: the thresholds the studio's tests and the preset table
# (recipes/preset_table.py) share.
DOMAIN_CHECKS = {
    "ecommerce": lambda m: m["white_border"] > 0.95 and m["fills_frame"] > 0.05,  # a product on white
    "scenery": lambda m: m["fills_frame"] > 0.75,  # a scene to the edges (snow and clouds are near-white)
    "painting": lambda m: m["ink_tones"] > 0.9 and m["fills_frame"] > 0.9,  # grey ink on rice paper
    "emoji": lambda m: m["white_border"] > 0.8 and m["colour"] > 0.5,  # a subject in colour on white
}


def in_domain(preset: str, image: Image.Image) -> bool | None:
    """Whether a picture passes the domain check of a preset (None: the preset has no check)."""
    check = DOMAIN_CHECKS.get(preset)
    return None if check is None else bool(check(domain_measures(image)))


def retrieval_sources(train: Path | None, heldout: Path | None = None, paraphrase: Path | None = None,
                      valid: Path | None = None) -> list[tuple[Path, Path | None, bool]]:
    """(prompts, candidate pool, same-style candidates only) for each set R@1 is scored on: training captions
    among their own pictures; unseen pictures' captions, held-out (subject, style) pairs and paraphrases among
    theirs and the training pictures, held-out pairs only against pictures of their own style (so that the
    subject is what counts: among every style, the subject's picture in a trained style would lie nearer)."""
    return ([(train, None, False)] if train else []) + [
        (path, train, same) for path, same in ((valid, False), (heldout, True), (paraphrase, False)) if path]


def evaluate(model: str, valid: Path, captions_from: Path | None = None, captions: int = 200,
             candidates: int = 100, seed: int = 0, guidance_scale: float | None = None, top_k: int | None = None,
             temperature: float | None = None, seeds: int = 1, heldout: Path | None = None,
             paraphrase: Path | None = None, top_p: float | None = None) -> dict:
    """Validation loss and VQGAN PSNR on ``valid``; R@1 of training captions (``captions_from``), of
    ``valid``'s captions, of held-out (subject, style) pairs against candidates of their own style
    (``heldout``) and of paraphrased prompts (``paraphrase``), with ``seeds`` seeds each."""
    from painter import hub

    model_dir = hub.resolve(model)
    trained, tokenizer = load_fp32(model_dir)
    result: dict = validation_metrics(trained, tokenizer, valid)
    if captions_from:
        result.update(caption_use(trained, tokenizer, captions_from, seed=seed))
    del trained
    painter = Painter.from_pretrained(model_dir, device="cpu")
    for source, pool, same_style in retrieval_sources(captions_from, heldout, paraphrase, valid):
        found = retrieval(painter, source, captions, candidates, seed, seeds, guidance_scale, top_k=top_k,
                          temperature=temperature, pool=pool, same_style=same_style, top_p=top_p)
        result.update(found.summary(f"r_at_1_{source.stem}"))
    used = painter.sampling(top_k, top_p, temperature=temperature, guidance_scale=guidance_scale)
    result.update({"captions": captions, "candidates": candidates, "seed": seed, "seeds": seeds,
                   "guidance_scale": used.guidance_scale, "top_k": used.top_k, "top_p": used.top_p,
                   "temperature": used.temperature, "precision": painter.precision})
    if used.detail_from is not None:
        detail = used.at(used.detail_from)
        result.update({"detail_from": used.detail_from, "detail_top_k": detail.top_k,
                       "detail_temperature": detail.temperature})
    return result
