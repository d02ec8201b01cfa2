"""Does a fast precision mode paint like fp32 for this model, on this device? The check 'auto' relies on.

A mode passes when, along image-code trajectories sampled by fp32 (fixed prompts and seeds), the mean
KL(fp32 || mode) of the next-token distributions is at most 0.02 nats, and its VQGAN decode of the same codes
is within 40 dB PSNR of fp32's (8-bit images, as written to PNG). Both models are fed the same fp32 trajectory
through their own sampling path (a prefill, then cached one-token steps with the mode's key/value cache), so
errors do not compound. Quantization error depends on the weights, so one model may pass where another fails;
the verdicts are therefore kept per model file and device in the cache directory (``quality/``), and the
check runs once. ``bench/quality.py`` prints the same numbers for a table.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from painter.data.images import psnr
from painter.models import GPT, KVCache
from painter.sampling import SamplingConfig

log = logging.getLogger(__name__)

KL_TARGET, PSNR_TARGET = 0.02, 40.0
CHECK_PROMPTS = ("红苹果", "一只猫", "蓝色的汽车", "笑脸")


@dataclass(frozen=True)
class Reference:
    """What fp32 did: the sequences it sampled (text ids then codes), its logits along them and its decodes."""

    sequences: torch.Tensor  # [N, text_len + img_len]
    logits: torch.Tensor  # [N, img_len, V]
    images: torch.Tensor  # [D, 3, R, R], decodes of the first D code rows
    text_len: int

    @property
    def codes(self) -> torch.Tensor:
        return self.sequences[:, self.text_len:]


@dataclass(frozen=True)
class Verdict:
    mode: str
    kl: float
    top1: float
    decoder_psnr: float
    decoder: str

    @property
    def passed(self) -> bool:
        return self.kl <= KL_TARGET and self.decoder_psnr >= PSNR_TARGET

    def __str__(self) -> str:
        return (f"{self.mode}: next-token KL {self.kl:.4f} nats (target <= {KL_TARGET}), top-1 agreement "
                f"{self.top1:.3f}, {self.decoder} decoder PSNR {self.decoder_psnr:.1f} dB (target >= {PSNR_TARGET})")


@torch.inference_mode()
def stepped_logits(gpt: GPT, sequences: torch.Tensor, text_len: int, batch: int = 4) -> torch.Tensor:
    """Next-code logits [N, L, V] along ``sequences`` [N, text_len + L] (text ids, then codes), computed the way
    sampling computes them: a prefill of the text, then one cached step per code."""
    out = []
    for rows in sequences.split(batch):
        cache = KVCache.empty(gpt.config, len(rows), gpt.pos_emb.dtype, rows.device, max_len=rows.shape[1] - 1)
        logits = [gpt.forward_cached(rows[:, :text_len], cache)]
        logits += [gpt.forward_cached(rows[:, pos:pos + 1], cache) for pos in range(text_len, rows.shape[1] - 1)]
        out.append(torch.stack(logits, 1).float())
    return torch.cat(out)


def divergence(reference: torch.Tensor, candidate: torch.Tensor) -> tuple[float, float]:
    """Mean KL(reference || candidate) in nats between the softmaxes of two logit tensors [..., V], and the
    fraction of positions whose most likely code agrees."""
    ref, cand = F.log_softmax(reference.float(), -1), F.log_softmax(candidate.float(), -1)
    kl = (ref.exp() * (ref - cand)).sum(-1).mean().item()
    return kl, (ref.argmax(-1) == cand.argmax(-1)).float().mean().item()


def reference_run(exact, prompts=CHECK_PROMPTS, decodes: int | None = None, seed: int = 0) -> Reference:
    """Sample one trajectory per prompt with ``exact`` (an fp32 Painter) and record its logits along them and
    the decodes of the first ``decodes``."""
    tokenize = exact.tokenizer.reading_all()  # a model that never learnt 笑 is checked on the same prompts
    rows = [(tokenize(p), seed + i) for i, p in enumerate(prompts)]
    codes = exact.codes(rows, SamplingConfig().validate(exact.config.img_vocab_size)).cpu()
    text = torch.tensor([tokens.ids for tokens, _ in rows])
    sequences = torch.cat([text, codes], 1)
    text_len = exact.config.text_len
    with torch.inference_mode():  # in fp32 one full forward equals the cached steps (to ~1e-6) and is faster
        logits = torch.cat([exact.model.transformer(chunk[:, :-1].to(exact.device))[:, text_len - 1:].float().cpu()
                            for chunk in sequences.split(4)])
    return Reference(sequences, logits, exact.decode_tensors(codes[:decodes]).cpu(), text_len)


def compare(fast, reference: Reference) -> Verdict:
    """How far ``fast`` (a Painter in a non-exact mode) is from the reference run. The int4 mode runs other
    kernels for one row than for four (int4, then int8), so it is stepped both ways and the worse one counts."""
    batches = (4, 1) if fast.precision == "int4" else (4,)
    kl, top1 = max(divergence(reference.logits, stepped_logits(fast.model.transformer,
                                                               reference.sequences.to(fast.device),
                                                               reference.text_len, batch).cpu())
                   for batch in batches)
    images = fast.decode_tensors(reference.codes[:len(reference.images)]).cpu()
    return Verdict(fast.precision, kl, top1, psnr(images, reference.images),
                   str(fast.inference.decoder_dtype).removeprefix("torch."))


KERNELS = "int8 per-row activations, int4 groups up to 2 rows"  # our own kernels' version: a change re-runs the checks


def device_key(device: torch.device) -> str:
    """What a verdict depends on besides the weights: the kernels, i.e. ours, torch's version and the
    hardware."""
    if device.type == "cuda":
        hardware = torch.cuda.get_device_name(device)
    else:
        hardware = torch.backends.cpu.get_cpu_capability()
    return f"{KERNELS}; torch {torch.__version__} {device.type} {hardware}"


class VerdictStore:
    """The verdicts for one model's files on one kind of device, in a small JSON file under ``cache``.

    The file is named after the model directory's weights (path, size and modification time of each file) and
    ``device_key``, so new weights or another machine are checked afresh. An unreadable file is checked again;
    an unwritable cache only costs a second check next time.
    """

    def __init__(self, model_dir: Path, device: torch.device, cache: Path):
        key = hashlib.sha256(device_key(device).encode())
        model_dir = Path(model_dir).resolve()
        key.update(str(model_dir).encode())
        for path in sorted(model_dir.iterdir()):
            if path.is_file():
                stat = path.stat()
                key.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
        self.path = Path(cache) / f"{model_dir.name}-{key.hexdigest()[:16]}.json"
        self.verdicts: dict[str, Verdict] = {}
        if self.path.is_file():
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
                self.verdicts = {mode: Verdict(**fields) for mode, fields in data["verdicts"].items()}
            except (OSError, ValueError, TypeError, KeyError) as exc:
                log.warning("ignoring unreadable quality verdicts %s (%s); checking again", self.path, exc)

    def get(self, mode: str) -> Verdict | None:
        return self.verdicts.get(mode)

    def record(self, verdict: Verdict) -> None:
        self.verdicts[verdict.mode] = verdict
        data = {"verdicts": {mode: asdict(v) for mode, v in self.verdicts.items()}}
        tmp = self.path.with_suffix(f".tmp{os.getpid()}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            log.warning("could not store the quality verdict in %s (%s); it will be checked again", self.path, exc)
