"""``painter train``: fine-tune (or train from scratch) the GPT on TSV data, with EasyNLP's semantics.

The VQGAN is frozen; the GPT learns cross-entropy over the image codes given the text
(``logits = gpt(cat(text, codes)[:, :-1])[:, text_len - 1:]``). Images are turned into codes once and cached
in the run directory under a name derived from the data file and the VQGAN weights, so later epochs (and
later runs on the same data) never touch the VQGAN. ``caption_dropout`` replaces a caption by all-[PAD] with
that probability, which teaches the unconditional distribution that classifier-free guidance needs;
``reword`` wraps it in everyday words (painter.training.reword). ``keep_layers`` trains a smaller GPT that
starts from some of a trained one's blocks (how bundled-base is made from bundled-large).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import pickle
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from painter import hub
from painter.checkpoints import build_model, load_checkpoint, load_vqgan, save_painter
from painter.data.captions import REWORD_PREFIXES, REWORD_SUFFIXES
from painter.data.files import atomic_output, file_sha256
from painter.errors import DataError, PainterError
from painter.models import GPTConfig, ModelConfig, PainterModel
from painter.precision import training_autocast
from painter.text import PAD_ID, TextTokenizer, adjacent_pairs
from painter.training.data import read_examples, write_rejects
from painter.training.loop import Distributed, LoopConfig, RunError, claim_output, run
from painter.training.reword import Rewording

log = logging.getLogger(__name__)

DEFAULT_VOCAB = Path(__file__).resolve().parents[2] / "assets" / "vocab.txt"

# GPT sizes for models trained from scratch on a VQGAN: the 64x64 demo pair (recipes/demo-models.sh) and the
# 128x128 bundled pair (recipes/bundled-models.sh). The bundled pair is sized from measured tokens/s on one core
# of a 2-core CPU so that each sees every picture of the compact set many times within the recipe's time (the
# arithmetic is in the recipe): passes per picture teach these small GPTs, not pictures seen once. At these
# sizes width is cheaper than depth (4x192 trains faster than 5x160 on one core).
SIZES = {
    "demo-base": dict(n_layer=4, n_head=4, n_embd=160),
    "demo-large": dict(n_layer=6, n_head=6, n_embd=192),
    "bundled-base": dict(n_layer=4, n_head=4, n_embd=128),
    "bundled-large": dict(n_layer=4, n_head=4, n_embd=192),
}


@dataclass
class CodeData:
    """Text ids and image codes for every usable row, ready for the GPT."""

    text_ids: torch.Tensor  # [N, text_len] (offset ids)
    codes: torch.Tensor  # [N_images, img_len]
    image_of_row: torch.Tensor  # [N]


def vqgan_digest(vqgan: nn.Module) -> str:
    """What a VQGAN's codes depend on: its weights and its white code."""
    h = hashlib.sha256()
    if vqgan.config.white_code is not None:
        h.update(f"white_code={vqgan.config.white_code}".encode())
    for k, v in sorted(vqgan.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


@torch.no_grad()
def encode_images(vqgan: nn.Module, images: torch.Tensor, device: torch.device, batch: int = 32) -> torch.Tensor:
    vqgan.eval()
    return torch.cat([vqgan.encode(chunk.to(device)).cpu() for chunk in images.split(batch)])


CODES_SUFFIX = ".codes.pt"  # pre-encoded data (`painter encode`): what a GPU needs of a data set, not its pictures


def encode_data(path: Path, vqgan: nn.Module, tokenizer: TextTokenizer, device: torch.device) -> dict:
    """Text ids and image codes of every usable row of a TSV, with what they were made for (the codebook,
    the text vocabulary and the VQGAN's digest) and the rows that were rejected."""
    examples = read_examples(path, vqgan.config.resolution)
    rejects = list(examples.rejects)
    text_ids, rows = [], []
    for i, text in enumerate(examples.texts):
        try:
            text_ids.append(tokenizer(text).ids)
            rows.append(examples.image_of_row[i])
        except PainterError as exc:
            rejects.append((str(path), examples.lines[i], str(exc)))
    if not text_ids:
        raise DataError(f"{path} has no usable rows")
    log.info("encoding %d images of %s with the VQGAN", len(examples.images), path)
    return {"text_ids": torch.tensor(text_ids), "codes": encode_images(vqgan, examples.images, device),
            "image_of_row": torch.tensor(rows), "n_embed": vqgan.config.n_embed,
            "text_vocab_size": tokenizer.vocab_size, "vqgan": vqgan_digest(vqgan),
            "rejects": [list(r) for r in rejects]}


def read_codes(path: Path, config: ModelConfig, digest: str) -> tuple[CodeData, list]:
    """Encoded data from ``path``, checked against the model it is to train (codebook, text vocabulary and,
    where recorded, the VQGAN's weights); torch's own errors for a damaged file pass through."""
    data = torch.load(path, map_location="cpu", weights_only=True)
    if data["n_embed"] != config.img_vocab_size or data["text_vocab_size"] != config.text_vocab_size:
        raise RunError(f"{path} was made for codebook {data['n_embed']} / text vocabulary "
                       f"{data['text_vocab_size']}, not this model's {config.img_vocab_size} / "
                       f"{config.text_vocab_size}")
    if data.get("vqgan", digest) != digest:
        raise RunError(f"{path} was encoded by another VQGAN than this model's; encode the data again with it")
    codes = CodeData(data["text_ids"].long(), data["codes"].long(), data["image_of_row"].long())
    return codes, [tuple(r) for r in data["rejects"]]


def load_code_data(path: Path, model: PainterModel, tokenizer: TextTokenizer, cache_dir: Path,
                   device: torch.device, write: bool) -> tuple[CodeData, list]:
    """Codes for the data file: a ``.codes.pt`` file as it is, else from the cache in the run directory when
    the data and VQGAN are unchanged, else encoded (and cached)."""
    vqgan, cfg = model.first_stage_model, model.config
    digest = vqgan_digest(vqgan)
    if path.name.endswith(CODES_SUFFIX):
        try:
            return read_codes(path, cfg, digest)
        except (OSError, KeyError, RuntimeError, pickle.UnpicklingError) as exc:
            raise DataError(f"{path} is not readable encoded data ({type(exc).__name__}: {exc})") from exc
    key = hashlib.sha256((file_sha256(path) + digest).encode()).hexdigest()[:16]
    cache = cache_dir / f"codes-{path.stem}-{key}.pt"
    if cache.is_file():
        try:
            cached = read_codes(cache, cfg, digest)
        except RunError:
            raise
        except Exception as exc:  # truncated or damaged: torch raises many types
            log.warning("cached image codes %s are unreadable (%s: %s); encoding the images again", cache,
                        type(exc).__name__, exc)
        else:
            log.info("using cached image codes %s", cache)
            return cached
    data = encode_data(path, vqgan, tokenizer, device)
    if write:
        with atomic_output(cache) as tmp:
            torch.save(data, tmp)
    return CodeData(data["text_ids"], data["codes"], data["image_of_row"]), [tuple(r) for r in data["rejects"]]


def write_encoded(path: Path, vqgan_dir: str, output: Path, vocab_file: Path | None = None,
                  text_len: int = 32, device: torch.device = torch.device("cpu")) -> dict:
    """``painter encode``: a TSV's text ids and image codes under a VQGAN, in the compact file ``painter train
    --train FILE.codes.pt`` reads (a data set's pictures are hundreds of MB; their codes a few)."""
    if not output.name.endswith(CODES_SUFFIX):
        raise PainterError(f"the output's name must end in {CODES_SUFFIX}, got {output.name}")
    vq = load_vqgan(vqgan_dir).to(device)
    vocab = Path(vocab_file or DEFAULT_VOCAB)
    tokenizer = TextTokenizer(vocab, text_len, vq.config.n_embed)
    data = encode_data(Path(path), vq, tokenizer, device)
    small = {**data, "text_ids": data["text_ids"].int(), "codes": data["codes"].short() if vq.config.n_embed <= 32768
             else data["codes"].int(), "image_of_row": data["image_of_row"].int()}
    with atomic_output(output) as tmp:
        torch.save(small, tmp)
    return {"rows": len(data["text_ids"]), "images": len(data["codes"]), "rejected": len(data["rejects"])}


def sequence_loss(gpt: nn.Module, text_ids: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """The reference's objective: predict every image code from the text and the codes before it."""
    seq = torch.cat([text_ids, codes], 1)
    logits = gpt(seq[:, :-1])[:, text_ids.shape[1] - 1:]
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), codes.reshape(-1))


