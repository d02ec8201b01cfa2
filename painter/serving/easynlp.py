"""EasyNLP's calling convention, so code written for ``easynlp.pipelines`` works with Painter unchanged:

    from painter import pipeline
    gen = pipeline("text2image_generation", model_path="finetuned_model/", max_generated_num=2)
    gen(["宽松T恤"])  # -> [{"text": "宽松T恤", "gen_imgbase64": ["iVBORw0...", "iVBORw0..."]}]
"""

from __future__ import annotations

from typing import Sequence

from painter.data.images import png_base64
from painter.errors import ModelNotFoundError
from painter.serving.pipeline import Painter

TASK = "text2image_generation"


class Text2ImagePipeline:
    def __init__(self, painter: Painter, max_generated_num: int = 1, seed: int = 0, top_k: int | None = None,
                 top_p: float | None = None, temperature: float | None = None, batch_size: int = 8,
                 guidance_scale: float | None = None):
        self.painter = painter
        self.options = dict(num_images=max_generated_num, seed=seed, top_k=top_k, top_p=top_p,
                            temperature=temperature, batch_size=batch_size, guidance_scale=guidance_scale)

    def __call__(self, texts: str | Sequence[str]) -> list[dict]:
        texts = [texts] if isinstance(texts, str) else list(texts)
        images = self.painter.generate(texts, **self.options)
        return [{"text": t, "gen_imgbase64": [png_base64(im) for im in ims]} for t, ims in zip(texts, images)]


def pipeline(task_or_model: str, model_path: str | None = None, max_generated_num: int = 1,
             device: str = "auto", precision: str = "fp32", **options) -> Text2ImagePipeline:
    """``pipeline("text2image_generation", model_path=DIR)`` or ``pipeline(NAME_OR_DIR)``."""
    if task_or_model == TASK:
        if model_path is None:
            raise ModelNotFoundError(f"pipeline({TASK!r}) needs model_path=DIR or a model name")
        source = model_path
    else:
        source = task_or_model if model_path is None else model_path
    painter = Painter.from_pretrained(source, device=device, precision=precision)
    return Text2ImagePipeline(painter, max_generated_num=max_generated_num, **options)
