"""PaddleNLP's copies of the pai-painter weights (``model_state.pdparams``) into our layout.

A ``.pdparams`` file is a pickle of numpy arrays. It is read with an unpickler that can rebuild arrays and
nothing else: any other class or function named in the file is refused before anything runs. PaddleNLP keeps
the GPT in its own naming with Linear weights stored as [in, out] (transposed), a 37,512-way output head (its
first 16,384 rows are the image codes) and only the VQGAN decoder, so the result is a decoder-only model:
it paints, but cannot be fine-tuned (that needs the encoder of EasyNLP's archive).
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import torch

from painter.checkpoints import Checkpoint, build_model, check_state_dict, save_painter
from painter.errors import CheckpointError
from painter.models import GPTConfig, ModelConfig, VQGANConfig

ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("collections", "OrderedDict"),
    ("_codecs", "encode"),  # protocol-2 pickles spell array bytes as codecs.encode(str, "latin1")
}
HEADS_BY_WIDTH = {768: 12, 1024: 16}  # the published models; others need n_head given
BLOCK_NAMES = {  # PaddleNLP name inside a decoder layer -> ours inside a block, and whether to transpose
    "norm1": ("ln1", False), "norm2": ("ln2", False), "self_attn.q_proj": ("attn.query", True),
    "self_attn.k_proj": ("attn.key", True), "self_attn.v_proj": ("attn.value", True),
    "self_attn.out_proj": ("attn.proj", True), "linear1": ("mlp.0", True), "linear2": ("mlp.2", True),
}


class ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in ALLOWED:
            return super().find_class(module, name)
        raise CheckpointError(f"refused to load {module}.{name}: a .pdparams file may only hold arrays")


def read_pdparams(path: str | Path) -> dict[str, np.ndarray]:
    try:
        with open(path, "rb") as fh:
            data = ArraysOnly(fh).load()
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
    except Exception as exc:  # truncated or foreign files raise many types
        raise CheckpointError(f"{path} is not a readable .pdparams file: {type(exc).__name__}: {exc}") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} does not hold a dictionary of arrays")
    arrays = {k: v for k, v in data.items() if isinstance(v, np.ndarray)}
    bad = [k for k, v in arrays.items() if v.dtype == object]
    if bad:
        raise CheckpointError(f"{path} holds object arrays ({bad[0]}); refused")
    return arrays


def paddle_to_state(arrays: dict[str, np.ndarray], img_vocab_size: int = 16384) -> tuple[dict, int, int]:
    """Our tensor names from PaddleNLP's; returns (state, n_layer, width)."""
    state: dict[str, torch.Tensor] = {}
    n_layer = 0
    for key, value in arrays.items():
        t = torch.from_numpy(np.ascontiguousarray(value))
        m = re.fullmatch(r"gpt\.decoder\.layers\.(\d+)\.(.+)\.(weight|bias)", key)
        if m:
            layer, inner, kind = int(m.group(1)), m.group(2), m.group(3)
            if inner not in BLOCK_NAMES:
                raise CheckpointError(f"unexpected PaddleNLP tensor {key}")
            ours, transpose = BLOCK_NAMES[inner]
            state[f"transformer.blocks.{layer}.{ours}.{kind}"] = t.t().contiguous() if transpose and kind == "weight" else t
            n_layer = max(n_layer, layer + 1)
        elif key == "gpt.embeddings.word_embeddings.weight":
            state["transformer.tok_emb.weight"] = t
        elif key == "gpt.embeddings.position_embeddings.weight":
            state["transformer.pos_emb"] = t.unsqueeze(0)
        elif key in ("gpt.decoder.norm.weight", "gpt.decoder.norm.bias"):
            state["transformer.ln_f." + key.rsplit(".", 1)[1]] = t
        elif key == "lm_head.decoder_weight":
            state["transformer.head.weight"] = t[:img_vocab_size].contiguous()
        elif key == "vqgan_detokenizer.embedding.weight":
            state["first_stage_model.quantize.embedding.weight"] = t
        elif key.startswith("vqgan_detokenizer."):
            state["first_stage_model." + key.removeprefix("vqgan_detokenizer.")] = t
        else:
            raise CheckpointError(f"unexpected PaddleNLP tensor {key}")
    if "transformer.tok_emb.weight" not in state:
        raise CheckpointError("no gpt.embeddings.word_embeddings.weight: not a PaddleNLP ARTIST checkpoint")
    return state, n_layer, state["transformer.tok_emb.weight"].shape[1]


def convert_paddle(pdparams: str | Path, vocab_file: str | Path, dst: str | Path, n_head: int | None = None,
                   vqgan: VQGANConfig | None = None) -> Path:
    """Write a Painter-layout (decoder-only) model from PaddleNLP weights, checked strictly."""
    arrays = read_pdparams(pdparams)
    vq = vqgan or VQGANConfig(encoder=False)
    state, n_layer, width = paddle_to_state(arrays, vq.n_embed)
    heads = n_head or HEADS_BY_WIDTH.get(width)
    if not heads:
        raise CheckpointError(f"width {width} is not a published pai-painter size; say --n-head")
    vocab, positions = state["transformer.tok_emb.weight"].shape[0], state["transformer.pos_emb"].shape[1]
    config = ModelConfig(gpt=GPTConfig(vocab_size=vocab, block_size=positions, n_layer=n_layer, n_head=heads,
                                       n_embd=width), vqgan=vq).validate()
    checked = check_state_dict(state, config, Path(pdparams))
    model = build_model(Checkpoint(config, checked, Path(vocab_file), "paddle", Path(pdparams)))
    return save_painter(model, Path(vocab_file), dst)
