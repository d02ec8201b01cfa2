"""Reading and writing model directories, strictly.

Two layouts are supported:

* **EasyNLP** (the public pai-painter checkpoints): ``config.json`` with ``model_type: artist``,
  ``pytorch_model.bin`` holding ``first_stage_model.*`` (VQGAN) and ``transformer.*`` (GPT), ``vocab.txt``.
  The VQGAN sizes are not in that config (EasyNLP hard-codes taming's f16/16384 model); a ``vqgan`` object
  may be added to describe another VQGAN, which EasyNLP ignores, and so may ``sampling`` (both layouts): the
  settings the model paints best with, e.g. ``{"top_k": 10, "temperature": 0.2}``.
* **Painter** (ours): ``config.json`` with ``format: painter`` and the full GPT + VQGAN config,
  ``model.safetensors`` with the same tensor names, ``vocab.txt``.

EasyNLP loads with ``strict=False`` and silently runs half-random models; here every expected tensor must be
present with the right shape and nothing else may be there except the constant ``attn.mask`` buffers.
Nothing untrusted is executed: ``torch.load(weights_only=True)`` and safetensors.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import struct
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Iterable

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from painter.data.files import atomic_output
from painter.errors import CheckpointError, ConfigError, ModelNotFoundError, SamplingError
from painter.models import VQGAN, GPTConfig, ModelConfig, PainterModel, VQGANConfig
from painter.models.model import check_vqgan
from painter.models.gpt import reference_attention_mask
from painter.text import TextTokenizer
from painter.sampling import sampling_settings

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
VOCAB_FILE = "vocab.txt"
EASYNLP_WEIGHTS = "pytorch_model.bin"
PAINTER_WEIGHTS = "model.safetensors"
PAINTER_FORMAT_VERSION = 1

# Fields of an EasyNLP ARTIST config.json and the values a missing one takes.
EASYNLP_DEFAULTS = {
    "vocab_size": 37512, "img_vocab_size": 16384, "text_vocab_size": 21128, "block_size": 288,
    "n_layer": 12, "n_head": 12, "n_embd": 768, "embd_pdrop": 0.0, "resid_pdrop": 0.0,
    "attn_pdrop": 0.0, "n_unmasked": 0,
}
_MASK_KEY = re.compile(r"^transformer\.blocks\.(\d+)\.attn\.mask$")


@dataclass
class Checkpoint:
    """A model directory read into memory: its config, its tensors and where its vocabulary is."""

    config: ModelConfig
    state_dict: Mapping[str, torch.Tensor]  # a SafetensorsFile (read on access) for the Painter layout
    vocab_file: Path
    format: str
    path: Path


def detect_format(model_dir: Path) -> str:
    for name, fmt in ((PAINTER_WEIGHTS, "painter"), (EASYNLP_WEIGHTS, "easynlp")):
        path = model_dir / name
        if path.is_file():
            return fmt
        if path.exists() or path.is_symlink():  # a link to /dev/zero, a folder, a dangling link
            raise CheckpointError(f"{path} is not a regular file (a link to {os.path.realpath(path)}?); a model's "
                                  "weights must be a file in its folder")
    found = sorted(p.name for p in model_dir.iterdir()) if model_dir.is_dir() else []
    raise CheckpointError(f"{model_dir} holds no weights: expected {PAINTER_WEIGHTS} (Painter) or "
                          f"{EASYNLP_WEIGHTS} (EasyNLP); found {found or 'nothing'}")


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"{path} is missing; a model directory needs its config.json")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from exc
    except ValueError as exc:  # e.g. an integer of thousands of digits, which Python refuses to convert
        raise ConfigError(f"{path} holds a value no model config has: {str(exc)[:120]}") from None
    except RecursionError:
        raise ConfigError(f"{path} nests JSON too deeply to be a model config") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object")
    return data


def easynlp_config(data: dict, source: Path) -> ModelConfig:
    """ModelConfig from an EasyNLP ARTIST config.json (missing fields take EasyNLP's defaults)."""
    if "model_type" not in data:
        raise ConfigError(f"{source} has no model_type; a pai-painter config says \"model_type\": \"artist\"")
    if data["model_type"] != "artist":
        raise ConfigError(f"{source} is for model_type {data['model_type']!r}, not a pai-painter (artist) model")
    f = {**EASYNLP_DEFAULTS, **{k: v for k, v in data.items() if k in EASYNLP_DEFAULTS}}
    for key in ("img_vocab_size", "text_vocab_size"):  # used in arithmetic below, before the model's own checks
        value = f[key]
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1 << 20:
            raise ConfigError(f"{source}: {key} must be a whole number from 1 to {1 << 20}, got {value!r}")
    try:
        vqgan = VQGANConfig(**{"n_embed": f["img_vocab_size"], **data.get("vqgan", {})})
        gpt = GPTConfig(**{k: f[k] for k in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd",
                                             "embd_pdrop", "resid_pdrop", "attn_pdrop", "n_unmasked")})
    except TypeError as exc:
        raise ConfigError(f"{source}: {exc}") from exc
    config = ModelConfig(gpt=gpt, vqgan=vqgan, text_len=data.get("text_len", 32))
    try:
        config.validate()
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from exc
    problems = []
    if f["img_vocab_size"] != vqgan.n_embed:
        problems.append(f"img_vocab_size {f['img_vocab_size']} != VQGAN codebook {vqgan.n_embed}")
    if f["vocab_size"] != f["img_vocab_size"] + f["text_vocab_size"]:
        problems.append(f"vocab_size {f['vocab_size']} != img_vocab_size {f['img_vocab_size']} + "
                        f"text_vocab_size {f['text_vocab_size']}")
    if problems:
        raise ConfigError(f"{source}: inconsistent sizes: " + "; ".join(problems))
    return with_recommended_sampling(config, data, source)


