"""``Painter``: a loaded model that turns Chinese prompts into 256x256 pictures, whole or streamed.

The dependency direction is pipeline -> sampling -> models: this module chooses devices, batches prompts,
runs the sampler and decodes codes to images; it knows nothing of files beyond ``from_pretrained``.

Sampling, decoding and previews run on the process's one owner of the CPU cores (``cores.OWNER``), loading on a
thread of its own (``cores.apart``); the caller's thread only tokenizes, hands work over and waits (see cores.py).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import torch
from PIL import Image

from painter import hub
from painter.checkpoints import build_model, load_checkpoint
from painter.data.images import tensor_to_pil
from painter.errors import CheckpointError, SamplingError
from painter.models import GPT, PainterModel
from painter.models.gpt import fuse_qkv
from painter.models.packed import pack_linears, quantize_linears
from painter.precision import InferencePrecision, auto_candidates, resolve_device, resolve_inference
from painter.sampling import SamplingConfig, image_seeds, resolve_seed
from painter.serving.cores import OWNER, apart
from painter.serving.engine import Engine, default_max_batch
from painter.serving.preview import GREY, PreviewCanvas, PreviewMap
from painter.serving.repaint import (RepaintError, codes_from_text, codes_text, keep_mask, mask_text, stored_codes,
                                    vqgan_id)
from painter.serving.quality import VerdictStore, compare, reference_run
from painter.text import TextTokenizer, TokenizedPrompt

log = logging.getLogger(__name__)

PREVIEWS = ("fast", "decode")
CODEBOOK_KEY = "first_stage_model.quantize.embedding.weight"


@dataclass
class Frame:
    """One update of a streamed generation: the images so far (partial previews, then the final ones)."""

    step: int
    total: int
    images: list[Image.Image]
    final: bool
    seeds: list[int]
    elapsed: float
    prompt: TokenizedPrompt | None = field(default=None, repr=False)

    @property
    def image(self) -> Image.Image:
        return self.images[0]

    @property
    def tokens_per_second(self) -> float:
        return self.step * len(self.images) / self.elapsed if self.elapsed > 0 else 0.0


class Painter:
    """A text-to-image model ready to paint: ``Painter.from_pretrained(...).generate(["红苹果"])``.

    It is for inference only: the VQGAN encoder is freed, query/key/value are fused and, on CPU, the GPT's
    Linear layers are prepacked (oneDNN) or quantized (int8), so ``painter.model`` cannot be saved or trained
    (load the checkpoint again for that).
    """

    def __init__(self, model: PainterModel, tokenizer: TextTokenizer, device: torch.device,
                 inference: InferencePrecision | None = None, name: str = "model", max_batch: int | None = None,
                 codebook_id: str | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.inference = inference or resolve_inference("fp32", device)
        self.precision = self.inference.mode
        self.name = name
        self.config = model.config
        self._preview_map: PreviewMap | None = None
        self.max_batch = max_batch or default_max_batch(device)
        self._engine: Engine | None = None
        self.model_dir: Path | None = None  # where the weights came from (a repaint loads the encoder there)
        self._encoder: torch.nn.Module | None = None
        # the codebook as stored (``_load`` reads it before any dtype conversion), so every precision mode of a
        # model reads the codes its pictures carry
        self.vqgan_id = codebook_id or vqgan_id(model.first_stage_model.quantize.embedding.weight)
    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, device: str = "auto", precision: str = "auto") -> "Painter":
        """Load a model directory (EasyNLP or Painter layout) or a known model name from the cache.

        ``precision``: ``fp32`` is exact (the reference's tokens); ``bf16`` (CPU with AVX512-BF16/AMX, or GPU),
        ``fp16`` (GPU) and ``int8`` (CPU: int8 GPT, bf16 decoder where the CPU has it) are faster; ``auto``
        picks the fastest of them that is usable on the device and passes this model's quality check
        (serving/quality.py; run once per model and device, then cached), falling back to fp32.
        The model is loaded on a thread of its own (``cores.apart``), so that a load never stops other models'
        painting and leaves no OpenMP pool on the caller's thread.
        """
        return apart(cls._from_pretrained, name_or_path, device, precision)

    @classmethod
    def _from_pretrained(cls, name_or_path: str | Path, device: str, precision: str) -> "Painter":
        dev = resolve_device(device)
        model_dir = hub.resolve(name_or_path)
        name = Path(str(name_or_path)).name
        if precision == "auto":
            return cls._load_auto(model_dir, dev, name)
        return cls._load(model_dir, resolve_inference(precision, dev), dev, name)

    @classmethod
    def _load_auto(cls, model_dir: Path, dev: torch.device, name: str) -> "Painter":
        """The first usable fast mode whose stored verdict passes, checking (and storing) missing verdicts."""
        verdicts = VerdictStore(model_dir, dev, hub.cache_dir() / "quality")
        reference = None
        exact = resolve_inference("fp32", dev)
        for mode in auto_candidates(dev):
            if mode == "fp32":
                break
            inference, verdict = resolve_inference(mode, dev), verdicts.get(mode)
            if verdict is None:
                if reference is None:
                    log.warning("checking the fast modes of %s against fp32 on this device; this happens once "
                                "(verdicts kept in %s)", model_dir, verdicts.path)
                    reference = reference_run(cls._load(model_dir, exact, dev, name), decodes=2)
                painter = cls._load(model_dir, inference, dev, name)
                verdict = compare(painter, reference)
                verdicts.record(verdict)
                if verdict.passed:
                    log.info("auto precision: %s", verdict)
                    return painter
                del painter
            elif verdict.passed:
                return cls._load(model_dir, inference, dev, name)
            log.info("auto precision: skipping %s for this model: it failed the quality check (%s)", mode, verdict)
        return cls._load(model_dir, exact, dev, name)

    @classmethod
    def _load(cls, model_dir: Path, inference: InferencePrecision, dev: torch.device, name: str) -> "Painter":
        checkpoint = load_checkpoint(model_dir)
        codebook_id = vqgan_id(checkpoint.state_dict[CODEBOOK_KEY])
        tokenizer = TextTokenizer(checkpoint.vocab_file, checkpoint.config.text_len, checkpoint.config.img_vocab_size,
                                  learnt=checkpoint.config.learnt_text, pairs=checkpoint.config.learnt_pairs)
        if tokenizer.vocab_size != checkpoint.config.text_vocab_size:
            raise CheckpointError(f"{checkpoint.vocab_file} has {tokenizer.vocab_size} wordpieces but the model "
                                  f"was trained with {checkpoint.config.text_vocab_size}")
        # Each GPT block is converted as soon as it is loaded, so the original weights never all coexist with
        # the converted ones (with a Painter-layout file, which is read lazily, int8 base peaks near its size).
        model = build_model(checkpoint, prepare=lambda name, module: prepare_for_inference(module, inference, dev),
                            skip=is_encoder_key)
        fmt = checkpoint.format
        del checkpoint  # the model owns the tensors now; no other reference may keep the originals alive
        if dev.type != "cpu":
            torch.backends.cudnn.benchmark = True  # one decoder shape, so the autotuned kernels are reused
        log.info("loaded %s (%s) on %s: GPT %s, decoder %s", model_dir, fmt, dev, inference.mode,
                 str(inference.decoder_dtype).removeprefix("torch."))
        painter = cls(model, tokenizer, dev, inference, name=name, codebook_id=codebook_id)
        painter.model_dir = model_dir
        return painter

    # -- the pieces ---------------------------------------------------------------------------------------

    def tokenize(self, prompt: str) -> TokenizedPrompt:
        tokens = self.tokenizer(prompt)
        if tokens.dropped:
            log.warning("prompt is longer than %d wordpieces: %d dropped; the model sees %r",
                        self.config.text_len, tokens.dropped, tokens.used_text)
        return tokens

    def sampling(self, top_k: int | None = None, top_p: float | None = None, temperature: float | None = None,
                 guidance_scale: float | None = None) -> SamplingConfig:
        """The checked settings a generation uses: each one given, else the model's recommended one
        (``config.sampling``), else the reference's (top-k 100, top-p 1, temperature 1, no guidance)."""
        recommended = SamplingConfig(**self.config.sampling)
        return recommended.updated(top_k=top_k, top_p=top_p, temperature=temperature,
                                   guidance_scale=guidance_scale).validate(self.config.img_vocab_size)

    @property
    def engine(self) -> Engine:
        """The batching engine that samples every request for this model (made on first use with
        ``max_batch`` rows). The compiled fixed-shape step: CUDA graphs on GPUs; on CPUs traced TorchScript,
        which int8's and int4's layers allow (oneDNN-packed fp32 and bf16 layers cannot be traced, and fp32
        keeps the reference's tokens).

        Made on the owner of the cores, like every torch op: its KV cache is allocated in parallel, and made
        on a script's thread it gave that thread an OpenMP pool of its own, which slowed every later step
        2.3-2.9x. The owner is one thread, so two callers never make two engines."""
        if self._engine is None:
            OWNER.call(self._make_engine)
        return self._engine

    def _make_engine(self) -> None:
        if self._engine is None:
            compile = self.device.type == "cuda" or self.inference.quantized
            self._engine = Engine(self.model.transformer, self.tokenizer.unconditional(), self.config.img_len,
                                  self.device, self.max_batch, compile=compile)

    @staticmethod
    def set_engine_threads(threads: int | None) -> None:
        """CPU threads for the owner of the cores, which paints for every model of the process (None: torch's
        default, every core). A server keeps a core for itself: on a 2-core machine a 2-thread step waits
        whenever the server sends a frame. The caller's own thread count is left as it is."""
        OWNER.threads = threads

    def codes(self, rows: Sequence[tuple[TokenizedPrompt, int]], sampling: SamplingConfig,
              regions: Sequence[tuple[torch.Tensor, torch.Tensor] | None] | None = None) -> torch.Tensor:
        """The image codes [B, img_len] for each (prompt tokens, seed) row, all in the running batch. With
        ``regions``, a row's (cells to keep, codes) from ``region()`` repaints that picture."""
        regions = regions or [None] * len(rows)
        plain = [i for i, region in enumerate(regions) if region is None]
        tickets = dict(zip(plain, self.engine.submit_all([(rows[i][0].ids, [rows[i][1]]) for i in plain], sampling)))
        for i, region in enumerate(regions):  # each repaint its own request, in the same running batch
            if region is not None:
                tickets[i] = self.engine.submit(rows[i][0].ids, [rows[i][1]], sampling, keep=region[0],
                                                forced=region[1])
        tickets = [tickets[i] for i in range(len(rows))]
        try:
            return torch.cat([ticket.result() for ticket in tickets])
        finally:  # a failed row ends the call: its other rows stop painting, even if the error is kept alive
            for ticket in tickets:
                ticket.cancel()

    def paint(self, rows: Sequence[tuple[TokenizedPrompt, int]], sampling: SamplingConfig,
              regions: Sequence[tuple[torch.Tensor, torch.Tensor] | None] | None = None) -> list[Image.Image]:
        """One batch: an image for each (prompt tokens, seed) row (``regions``: see ``codes``), decoded; each
        carries its codes and VQGAN id in ``info`` (so the PNG it becomes can be repainted exactly)."""
        codes = self.codes(rows, sampling, regions)
        images = self.decode(codes)
        for image, row in zip(images, codes):
            image.info.update({"codes": codes_text(row), "vqgan": self.vqgan_id})
        return images

    @torch.inference_mode()
    def decode_tensors(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes [B, img_len] -> fp32 images [B, 3, R, R] (nominally in [-1, 1]) on this model's device.

        On CPU the images are decoded one at a time: the decoder is compute-bound, so batching gains nothing
        there, while a batch of four 256x256 activations costs several hundred MB of peak memory."""
        vqgan, codes = self.model.first_stage_model, codes.to(self.device)
        chunk = 1 if self.device.type == "cpu" else len(codes)
        return torch.cat([vqgan.decode(part).float() for part in codes.split(chunk)])

    def decode(self, codes: torch.Tensor, sampled: int | None = None) -> list[Image.Image]:
        """Codes [B, img_len] -> PIL images. With ``sampled`` < img_len, cells from ``sampled`` on are grey.
        Runs on the owner of the cores, between token steps."""
        return OWNER.call(self._decode, codes, sampled)

    def _decode(self, codes: torch.Tensor, sampled: int | None) -> list[Image.Image]:
        images = self.decode_tensors(codes)
        if sampled is not None and sampled < self.config.img_len:
            images = grey_out(images, sampled, self.config.vqgan.grid_size)
        return tensor_to_pil(images)

    # -- the API ------------------------------------------------------------------------------------------

    def generate(self, prompts: str | Sequence[str], seed: int = 0, num_images: int = 1, top_k: int | None = None,
                 top_p: float | None = None, temperature: float | None = None, batch_size: int = 8,
                 guidance_scale: float | None = None) -> list[list[Image.Image]]:
        """One list of images per prompt. Image j of a prompt uses seed + j (seed -1: a random one, reported
        in each image's ``info['seed']``). Sampling settings left as None are the model's (``sampling()``)."""
        if isinstance(prompts, str):
            prompts = [prompts]
        if batch_size < 1:
            raise SamplingError(f"batch_size must be at least 1, got {batch_size}")
        sampling = self.sampling(top_k, top_p, temperature, guidance_scale)
        seeds = image_seeds(resolve_seed(seed), num_images)
        tokenized = [self.tokenize(p) for p in prompts]
        rows = [(i, tokens, s) for i, tokens in enumerate(tokenized) for s in seeds]
        results: list[list[Image.Image]] = [[] for _ in prompts]
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            codes = self.codes([(t, s) for _, t, s in chunk], sampling)
            for (i, tokens, s), image, row in zip(chunk, self.decode(codes), codes):
                image.info.update(self._params(prompts[i], tokens, s, sampling, row))
                results[i].append(image)
        return results

    def image_codes(self, image: Image.Image) -> torch.Tensor:
        """A picture's codes [img_len] under this model's VQGAN: those stored in its metadata when Painter made it
        on this VQGAN (exact), else the encoder's, after the training's preprocessing (resize, centre crop)."""
        stored = stored_codes(image)
        if stored is not None:
            text, made_by = stored
            if made_by != self.vqgan_id:
                raise RepaintError(f"the picture was painted on another VQGAN (codebook {made_by}, this model's "
                                   f"{self.vqgan_id}): repaint it with the model that made it")
            return codes_from_text(text, self.config.img_len, self.config.img_vocab_size)
        return OWNER.call(self._encode, image)

    @torch.inference_mode()
    def _encode(self, image: Image.Image) -> torch.Tensor:
        from painter.checkpoints import load_vqgan, vqgan_folder
        from painter.data.images import to_model_input

        if not self.config.vqgan.encoder:
            raise RepaintError(f"{self.name} has no VQGAN encoder (converted from PaddleNLP), so it can repaint only "
                               "pictures it painted itself")
        if self._encoder is None:
            if self.model_dir is None:
                raise RepaintError("this model was not loaded from a folder, so its encoder cannot be loaded")
            self._encoder = load_vqgan(vqgan_folder(self.model_dir)).to(self.device).eval()
        pixels = to_model_input(image, self.config.vqgan.resolution)[None].to(self.device)
        return self._encoder.encode(pixels)[0].cpu()

    def region(self, image: Image.Image, keep_rows: int | None = None, box=None,
               mask=None) -> tuple[torch.Tensor, torch.Tensor]:
        """What a repaint keeps: (the cells to keep [img_len], the picture's codes [img_len]), from exactly one
        of ``keep_rows`` (the first rows of cells), ``box`` (x0, y0, x1, y1 in cells, end exclusive: repainted)
        or ``mask`` (grid x grid, true = keep)."""
        if not isinstance(image, Image.Image):
            raise RepaintError(f"image must be a PIL image, got {type(image).__name__}")
        keep = keep_mask(self.config.vqgan.grid_size, keep_rows, box, mask)
        return keep, self.image_codes(image)

    def repaint(self, image: Image.Image, prompt: str, *, keep_rows: int | None = None, box=None, mask=None,
                seed: int = 0, num_images: int = 1, top_k: int | None = None, top_p: float | None = None,
                temperature: float | None = None, guidance_scale: float | None = None) -> list[Image.Image]:
        """Keep part of a picture (ours, with its exact codes, or any other, encoded) and paint the rest for
        ``prompt`` (see ``region``). Image j uses seed + j; ``stream(repaint=painter.region(...))`` streams it."""
        *_, last = self.stream(prompt, seed, num_images, top_k, top_p, temperature, preview_every=0,
                               guidance_scale=guidance_scale, repaint=self.region(image, keep_rows, box, mask))
        return last.images

    def preview_map(self) -> PreviewMap:
        """This model's fast-preview map (fitted on first use, then read from the cache directory)."""
        if self._preview_map is None:
            self._preview_map = OWNER.call(PreviewMap.for_vqgan, self.model.first_stage_model,
                                           hub.cache_dir() / "previews")
        return self._preview_map

    def warm_up(self) -> None:
        """Everything a first painting would otherwise wait for: the engine, the traces of its steps for every
        batch size, the decoder's first run (its kernels are chosen then) and the fast-preview map. A server
        calls it in the background for the models it lists."""
        self.engine.trace_ahead()
        self.decode(torch.zeros(1, self.config.img_len, dtype=torch.long))
        self.preview_map()

    def stream(self, prompt: str, seed: int = 0, num_images: int = 1, top_k: int | None = None,
               top_p: float | None = None, temperature: float | None = None, preview_every: int = 8,
               guidance_scale: float | None = None, preview: str = "fast",
               min_interval: float = 0.0, repaint: tuple[torch.Tensor, torch.Tensor] | None = None) -> Iterator[Frame]:
        """Yield a preview Frame every ``preview_every`` tokens (0: none), then the final frame (a real decode).
        A preview due less than ``min_interval`` seconds after the last one is skipped, not drawn (a server
        sending frames to a browser needs a few a second, however fast the tokens come).
        ``preview="fast"`` paints sampled cells with the preview map (near-free); ``"decode"`` runs the real
        decoder on the partial grid. Unsampled cells are grey. Closing the iterator stops sampling at once.
        Sampling settings left as None are the model's (``sampling()``). ``repaint`` (from ``region()``) keeps
        those cells with their codes: the fast previews show them from the first frame."""
        if isinstance(preview_every, bool) or not isinstance(preview_every, int) or preview_every < 0:
            raise SamplingError(f"preview_every must be a whole number >= 0, got {preview_every!r}")
        if isinstance(min_interval, bool) or not isinstance(min_interval, (int, float)) or not min_interval >= 0:
            raise SamplingError(f"min_interval must be a number of seconds >= 0, got {min_interval!r}")
        if preview not in PREVIEWS:
            raise SamplingError(f"preview must be one of {', '.join(PREVIEWS)}, got {preview!r}")
        sampling = self.sampling(top_k, top_p, temperature, guidance_scale)
        seeds = image_seeds(resolve_seed(seed), num_images)
        tokens = self.tokenize(prompt)
        total = self.config.img_len
        keep, source = repaint if repaint is not None else (None, None)
        canvas = None
        if preview == "fast" and preview_every:
            canvas = OWNER.call(PreviewCanvas, self.preview_map(),
                                self.model.first_stage_model.quantize.embedding.weight, len(seeds), keep, source)
        started = time.perf_counter()
        shown = -min_interval
        for step, codes in self.engine.submit(tokens.ids, seeds, sampling, preview_every, keep=keep, forced=source):
            final = step == total
            elapsed = time.perf_counter() - started
            if final or elapsed - shown >= min_interval:
                shown = elapsed
                if final or canvas is None:
                    images = self.decode(codes, sampled=step)
                else:
                    images = OWNER.call(lambda: tensor_to_pil(canvas.update(codes, step)))
                if final:
                    for image, s, row in zip(images, seeds, codes):
                        image.info.update(self._params(prompt, tokens, s, sampling, row))
                        if keep is not None:
                            image.info["repainted"] = json.dumps({"kept": int(keep.sum()), "mask": mask_text(keep)})
                yield Frame(step, total, images, final, seeds, time.perf_counter() - started, tokens)

    def _params(self, prompt: str, tokens: TokenizedPrompt, seed: int, sampling: SamplingConfig,
                codes: torch.Tensor) -> dict:
        """What a picture was painted with, and its codes (so it can be repainted exactly)."""
        return {"prompt": prompt, "used_prompt": tokens.used_text, "dropped_tokens": tokens.dropped,
                "seed": seed, "top_k": sampling.top_k, "top_p": sampling.top_p,
                "temperature": sampling.temperature, "guidance_scale": sampling.guidance_scale, "model": self.name,
                "codes": codes_text(codes), "vqgan": self.vqgan_id}


def is_encoder_key(key: str) -> bool:
    """Painting only decodes: the VQGAN encoder (29M parameters at the f16 config) is never loaded."""
    return key.startswith(("first_stage_model.encoder.", "first_stage_model.quant_conv."))


def prepare_for_inference(module: torch.nn.Module, inference: InferencePrecision, device: torch.device) -> None:
    """Convert a freshly loaded GPT block, or the whole model once its last tensors are in, for inference:
    device and dtypes, fused query/key/value, and on CPU int8 or int4 (with a bf16 token embedding) or
    oneDNN-packed Linear layers and a channels-last decoder. Parts converted earlier are left as they are."""
    if isinstance(module, PainterModel):
        module.first_stage_model.drop_encoder()
        module.first_stage_model.to(device=device, dtype=inference.decoder_dtype)
        if device.type == "cpu":  # oneDNN convolutions run channels-last natively: no reordered activations
            module.first_stage_model.to(memory_format=torch.channels_last)
        module = module.transformer
    fuse_qkv(module.to(device=device, dtype=inference.gpt_dtype))
    if device.type == "cpu":
        if inference.quantized:
            quantize_linears(module, bits=4 if inference.mode == "int4" else 8)
            if isinstance(module, GPT):  # 115 MB in fp32 for base, read one row per token: bf16 halves the
                module.tok_emb.to(torch.bfloat16)  # peak memory's largest fp32 tensor at no measurable KL cost
        else:
            pack_linears(module)


def grey_out(images: torch.Tensor, sampled: int, grid: int) -> torch.Tensor:
    """Paint the image cells of codes ``sampled``.. (row-major) neutral grey."""
    cell = images.shape[-1] // grid
    row, col = divmod(sampled, grid)
    images = images.clone()
    images[:, :, (row + 1) * cell:, :] = GREY
    images[:, :, row * cell:(row + 1) * cell, col * cell:] = GREY
    return images

