"""Painter: Chinese text-to-image with the pai-painter (EasyNLP ARTIST) VQGAN + GPT models."""

__version__ = "0.1.0"

from painter.serving.easynlp import pipeline  # noqa: E402
from painter.serving.pipeline import Frame, Painter  # noqa: E402

__all__ = ["Frame", "Painter", "pipeline", "__version__"]