def easynlp_config_dict(config: ModelConfig) -> dict:
    g = asdict(config.gpt)
    data = {"model_type": "artist", "img_vocab_size": config.img_vocab_size,
            "text_vocab_size": config.text_vocab_size, **g}
    if config.vqgan != VQGANConfig(n_embed=config.img_vocab_size):
        data["vqgan"] = asdict(config.vqgan)
    if config.text_len != 32:
        data["text_len"] = config.text_len
    data.update(config.optional_fields())  # EasyNLP ignores keys it does not know
    return data


def domain_words(value, source: Path | str = "domain_words") -> tuple[str, ...]:
    """A config's or a command line's domain words, checked: a list of short, non-empty strings."""
    if not isinstance(value, (list, tuple)) or len(value) > 64 or not all(
            isinstance(w, str) and 0 < len(w.strip()) <= 32 for w in value):
        raise ConfigError(f'{source}: "domain_words" must be a list of at most 64 words (1-32 characters each), '
                          f"got {value!r}"[:300])
    return tuple(dict.fromkeys(w.strip() for w in value))


def _wordpiece_ids(value, text_vocab_size: int) -> bool:
    """Whether ``value`` is a list of vocabulary ids of a text vocabulary of this size (JSON numbers, not bools)."""
    return isinstance(value, (list, tuple)) and all(
        isinstance(i, int) and not isinstance(i, bool) and 0 <= i < text_vocab_size for i in value)


def learnt_text(value, text_vocab_size: int, source: Path | str = "learnt_text") -> tuple[int, ...]:
    """A config's learnt wordpieces, checked: vocabulary ids of this model's text vocabulary."""
    if not _wordpiece_ids(value, text_vocab_size):
        raise ConfigError(f'{source}: "learnt_text" must be a list of wordpiece ids in [0, {text_vocab_size}), '
                          f"got {value!r}"[:300])
    return tuple(sorted(set(value)))


def learnt_pairs(value, text_vocab_size: int, source: Path | str = "learnt_pairs") -> tuple[tuple[int, int], ...]:
    """A config's learnt wordpiece pairs, checked: [a, b] lists of vocabulary ids of this model's text vocabulary."""
    if not isinstance(value, (list, tuple)) or not all(
            _wordpiece_ids(p, text_vocab_size) and len(p) == 2 for p in value):
        raise ConfigError(f'{source}: "learnt_pairs" must be a list of [a, b] pairs of wordpiece ids in '
                          f"[0, {text_vocab_size}), got {value!r}"[:300])
    return tuple(sorted({(a, b) for a, b in value}))


