"""The two networks of a Painter model: the GPT that writes image codes and the VQGAN that draws them."""

from painter.models.gpt import GPT, GPTConfig, KVCache
from painter.models.model import ModelConfig, PainterModel
from painter.models.vqgan import VQGAN, VQGANConfig

__all__ = ["GPT", "GPTConfig", "KVCache", "ModelConfig", "PainterModel", "VQGAN", "VQGANConfig"]
