"""Tiny random models in the real on-disk layouts, built fresh by the tests (no downloads)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from painter.checkpoints import save_easynlp, save_painter
from painter.models import GPTConfig, ModelConfig, PainterModel, VQGANConfig

ROOT = Path(__file__).resolve().parents[1]
VOCAB = ROOT / "assets" / "vocab.txt"
sys.path.insert(0, str(ROOT))  # the bench's reference loop is what the sampler is checked against


def tiny_config(n_layer: int = 2, n_embd: int = 32, n_head: int = 2, n_embed: int = 128) -> ModelConfig:
    """A 16x16-pixel VQGAN with a 4x4 code grid and a 2-layer GPT: real structure, milliseconds to run."""
    vqgan = VQGANConfig(ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(4,), z_channels=8,
                        embed_dim=8, n_embed=n_embed, resolution=16, norm_groups=8)
    gpt = GPTConfig(vocab_size=n_embed + 21128, block_size=32 + vqgan.num_codes, n_layer=n_layer, n_head=n_head,
                    n_embd=n_embd)
    return ModelConfig(gpt=gpt, vqgan=vqgan)


def tiny_model(seed: int = 0, **kw) -> PainterModel:
    torch.manual_seed(seed)
    model = PainterModel(tiny_config(**kw)).eval()
    # Spread the codebook so that quantization and decoding are not degenerate, and make the GPT's
    # next-token distributions peaked and prompt-dependent (minGPT's init gives nearly uniform ones, under
    # which any sampler would look right).
    with torch.no_grad():
        model.first_stage_model.quantize.embedding.weight.normal_()
        model.transformer.tok_emb.weight.normal_(std=1.0)
        model.transformer.head.weight.normal_(std=0.5)
    return model


@pytest.fixture(scope="session")
def easynlp_dir(tmp_path_factory) -> Path:
    return save_easynlp(tiny_model(), VOCAB, tmp_path_factory.mktemp("easynlp"))


@pytest.fixture(scope="session")
def painter_dir(tmp_path_factory) -> Path:
    return save_painter(tiny_model(), VOCAB, tmp_path_factory.mktemp("painter"))


@pytest.fixture(scope="session")
def painter(easynlp_dir):
    """The exact mode: its tokens are the reference's."""
    from painter import Painter

    return Painter.from_pretrained(easynlp_dir, device="cpu", precision="fp32")


@pytest.fixture(autouse=True)
def no_network_downloads(monkeypatch, tmp_path_factory):
    """Tests never reach the internet: known names resolve offline, into an empty cache."""
    monkeypatch.setenv("PAINTER_OFFLINE", "1")
    monkeypatch.setenv("PAINTER_CACHE", str(tmp_path_factory.mktemp("cache")))