def with_recommended_sampling(config: ModelConfig, data: dict, source: Path) -> ModelConfig:
    """``config`` with the checked sampling settings of its config.json (either layout), whether guidance
    helps it, the domain words it learnt and the wordpieces (and pairs of them) its captions used."""
    guidance = data.get("guidance")
    if guidance is not None and not isinstance(guidance, bool):
        raise ConfigError(f'{source}: "guidance" must be true or false, got {guidance!r}')
    words = domain_words(data.get("domain_words", []), source)
    learnt = learnt_text(data.get("learnt_text", []), config.text_vocab_size, source)
    pairs = learnt_pairs(data.get("learnt_pairs", []), config.text_vocab_size, source)
    try:
        return replace(config, sampling=sampling_settings(data.get("sampling", {}), config.img_vocab_size),
                       guidance=guidance, domain_words=words, learnt_text=learnt, learnt_pairs=pairs)
    except SamplingError as exc:
        raise ConfigError(f'{source}: "sampling": {exc}') from exc


def painter_config(data: dict, source: Path) -> ModelConfig:
    version = data.get("format_version")
    if version != PAINTER_FORMAT_VERSION:
        raise ConfigError(f"{source}: Painter format version {version!r} is not supported "
                          f"(this Painter reads version {PAINTER_FORMAT_VERSION})")
    try:
        config = ModelConfig.from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from exc
    return with_recommended_sampling(config, data, source)


def read_config(model_dir: Path) -> tuple[ModelConfig, str]:
    """The model's config and its layout ('painter' or 'easynlp')."""
    fmt = detect_format(model_dir)
    data = _read_json(model_dir / CONFIG_FILE)
    if fmt == "painter":
        return painter_config(data, model_dir / CONFIG_FILE), fmt
    return easynlp_config(data, model_dir / CONFIG_FILE), fmt


def expected_shapes(config: ModelConfig) -> dict[str, torch.Size]:
    with torch.device("meta"):
        return {k: v.shape for k, v in PainterModel(config).state_dict().items()}


def check_state_dict(state: dict[str, torch.Tensor], config: ModelConfig, source: Path) -> dict[str, torch.Tensor]:
    """Raise CheckpointError unless ``state`` holds exactly the model's tensors; return it without masks."""
    def is_mask(key: str) -> bool:
        m = _MASK_KEY.match(key)
        return bool(m and int(m.group(1)) < config.gpt.n_layer)

    return check_tensors(state, expected_shapes(config), source, ignored=is_mask)


_SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                       "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
                       "U8": torch.uint8, "BOOL": torch.bool}