@torch.no_grad()
def mean_loss(gpt: nn.Module, text_ids: torch.Tensor, codes: torch.Tensor, autocast=None, batch: int = 32) -> float:
    """The objective over many rows (text_ids [N, T], codes [N, L]) in batches, weighted by rows."""
    gpt.eval()
    total = 0.0
    for start in range(0, len(text_ids), batch):
        text, rows = text_ids[start:start + batch], codes[start:start + batch]
        with autocast or contextlib.nullcontext():
            total += sequence_loss(gpt, text, rows).item() * len(text)
    return total / len(text_ids)


class GPTTask:
    def __init__(self, model: PainterModel, train: CodeData, valid: CodeData | None, loop: LoopConfig,
                 device: torch.device, dist_info: Distributed, precision: str, caption_dropout: float,
                 pad_id: int, vocab_file: Path, rewording: Rewording | None = None):
        self.model, self.device, self.train, self.valid = model, device, train, valid
        self.gpt = model.transformer.to(device)
        self.net: nn.Module = self.gpt
        if dist_info.world > 1:
            self.net = nn.parallel.DistributedDataParallel(self.gpt)
        decay = [p for n, p in self.gpt.named_parameters() if p.dim() >= 2 and "emb" not in n]
        no_decay = [p for n, p in self.gpt.named_parameters() if not (p.dim() >= 2 and "emb" not in n)]
        self.optimizers = {"gpt": torch.optim.AdamW([{"params": decay, "weight_decay": loop.weight_decay},
                                                     {"params": no_decay, "weight_decay": 0.0}],
                                                    lr=loop.lr, betas=(0.9, 0.95))}
        self.autocast, self.precision = training_autocast(precision, device)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.precision == "fp16")
        self.modules = {"gpt": self.gpt}
        self.dataset_size = len(train.text_ids)
        self.caption_dropout, self.pad_id, self.vocab_file = caption_dropout, pad_id, vocab_file
        self.rewording = rewording

    def _batch(self, data: CodeData, indices, dropout: float,
               rewording: Rewording | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(indices)
        text = data.text_ids[idx].clone()
        if rewording is not None:
            text = rewording(text)
        if dropout > 0:
            drop = torch.rand(len(idx)) < dropout
            text[drop] = self.pad_id
        return text.to(self.device), data.codes[data.image_of_row[idx]].to(self.device)

    def train_step(self, indices: list[int], scale: float, step: int) -> dict[str, float]:
        self.gpt.train()
        text, codes = self._batch(self.train, indices, self.caption_dropout, self.rewording)
        with self.autocast:
            loss = sequence_loss(self.net, text, codes)
        self.scaler.scale(loss * scale).backward()
        return {"loss": loss.item(), "tokens": float(codes.numel())}

    def optimizer_step(self, max_grad_norm: float) -> dict[str, float]:
        opt = self.optimizers["gpt"]
        self.scaler.unscale_(opt)
        norm = torch.nn.utils.clip_grad_norm_(self.gpt.parameters(), max_grad_norm)
        self.scaler.step(opt)
        self.scaler.update()
        opt.zero_grad(set_to_none=True)
        return {"grad_norm": float(norm)}

    def evaluate(self) -> dict[str, float]:
        if self.valid is None:
            return {}
        text, codes = self._batch(self.valid, range(len(self.valid.text_ids)), 0.0)
        return {"loss": mean_loss(self.gpt, text, codes, self.autocast)}

    def export(self, output: Path) -> None:
        save_painter(self.model, self.vocab_file, output / "model")


def keep_blocks(model: PainterModel, keep: tuple[int, ...]) -> PainterModel:
    """``model`` with only the transformer blocks ``keep`` (in their order): a smaller GPT that starts from
    what the larger one learnt. Removing one of bundled-large's four blocks raised its training loss from 0.01
    to 3.2-3.6 nats (18 for the first), against 7.6 for a new GPT; 25 passes took three of them to 0.21."""
    n_layer = model.config.gpt.n_layer
    if not keep or len(set(keep)) != len(keep) or any(not 0 <= i < n_layer for i in keep):
        raise PainterError(f"--keep-layers must name distinct blocks of the model's {n_layer} (0 to {n_layer - 1}), "
                           f"got {','.join(map(str, keep)) or 'none'}")
    blocks = list(model.transformer.blocks)
    model.transformer.blocks = nn.Sequential(*[blocks[i] for i in keep])
    gpt = replace(model.config.gpt, n_layer=len(keep))
    model.transformer.config = gpt
    model.config = replace(model.config, gpt=gpt)
    return model


def base_model(model: str | None, vqgan: str | None, size: str | None, vocab_file: Path,
               text_len: int = 32, keep_layers: tuple[int, ...] | None = None) -> tuple[PainterModel, Path]:
    """The model to train: a model directory or name (or some of its blocks), or a new GPT of a named size on
    a trained VQGAN."""
    if keep_layers is not None and not model:
        raise PainterError("--keep-layers takes blocks of a trained model: give --model DIR_OR_NAME")
    if model:
        checkpoint = load_checkpoint(hub.resolve(model))
        built = build_model(checkpoint)
        return (keep_blocks(built, keep_layers) if keep_layers is not None else built), checkpoint.vocab_file
    if not (vqgan and size):
        raise PainterError("say what to train: --model DIR_OR_NAME, or --vqgan DIR with --size "
                           f"({', '.join(SIZES)}) for a new GPT")
    if size not in SIZES:
        raise PainterError(f"unknown size {size!r}; choose one of {', '.join(SIZES)}")
    vq = load_vqgan(vqgan)
    n_text = TextTokenizer(vocab_file).vocab_size
    gpt = GPTConfig(vocab_size=vq.config.n_embed + n_text, block_size=text_len + vq.config.num_codes, **SIZES[size])
    fresh = PainterModel(ModelConfig(gpt=gpt, vqgan=vq.config, text_len=text_len))
    fresh.first_stage_model.load_state_dict(vq.state_dict())
    return fresh, vocab_file


def train_gpt(train: Path, output: Path, loop: LoopConfig, model: str | None = None, vqgan: str | None = None,
              size: str | None = None, vocab_file: Path | None = None, valid: Path | None = None,
              device: torch.device = torch.device("cpu"), precision: str = "auto", caption_dropout: float = 0.0,
              gradient_checkpointing: bool = False, resume: bool = False, overwrite: bool = False,
              reword: float = 0.0, keep_layers: tuple[int, ...] | None = None) -> dict:
    if not 0.0 <= caption_dropout < 1.0:
        raise PainterError(f"--caption-dropout must be in [0, 1), got {caption_dropout}")
    dist_info = Distributed.from_env(device)
    painter_model, vocab = base_model(model, vqgan, size, Path(vocab_file or DEFAULT_VOCAB), keep_layers=keep_layers)
    if caption_dropout > 0:  # the exported model says it was trained for guidance
        painter_model.config = replace(painter_model.config, caption_dropout=caption_dropout)
    painter_model.to(device)
    painter_model.transformer.gradient_checkpointing = gradient_checkpointing
    tokenizer = TextTokenizer(vocab, painter_model.config.text_len, painter_model.config.img_vocab_size)
    rewording = Rewording.from_tokenizer(tokenizer, reword) if reword != 0 else None
    output = Path(output)
    info = {"kind": "gpt", "model": model, "vqgan": vqgan, "size": size, "train": str(train),
            "keep_layers": list(keep_layers) if keep_layers is not None else None, "reword": reword,
            "valid": str(valid) if valid else None, "precision": precision, "caption_dropout": caption_dropout,
            "gpt": asdict(painter_model.config.gpt), "loop": asdict(loop)}
    resume = claim_output(output, info, resume, overwrite, dist_info)
    train_data, rejects = load_code_data(Path(train), painter_model, tokenizer, output, device, dist_info.main)
    valid_data = None
    if valid:
        valid_data, valid_rejects = load_code_data(Path(valid), painter_model, tokenizer, output, device,
                                                   dist_info.main)
        rejects += valid_rejects
    if dist_info.main and rejects:
        write_rejects(output, rejects)
    config = painter_model.config
    if config.learnt_text or config.learnt_pairs:  # a model that leaves out unlearnt text learns this data's too
        rows = (train_data.text_ids - tokenizer.img_vocab_size).tolist()
        words = list(REWORD_PREFIXES + REWORD_SUFFIXES) if rewording else []
        seen = {i for ids in rows for i in ids if i != PAD_ID} | set(tokenizer.learnt_ids(words))
        pairs = adjacent_pairs(rows) | set(tokenizer.learnt_pairs(words))
        painter_model.config = replace(
            config, learnt_text=tuple(sorted(set(config.learnt_text) | seen)) if config.learnt_text else (),
            learnt_pairs=tuple(sorted(set(config.learnt_pairs) | pairs)) if config.learnt_pairs else ())
    task = GPTTask(painter_model, train_data, valid_data, loop, device, dist_info, precision, caption_dropout,
                   pad_id=tokenizer.img_vocab_size, vocab_file=vocab, rewording=rewording)
    return run(task, loop, output, resume, dist_info)