class SafetensorsFile(Mapping[str, torch.Tensor]):
    """The tensors of a safetensors file, each read from disk when asked for.

    Shapes and dtypes come from the header, so a checkpoint is checked without reading its weights, and a
    loader that shrinks the model piece by piece (int8, bf16) never holds all the original weights at once.
    Tensors are read into ordinary memory rather than memory-mapped: mapped pages, once touched, would stay
    resident for as long as any tensor of the file lives. ``extra`` tensors (a shared VQGAN's) are served
    alongside the file's.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            safe_open(str(path), framework="pt", device="cpu")  # validates the header and the file's length
            with open(path, "rb") as fh:
                size = struct.unpack("<Q", fh.read(8))[0]
                self._header = json.loads(fh.read(size))
            self._header.pop("__metadata__", None)
            self._data_start = 8 + size
        except (SafetensorError, OSError, ValueError, struct.error) as exc:
            raise CheckpointError(f"{path} could not be read (truncated or corrupt safetensors file): {exc}") from exc
        self.extra: dict[str, torch.Tensor] = {}

    def __getitem__(self, key: str) -> torch.Tensor:
        if key in self.extra:
            return self.extra[key]
        entry = self._header[key]
        begin, end = entry["data_offsets"]
        buffer = bytearray(end - begin)
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self._data_start + begin)
                complete = fh.readinto(buffer) == len(buffer)
        except OSError as exc:
            raise CheckpointError(f"{self.path} could not be read at {key}: {exc}") from exc
        if not complete:
            raise CheckpointError(f"{self.path} is truncated: {key} is cut short")
        dtype = _SAFETENSORS_DTYPES[entry["dtype"]]
        if not buffer:
            return torch.empty(entry["shape"], dtype=dtype)
        return torch.frombuffer(buffer, dtype=dtype).reshape(entry["shape"])

    def __iter__(self):
        yield from self._header
        yield from (k for k in self.extra if k not in self._header)

    def __len__(self) -> int:
        return len(set(self._header) | set(self.extra))

    def header(self, key: str) -> tuple[torch.Size, bool]:
        """(shape, is a float dtype) of a tensor, without reading it."""
        if key in self.extra:
            return self.extra[key].shape, self.extra[key].is_floating_point()
        entry = self._header[key]
        return torch.Size(entry["shape"]), entry["dtype"] in ("F16", "BF16", "F32", "F64")


def _header(state: Mapping[str, torch.Tensor], key: str) -> tuple[torch.Size, bool]:
    if isinstance(state, SafetensorsFile):
        return state.header(key)
    return state[key].shape, state[key].is_floating_point()


def check_tensors(state: Mapping[str, torch.Tensor], expected: dict[str, torch.Size], source: Path,
                  ignored=lambda key: False) -> Mapping[str, torch.Tensor]:
    """Every expected tensor present, float, of the right shape; nothing else but ``ignored`` keys.
    Returns the expected tensors (a lazy file stays lazy); the error names each key and both shapes."""
    problems = []
    unexpected = [k for k in state if k not in expected and not ignored(k)]
    missing = [k for k in expected if k not in state]
    headers = {k: _header(state, k) for k in expected if k in state}
    mismatched = [k for k, (shape, _) in headers.items() if shape != expected[k]]
    for k in mismatched:
        problems.append(f"{k} has shape {list(headers[k][0])} but the config needs {list(expected[k])}")
    if missing:
        problems.append(f"{len(missing)} missing tensor(s): {', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensor(s): "
                        f"{', '.join(unexpected[:5])}{' …' if len(unexpected) > 5 else ''}")
    non_float = [k for k, (_, is_float) in headers.items() if not is_float]
    if non_float:
        problems.append(f"non-float tensor(s): {', '.join(non_float[:5])}")
    if problems:
        raise CheckpointError(f"{source} does not match its config: " + "; ".join(problems))
    if isinstance(state, SafetensorsFile):
        return state  # nothing unexpected can be in it: only EasyNLP files have ignored keys
    return {k: state[k] for k in expected}


def _load_torch_bin(path: Path) -> dict[str, torch.Tensor]:
    # Read into memory rather than memory-mapping: once the CPU path has repacked the GPT weights the
    # originals can be freed, whereas mapped file pages would stay resident beside the copies.
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated, corrupt or unsafe pickles
        raise CheckpointError(f"{path} could not be read (truncated or corrupt file, or not a PyTorch state dict): "
                              f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a dictionary of tensors")
    return state


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} could not be read (truncated or corrupt safetensors file): {exc}") from exc


def _shared_vqgan_tensors(model_dir: Path, config: ModelConfig) -> dict[str, torch.Tensor]:
    """A Painter model may name a VQGAN directory (``"vqgan_path"``, relative to itself) instead of holding
    the VQGAN tensors, so several models trained on one VQGAN (the demo pair) ship it once."""
    relative = _read_json(model_dir / CONFIG_FILE).get("vqgan_path")
    if not relative:
        return {}
    if not isinstance(relative, str):
        raise ConfigError(f'{model_dir / CONFIG_FILE}: "vqgan_path" must be a folder name, got {relative!r}')
    vqgan_dir = (model_dir / relative).resolve()
    if not vqgan_dir.is_dir():
        raise ModelNotFoundError(f"{model_dir / CONFIG_FILE} uses the VQGAN in {vqgan_dir}, which does not exist")
    if not (vqgan_dir / VQGAN_WEIGHTS).is_file():  # e.g. "." : the model itself, which would recurse
        raise ConfigError(f'{model_dir / CONFIG_FILE}: "vqgan_path" {relative!r} is not a VQGAN folder '
                          f"(config.json and {VQGAN_WEIGHTS})")
    vqgan = load_vqgan(vqgan_dir)
    if vqgan.config != config.vqgan:
        what = ("white code" if replace(vqgan.config, white_code=config.vqgan.white_code) == config.vqgan
                else "sizes")
        raise ConfigError(f"the VQGAN in {vqgan_dir} does not have the {what} {model_dir / CONFIG_FILE} expects")
    return {f"first_stage_model.{k}": v for k, v in vqgan.state_dict().items()}


def vqgan_folder(model_dir: str | Path) -> Path:
    """Where a model's VQGAN is read from cheapest: the shared VQGAN folder its config names, else the model."""
    model_dir = Path(model_dir)
    if (model_dir / VQGAN_WEIGHTS).is_file() or not (model_dir / CONFIG_FILE).is_file():
        return model_dir
    relative = _read_json(model_dir / CONFIG_FILE).get("vqgan_path")
    return (model_dir / relative).resolve() if isinstance(relative, str) and relative else model_dir


def load_checkpoint(model_dir: str | Path) -> Checkpoint:
    """Read and strictly check a model directory of either layout."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelNotFoundError(f"model directory {model_dir} does not exist")
    config, fmt = read_config(model_dir)
    vocab = model_dir / VOCAB_FILE
    if not vocab.is_file():
        raise CheckpointError(f"{vocab} is missing; copy the model's vocab.txt (Chinese BERT, 21,128 lines) there")
    weights = model_dir / (PAINTER_WEIGHTS if fmt == "painter" else EASYNLP_WEIGHTS)
    raw = SafetensorsFile(weights) if fmt == "painter" else _load_torch_bin(weights)
    if fmt == "painter":
        raw.extra.update(_shared_vqgan_tensors(model_dir, config))
    state = check_state_dict(raw, config, weights)
    log.info("read %s model from %s (%d tensors)", fmt, model_dir, len(state))
    return Checkpoint(config=config, state_dict=state, vocab_file=vocab, format=fmt, path=model_dir)


_BLOCK_KEY = re.compile(r"^(transformer\.blocks\.\d+)\.")


def build_model(checkpoint: Checkpoint, prepare: Callable[[str, nn.Module], None] | None = None,
                skip: Callable[[str], bool] = lambda key: False) -> PainterModel:
    """Networks holding the checkpoint's tensors (in fp32), without first allocating random weights.

    Tensors are assigned one group at a time, each GPT block and then the rest, and ``prepare(name, module)``
    runs after each group (name "" for the rest, with the whole model): a caller that shrinks what it has just
    loaded never holds the whole original model, which for a lazily read safetensors file bounds the peak
    memory by the final model plus one block. A dict state is emptied as it is loaded. ``skip`` keys are not loaded (their modules stay on 'meta' and
    must be dropped by ``prepare``).
    """
    with torch.device("meta"):
        model = PainterModel(checkpoint.config)
    state = checkpoint.state_dict
    # A dict is consumed as it is loaded, so that each original tensor can die as soon as it is converted.
    take = state.pop if isinstance(state, dict) else state.__getitem__
    groups: dict[str, list[str]] = {}
    for key in state:
        if not skip(key):
            match = _BLOCK_KEY.match(key)
            groups.setdefault(match.group(1) if match else "", []).append(key)
    for name in sorted(groups, key=lambda g: (g == "", g)):  # the blocks, then the rest
        tensors = {k: take(k).float() for k in groups[name]}
        bad = next((k for k, t in tensors.items() if not torch.isfinite(t).all()), None)
        if bad:  # NaN weights would paint NaN probabilities and, at worst, abort the process
            raise CheckpointError(f"{checkpoint.path}: {bad} holds NaN or infinite values; the weights are damaged")
        model.load_state_dict(tensors, strict=False, assign=True)
        if prepare:
            prepare(name, model.get_submodule(name))
    left = [k for k, v in model.state_dict().items() if v.is_meta]
    if left:
        raise CheckpointError(f"{checkpoint.path}: {len(left)} tensor(s) were not loaded, e.g. {left[0]}")
    return model.eval()


def save_painter(model: PainterModel, vocab_file: Path, dst: str | Path, dtype: torch.dtype | None = None,
                 vqgan_dir: str | Path | None = None) -> Path:
    """Write ``model`` in our layout (config.json + model.safetensors + vocab.txt).

    ``dtype`` stores the weights in another float format (fp16 halves the size; loading makes them fp32
    again). ``vqgan_dir`` writes the VQGAN there once and makes the model refer to it.
    """
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(dtype or v.dtype).contiguous().cpu() for k, v in model.state_dict().items()}
    config = {"format": "painter", "format_version": PAINTER_FORMAT_VERSION, **model.config.to_dict()}
    if vqgan_dir is not None:
        save_vqgan(model.first_stage_model, vqgan_dir, dtype)
        state = {k: v for k, v in state.items() if not k.startswith("first_stage_model.")}
        config["vqgan_path"] = os.path.relpath(Path(vqgan_dir).resolve(), dst.resolve())
    with atomic_output(dst / PAINTER_WEIGHTS) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", "painter_format_version": str(PAINTER_FORMAT_VERSION)})
    _write_config(dst, config)
    _copy_vocab(vocab_file, dst)
    return dst


def save_easynlp(model: PainterModel, vocab_file: Path, dst: str | Path) -> Path:
    """Write ``model`` in EasyNLP's layout, attention-mask buffers included, so EasyNLP users can load it."""
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    config = model.config
    mask = reference_attention_mask(config.gpt.block_size, config.gpt.n_unmasked)
    state = {}
    for k, v in model.state_dict().items():
        state[k] = v.detach().cpu()
        m = re.match(r"^(transformer\.blocks\.\d+\.attn\.)proj\.bias$", k)
        if m:
            state[m.group(1) + "mask"] = mask.clone()
    with atomic_output(dst / EASYNLP_WEIGHTS) as tmp:
        torch.save(state, tmp)
    _write_config(dst, easynlp_config_dict(config))
    _copy_vocab(vocab_file, dst)
    return dst


def config_text(data: dict) -> str:
    """config.json's text: indented, but with the id lists (learnt_text, learnt_pairs: thousands of numbers)
    one line each, so that the file stays readable at a glance."""
    lists = {key: data[key] for key in ("learnt_text", "learnt_pairs") if key in data}
    head = json.dumps({k: v for k, v in data.items() if k not in lists}, indent=2, ensure_ascii=False)
    tail = "".join(f",\n  {json.dumps(k)}: {json.dumps(v, separators=(',', ':'))}" for k, v in lists.items())
    return head[:-2] + tail + "\n}\n"


def _write_config(dst: Path, data: dict) -> None:
    with atomic_output(dst / CONFIG_FILE) as tmp:
        tmp.write_text(config_text(data), encoding="utf-8")


def _copy_vocab(vocab_file: Path, dst: Path) -> None:
    if Path(vocab_file).resolve() != (dst / VOCAB_FILE).resolve():
        with atomic_output(dst / VOCAB_FILE) as tmp:
            shutil.copyfile(vocab_file, tmp)


VQGAN_WEIGHTS = "vqgan.safetensors"


def save_vqgan(vqgan: VQGAN, dst: str | Path, dtype: torch.dtype | None = None) -> Path:
    """A standalone VQGAN directory (``painter train-vqgan`` output): config.json + vqgan.safetensors."""
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(dtype or v.dtype).contiguous().cpu() for k, v in vqgan.state_dict().items()}
    with atomic_output(dst / VQGAN_WEIGHTS) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    _write_config(dst, {"format": "painter-vqgan", "format_version": PAINTER_FORMAT_VERSION,
                        "vqgan": asdict(vqgan.config)})
    return dst


def load_vqgan(src: str | Path) -> VQGAN:
    """A VQGAN from a standalone VQGAN directory or from a full model directory of either layout."""
    src = Path(src)
    if not (src / VQGAN_WEIGHTS).is_file():
        checkpoint = load_checkpoint(src)
        return build_model(checkpoint).first_stage_model
    data = _read_json(src / CONFIG_FILE)
    try:
        config = check_vqgan(VQGANConfig(**data["vqgan"]))
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"{src / CONFIG_FILE} is not a VQGAN config: {exc}") from exc
    except ConfigError as exc:
        raise ConfigError(f"{src / CONFIG_FILE}: {exc}") from exc
    with torch.device("meta"):
        expected = {k: v.shape for k, v in VQGAN(config).state_dict().items()}
    state = check_tensors(_load_safetensors(src / VQGAN_WEIGHTS), expected, src / VQGAN_WEIGHTS)
    vqgan = VQGAN(config)
    vqgan.load_state_dict(state)  # copies into fp32 parameters whatever the stored float format
    return vqgan.eval()


def convert(src: str | Path, dst: str | Path, to: str | None = None, dtype: torch.dtype | None = None,
            vqgan_dir: str | Path | None = None, sampling: dict | None = None, guidance: bool | None = None,
            words: list[str] | None = None, learnt_from: Iterable[str] | None = None) -> Path:
    """Convert a model directory between the EasyNLP and Painter layouts (default: to the other one);
    for the Painter layout optionally in another float format and with a shared VQGAN directory.
    ``sampling`` sets recommended sampling settings over the source's (see ``ModelConfig.sampling``), ``words``
    the domain words the model learnt (see ``ModelConfig.domain_words``), ``learnt_from`` the captions it was
    trained on (their wordpieces and pairs of them become ``ModelConfig.learnt_text`` and ``learnt_pairs``).
    A standalone VQGAN directory (``painter train-vqgan``) is copied, optionally in another float format."""
    dst = Path(dst)
    if dst.exists() and any(dst.iterdir()):
        raise CheckpointError(f"{dst} is not empty; choose a new directory for the converted model")
    if (Path(src) / VQGAN_WEIGHTS).is_file():
        if to == "easynlp" or vqgan_dir is not None or sampling or guidance is not None or words or learnt_from:
            raise CheckpointError(f"{src} is a VQGAN alone: only --dtype applies to it")
        return save_vqgan(load_vqgan(src), dst, dtype)
    checkpoint = load_checkpoint(src)
    to = to or ("painter" if checkpoint.format == "easynlp" else "easynlp")
    if to not in ("painter", "easynlp"):
        raise ValueError(f"unknown target format {to!r}; use 'painter' or 'easynlp'")
    model = build_model(checkpoint)
    if sampling:
        settings = {**model.config.sampling, **sampling}
        model.config = replace(model.config, sampling=sampling_settings(settings, model.config.img_vocab_size))
    if guidance is not None:
        model.config = replace(model.config, guidance=guidance)
    if words:
        model.config = replace(model.config, domain_words=domain_words(words, "--domain-word"))
    if learnt_from is not None:
        learnt_from = list(learnt_from)
        tokenizer = TextTokenizer(checkpoint.vocab_file, model.config.text_len)
        size = model.config.text_vocab_size
        model.config = replace(model.config,
                               learnt_text=learnt_text(tokenizer.learnt_ids(learnt_from), size, "--learnt-from"),
                               learnt_pairs=learnt_pairs(tokenizer.learnt_pairs(learnt_from), size, "--learnt-from"))
    if to == "painter":
        return save_painter(model, checkpoint.vocab_file, dst, dtype, vqgan_dir)
    if dtype is not None or vqgan_dir is not None:
        raise CheckpointError("--dtype and --shared-vqgan apply to the Painter layout only")
    if not checkpoint.config.vqgan.encoder:
        raise CheckpointError(f"{src} has no VQGAN encoder (converted from PaddleNLP), and EasyNLP would fill it "
                              "with random weights; keep it in the Painter layout")
    return save_easynlp(model, checkpoint.vocab_file, dst)
