"""The studio: a Gradio app where artists paint from Chinese prompts.

Tabs: 创作 Create (prompt, style, model, sampling, seed, streaming previews, PNG download and restore),
对比 Compare (two models, one prompt and seed, side by side), 历史 History, 模型 Models. Painting events share
one queue and one concurrency group, so on a CPU the models never fight over the same cores; Stop cancels
the running job at once.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import html
import io
import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import gradio as gr
import numpy as np
import torch
from PIL import Image

from painter import __version__
from painter.errors import PainterError, SamplingError
from painter.precision import INFERENCE_MODES
from painter.serving.engine import server_engine_threads
from painter.serving.repaint import keep_mask as keep_cells
from painter.sampling import (DEFAULT_TOP_K, GUIDANCE_RANGE, MAX_SEED, TEMPERATURE_RANGE, TOP_P_RANGE,
                              SamplingConfig, resolve_seed, sampling_settings)
from painter.text import MAX_PROMPT_CHARS
from painter.ui.metadata import read_params, save_png
from painter.ui.models import ModelManager
from painter.ui.styles import StylePreset, apply_template, load_styles, template_known

log = logging.getLogger(__name__)

STYLES_DIR = Path(__file__).resolve().parents[2] / "styles"
DISPLAY = 256  # pictures are shown and saved at least this large (the demo models paint 64x64)
AUTO = "auto"
PAINT_GROUP = "paint"
CREATE_TAB = "create"
KEEP_PNGS = 200  # results kept on disk per studio run; older ones are removed
KEEP_HISTORY = 100  # History entries per browser session (its newest); a session's state lives as long as its tab
DOWNLOAD_POLL = 0.5  # seconds between progress updates of a download
FRAME_GAP = 0.1  # seconds between streamed previews: each costs an encode and a message, whatever its tokens
# The upload box's own words follow the browser's language only; ours are in both, like every label.
# Results are shown whole (Gradio's gallery scrolls past a fixed height) and at most 448 pixels wide.
# On a phone, tighter tabs and margins keep all four tabs in sight instead of behind a "..." menu. A <style>
# in the head, since Gradio scopes launch(css=...) inside the page's container, below the margins.
STUDIO_HEAD = """<style>
#restore [data-testid="upload-text"] { font-size: 0; }
#restore [data-testid="upload-text"] .or { display: none; }
#restore [data-testid="upload-text"]::after { content: "拖入或点击上传 PNG · Drop or click to upload a PNG";
    font-size: var(--text-md); }
#gallery .grid-wrap.fixed-height { max-height: none !important; }
/* A job stopped before its first frame marks its outputs "Error" (Gradio's tracker of a cancelled event);
   the status line says 已停止 Stopped, and a real failure comes as a message, so the marks are not shown. */
#status .error, #preview .error, #gallery .error, #used .error, #files .error { display: none !important; }
#gallery .thumbnail-item { max-width: 448px; max-height: 448px; margin: auto; }
.painter-previews { display: grid; grid-template-columns: repeat(2, 1fr); gap: 8px; }
.painter-previews img { width: 100%; image-rendering: auto; border-radius: 8px; }
.painter-compare { display: grid; grid-template-columns: 1fr; gap: 6px; width: 100%; max-width: 448px;
    aspect-ratio: 1; margin: auto; }
.painter-compare.grid { grid-template-columns: 1fr 1fr; grid-template-rows: 1fr 1fr; }
.painter-compare .cell { aspect-ratio: 1; min-width: 0; border-radius: 8px; overflow: hidden; }
.painter-compare .cell.empty { background: var(--neutral-200, #ddd); }
.painter-compare .cell img { width: 100%; height: 100%; object-fit: contain; display: block; }
@media (max-width: 640px) {
  .main.fillable { padding-left: 8px !important; padding-right: 8px !important; }
  .tab-container button { padding: 4px 3px !important; font-size: 12px !important; }
}
</style>"""
# show_error: a bad value sent through the API (a top-k of "abc") gets its message, not {"error": null}
LAUNCH_OPTIONS = {"theme": gr.themes.Soft(), "head": STUDIO_HEAD, "show_error": True}
ARTICLE_EXAMPLES = ["宽松T恤", "女童套头毛衣打底衫秋冬针织衫童装儿童内搭上衣", "春夏真皮工作鞋女深色软皮久站舒适上班面试职业皮鞋",
                    "一只俏皮的狗正跑过草地", "一片水域的景色以日落为背景"]
EMOJI_EXAMPLES = ["红苹果", "火箭", "狐狸", "樱桃", "一个笑脸"]

try:  # on Hugging Face ZeroGPU the painting functions must run inside spaces.GPU
    import spaces

    gpu = spaces.GPU
except ImportError:
    def gpu(fn):
        return fn


def display(image: Image.Image) -> Image.Image:
    if image.width >= DISPLAY:
        return image
    return image.resize((DISPLAY, DISPLAY), Image.LANCZOS)


def quiet(component: gr.components.Component) -> gr.components.Component:
    """Gradio checks an API value against the component's range or choices before our code sees it, and
    prints a 30-line traceback for every refusal; the caller gets the same message either way, so the
    refusal is logged in one line instead (``user_error``)."""
    check = component.preprocess

    def preprocess(payload):
        try:
            return check(payload)
        except gr.Error as exc:
            raise user_error(str(exc.message)) from None
        except (TypeError, ValueError) as exc:  # a value of the wrong kind, e.g. text for a number
            raise user_error(f"{component.label}: {payload!r} is not a valid value ({exc})") from None

    component.preprocess = preprocess
    return component


def may_be_empty(slider: gr.Slider) -> gr.Slider:
    """A sampling slider that may be empty: the API leaves a setting out (None) to get the preset's or the
    model's value. It starts empty and the page fills it when it loads, so the API's defaults are empty too,
    not the first preset's numbers. (A subclass would make Gradio write a .pyi file into this package.)"""
    checked, info = slider.preprocess, slider.api_info()
    slider.preprocess = lambda payload: None if payload is None else checked(payload)
    slider.api_info = lambda: {"anyOf": [info, {"type": "null"}],
                               "description": f"{slider.minimum} to {slider.maximum}; empty: the preset's value"}
    slider.value = None
    return slider


def preview_html(images: list[Image.Image]) -> str:
    """Partial pictures inline, as JPEG data URLs at the model's size: no file written and no request per
    frame, and the browser scales them up (a 64-pixel preview is 2 KB)."""
    tags = []
    for image in images:
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="JPEG", quality=85)
        tags.append(f'<img alt="preview" src="data:image/jpeg;base64,{base64.b64encode(buffer.getvalue()).decode()}">')
    return f'<div class="painter-previews">{"".join(tags)}</div>'


def compare_panel(pictures: list) -> str:
    """One side of Compare: a square panel of equal square cells (one picture, or a 2 x 2 grid for 2-4),
    each a preview (PIL image), a final PNG (path) or, before its first frame, an empty grey cell."""
    cells = []
    for picture in pictures:
        if picture is None:
            cells.append('<div class="cell empty"></div>')
            continue
        if isinstance(picture, Path):
            data, kind = picture.read_bytes(), "png"
        else:
            buffer = io.BytesIO()
            picture.convert("RGB").save(buffer, format="JPEG", quality=85)
            data, kind = buffer.getvalue(), "jpeg"
        cells.append(f'<div class="cell"><img alt="{kind}" src="data:image/{kind};base64,'
                     f'{base64.b64encode(data).decode()}"></div>')
    cells += ['<div class="cell none"></div>'] * ((4 if len(pictures) > 1 else 1) - len(pictures))
    return f'<div class="painter-compare{" grid" if len(pictures) > 1 else ""}">{"".join(cells)}</div>'


GRID = 16  # every model here paints a 16 x 16 grid of codes
PICTURE_KEYS = ("codes", "vqgan", "repainted")  # what Painter adds to a picture's info, kept in its PNG
REPAINT_MODES = (("框内重绘 Repaint a box", "box"), ("保留上方 Keep the top rows", "rows"),
                 ("变体 Variations: keep a share of cells", "variations"))


def repaint_keep(mode, x0, y0, x1, y1, rows, share) -> dict:
    """The Repaint panel's choice as ``Painter.region`` arguments. Variations keep a share of the cells, the
    same cells for the same share (drawn once from a fixed generator), so the overlay shows exactly them."""
    try:
        if mode == "box":
            return {"box": (int(x0), int(y0), int(x1), int(y1))}
        if mode == "rows":
            return {"keep_rows": int(rows)}
        if mode == "variations":
            share = float(share)
            if not 0.05 <= share <= 0.95:
                raise user_error("变体保留比例须在 0.05 到 0.95 之间 (share of cells kept: 0.05 to 0.95).")
            order = np.random.default_rng(0).permutation(GRID * GRID)
            mask = np.zeros(GRID * GRID, dtype=bool)
            mask[order[:max(1, round(share * GRID * GRID))]] = True
            return {"mask": mask.reshape(GRID, GRID)}
    except (TypeError, ValueError) as exc:
        raise user_error(f"重绘区域不是数字 (the region is not a number): {exc}") from exc
    raise user_error(f"未知的重绘方式 (unknown repaint mode) {mode!r}: box, rows or variations")


def open_picture(source) -> Image.Image:
    """An uploaded or chosen picture, fully read, with its metadata (Painter's codes, when it made it)."""
    path = getattr(source, "name", source)
    try:
        with Image.open(path) as opened:
            opened.load()
            image = opened.copy()
            image.info = dict(opened.info)
    except (OSError, ValueError, TypeError, Image.DecompressionBombError) as exc:
        raise user_error(f"这不是可读的图片 (not a readable picture): {type(exc).__name__}: {exc}") from None
    return image


def grid_overlay(image: Image.Image, keep: torch.Tensor) -> Image.Image:
    """The picture at display size, the code grid drawn on it and the cells to repaint tinted red."""
    from PIL import ImageDraw

    shown = image.convert("RGB").resize((DISPLAY, DISPLAY), Image.NEAREST)
    tint = Image.new("RGBA", shown.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(tint)
    cell = DISPLAY / GRID
    for index, kept in enumerate(keep.tolist()):
        y, x = divmod(index, GRID)
        box = (round(x * cell), round(y * cell), round((x + 1) * cell) - 1, round((y + 1) * cell) - 1)
        draw.rectangle(box, fill=None if kept else (230, 40, 40, 110), outline=(255, 255, 255, 70))
    return Image.alpha_composite(shown.convert("RGBA"), tint).convert("RGB")


def download_size(meta: dict) -> str:
    """A downloadable model's size: the registry's exact bytes, else its estimate from the model's shape."""
    if meta.get("bytes"):
        return f"{meta['bytes'] / 1e6:.0f} MB"
    return f"about {meta['approx_mb'] / 1000:.1f} GB" if meta.get("approx_mb") else "size unknown"


def seeds_text(first: int, count: int) -> str:
    """The seeds of a job's pictures, in order (image j uses seed + j), for the "seed used" box."""
    return ", ".join(str(first + j) for j in range(count))


def chosen_seed(evt: gr.SelectData) -> str:
    """A result picked in the gallery: its own seed (from its caption), for ♻️ to reuse."""
    caption = (evt.value or {}).get("caption") or "" if isinstance(evt.value, dict) else ""
    return caption.removeprefix("seed ").strip() if caption.startswith("seed ") else gr.skip()


def chosen_picture(evt: gr.SelectData):
    """A result picked in the gallery becomes the Repaint panel's picture (its PNG carries its codes)."""
    value = evt.value if isinstance(evt.value, dict) else {}
    image = value.get("image") or {}
    path = image.get("path") if isinstance(image, dict) else image
    return path or gr.skip()


def first_seed(text) -> int:
    """The first seed in the "seed used" box (one picture's, or a job's first), else -1 (random)."""
    first = str(text or "").split(",")[0].strip()
    return int(first) if first.isdigit() else -1


def user_error(message: str) -> gr.Error:
    """An error the user can fix: shown to them, logged in one line (Gradio would print a traceback)."""
    log.info("refused: %s", message)
    return gr.Error(message, print_exception=False)


def detail_note(sampling: SamplingConfig) -> str:
    """Under the sliders: the model's own settings for a picture's later codes, which the sliders do not set."""
    if sampling.detail_from is None:
        return ""
    detail = sampling.at(sampling.detail_from)
    return (f"滑块设定前 {sampling.detail_from} 个图像词元；之后用模型的 top-k {detail.top_k}、温度 {detail.temperature}。 "
            f"(The sliders set the first {sampling.detail_from} image codes; this model draws the rest at top-k "
            f"{detail.top_k}, temperature {detail.temperature}.)")


def prompt_notes(tokens, text_len: int) -> list[str]:
    """What the user should know about how the model read the prompt."""
    notes = []
    if tokens.dropped:
        notes.append(f"提示词超过 {text_len} 个词元，模型只看到：「{tokens.used_text}」 ({tokens.dropped} wordpieces cut)")
    if tokens.unknown:
        notes.append(f"{tokens.unknown} 个字不在词表中 (characters outside the vocabulary)")
    if tokens.ignored:
        notes.append(f"模型没学过的字词已略去：「{''.join(tokens.ignored)}」 "
                     "(left out: characters, or characters in an order, this model never learnt)")
    return notes


@dataclass(frozen=True)
class Plan:
    """How a style is painted with the models at hand."""

    model: str
    template: str
    note: str  # one line for the user when the style's own model is missing
    sampling: SamplingConfig
    examples: tuple[str, ...]


class Studio:
    """The functions behind the UI (plain Python, so they are testable without a browser)."""

    def __init__(self, manager: ModelManager, styles: list[StylePreset], output_dir: Path | None = None,
                 allow_downloads: bool = False):
        self.manager = manager
        self.allow_downloads = allow_downloads  # may a visitor start a download (the owner's --allow-downloads)
        self.styles = {s.id: s for s in styles}
        self.output_dir = output_dir or Path(tempfile.mkdtemp(prefix="painter-studio-"))
        self._stops: set[str | None] = set()  # sessions whose Stop came after their job started
        self._saving = threading.Lock()  # painting workers save and prune the output folder one at a time
        if output_dir is None:  # ours: removed when the studio exits
            atexit.register(shutil.rmtree, self.output_dir, True)

    def _save(self, image: Image.Image, params: dict) -> Path:
        """A result as a PNG with its parameters; only the newest KEEP_PNGS stay on disk. Saving and pruning
        hold one lock, so one worker's pruning never removes a file between another's listing and its stat
        (under load that lost finished pictures); a file gone anyway (removed by hand) is simply skipped."""
        with self._saving:
            try:
                path = save_png(image, self.output_dir / f"painter-{uuid.uuid4().hex[:12]}.png", params)
            except OSError as exc:  # a full or read-only disk: one line for the visitor, not a traceback
                raise PainterError(f"结果无法保存 (the result could not be saved in {self.output_dir}: "
                                   f"{exc.strerror or exc})") from None
            dated = []
            for png in self.output_dir.glob("painter-*.png"):
                try:
                    dated.append((png.stat().st_mtime_ns, png))
                except FileNotFoundError:
                    continue
            for _, old in sorted(dated)[:-KEEP_PNGS]:
                if old != path:
                    old.unlink(missing_ok=True)
        return path

    # -- choices ------------------------------------------------------------------------------------------

    def _style(self, style_id: str) -> StylePreset:
        return self.styles.get(style_id) or next(iter(self.styles.values()))

    def plan(self, style_id: str, choice: str) -> Plan:
        """How to paint a style with the chosen model ("auto": the style's own model, else an installed
        general pai-painter model, else the bundled model its fallback names, else the best installed one)."""
        style = self._style(style_id)
        fallback = style.fallback
        stand_in = self.manager.first_installed(fallback.models) if fallback else None
        if choice and choice != AUTO:
            name = self.manager.entry(choice).name
        else:
            name, preferred = self.manager.best_for(style.models)
            if not preferred and stand_in and self.manager.entry(name).family != "pai-painter":
                name = stand_in  # a general pai-painter model paints the domain better than the fallback
        entry = self.manager.entry(name)
        model_settings = SamplingConfig(top_k=DEFAULT_TOP_K).updated(**entry.sampling)
        if fallback and name not in style.models and entry.family != "pai-painter":
            # a bundled (or custom) model, with its own settings, never the ones tuned for the missing
            # pai-painter model (top-k 100 at temperature 1 paints them noise); the domain in the words it
            # learnt, or the prompt as typed by a model that never saw the template's words
            sampling = model_settings
            if template_known(fallback.template, entry.domain_words):
                template, examples = fallback.template, fallback.examples or style.examples
            else:
                template, examples = "{prompt}", ()
        else:
            template, sampling, examples = style.template, model_settings.updated(**style.sampling), style.examples
            if entry.family != "pai-painter" and not template_known(template, entry.domain_words):
                template = "{prompt}"  # words this model never learnt (a 3D style for a flat-emoji model)
        note = ""
        if style.models and not self.manager.first_installed(style.models):
            wanted = style.models[0]
            note = (f"「{style.name_zh}」风格的模型 `{wanted}` 未安装，获取方法：`painter download {wanted}`。"
                    f"现在用 **{name}** 作画。 (The preset's model is not installed; painting with {name}.)")
        return Plan(name, template, note, sampling, examples or tuple(EMOJI_EXAMPLES))

    def model_for(self, style_id: str, choice: str) -> tuple[str, str]:
        """(model name, one-line note for the user) for a style and a model choice."""
        plan = self.plan(style_id, choice)
        return plan.model, plan.note

    def settings_for(self, style_id: str, choice: str) -> SamplingConfig:
        """The style's sampling settings over the model's recommended ones over the reference's (a fallback:
        the model's own); the reference's when no model is installed."""
        try:
            return self.plan(style_id, choice).sampling
        except PainterError:
            return SamplingConfig(top_k=DEFAULT_TOP_K).updated(**self._style(style_id).sampling)

    def style_changed(self, style_id: str, choice: str):
        """A new style or model: its note, sampling settings (``settings_for``) and the examples it paints."""
        try:
            plan = self.plan(style_id, choice)
        except PainterError as exc:  # no model installed: the page still opens, saying so
            return (str(exc), *(gr.skip(),) * 5)
        s = plan.sampling
        return (plan.note, gr.update(value=s.top_k), gr.update(value=s.top_p),
                gr.update(value=s.temperature, info=detail_note(s)), gr.update(value=s.guidance_scale),
                gr.update(samples=[[e] for e in plan.examples]))

    def guidance_allowed(self, style_id: str, choice: str):
        try:
            name, _ = self.model_for(style_id, choice)
            return gr.update(interactive=self.manager.entry(name).guidance)
        except PainterError:
            return gr.update(interactive=False)

    # -- painting -----------------------------------------------------------------------------------------

    def _check(self, prompt, top_k, top_p, temperature, guidance, seed, num_images, preview_every):
        """Checked numbers; a sampling setting left empty (None) is the model's recommended one."""
        if not isinstance(prompt, str) or not prompt.strip():
            raise user_error("请输入提示词，例如「红苹果」。 (Type a prompt first.)")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise user_error(f"提示词太长：{len(prompt):,} 个字符，最多 {MAX_PROMPT_CHARS:,}。 (The prompt is too long: "
                             f"at most {MAX_PROMPT_CHARS:,} characters; the model reads its first 32 wordpieces.)")
        try:
            sampling = {k: None if v is None else kind(v) for k, kind, v in
                        (("top_k", int, top_k), ("top_p", float, top_p), ("temperature", float, temperature),
                         ("guidance_scale", float, guidance))}
            values = dict(**sampling, seed=int(seed), num_images=int(num_images), preview_every=int(preview_every))
        except (TypeError, ValueError) as exc:
            raise user_error(f"参数不是数字 (a parameter is not a number): {exc}") from exc
        if not 1 <= values["num_images"] <= 4:
            raise user_error("图片数量须在 1 到 4 之间 (1 to 4 images).")
        if not 0 <= values["preview_every"] <= 256:
            raise user_error("预览间隔须在 0 到 256 之间 (preview interval 0 to 256).")
        if not (values["seed"] == -1 or 0 <= values["seed"] <= MAX_SEED):
            raise user_error("种子须为 -1（随机）或非负整数 (seed -1 for random, or >= 0).")
        return values

    def paint(self, prompt, style_id, model_choice, top_k, top_p, temperature, guidance, seed, num_images,
              preview_every, stream_name: str = "", region: Callable | None = None):
        """Yield (images, status line, seed used, params) while painting; the last yield has the PNG paths.
        ``region(painter)`` (a repaint): the cells to keep and the picture's codes, for that model."""
        values = self._check(prompt, top_k, top_p, temperature, guidance, seed, num_images, preview_every)
        try:
            plan = self.plan(style_id, model_choice)
            name = plan.model
            painter = self.manager.get(name)
            repaint = region(painter) if region else None
            style = self._style(style_id)
            used_seed = resolve_seed(values["seed"])
            chosen = {k: values[k] for k in ("top_k", "top_p", "temperature", "guidance_scale") if values[k] is not None}
            # a value left empty (the API allows it): the style's, else the model's recommended one
            sampling = plan.sampling.updated(**chosen).validate(painter.config.img_vocab_size)
            frames = painter.stream(apply_template(plan.template, prompt), seed=used_seed, num_images=values["num_images"],
                                    top_k=sampling.top_k, top_p=sampling.top_p, temperature=sampling.temperature,
                                    preview_every=values["preview_every"], guidance_scale=sampling.guidance_scale,
                                    min_interval=FRAME_GAP, repaint=repaint)
            notes = None  # the model note has its own line under the dropdowns; the status says how the prompt was read
            params = {"prompt": prompt, "style": style.id, "model": name, "seed": used_seed,
                      "top_k": sampling.top_k, "top_p": sampling.top_p, "temperature": sampling.temperature,
                      "guidance_scale": sampling.guidance_scale, "version": __version__}
            for frame in frames:
                if notes is None:  # the prompt as the model read it comes with the first frame
                    notes = prompt_notes(frame.prompt, painter.config.text_len)
                status = (f"{stream_name}{frame.step} / {frame.total} tokens · {frame.elapsed:.1f} s · "
                          f"{frame.tokens_per_second:.0f} tokens/s · {painter.precision}")
                if notes:
                    status += "  \n" + "  \n".join(notes)
                if frame.final:
                    paths = [self._save(display(im), {**params, "seed": s, **{k: im.info[k] for k in PICTURE_KEYS
                                                                              if k in im.info}})
                             for im, s in zip(frame.images, frame.seeds)]
                    yield paths, status, used_seed, params
                else:  # previews at the model's size (the browser scales them), at most 1 / FRAME_GAP a second
                    yield frame.images, status, used_seed, params
        except PainterError as exc:
            raise user_error(str(exc)) from exc

    def repaint(self, source, prompt, style_id, model_choice, mode="box", x0=4, y0=4, x1=12, y1=12, rows=8,
                share=0.6, top_k=None, top_p=None, temperature=None, guidance=None, seed=-1, num_images=1,
                preview_every=8, history=None, request: gr.Request = None):
        """重绘 Repaint and 变体 Variations, and the /repaint API: keep part of ``source`` (a result, with its exact
        codes, or any uploaded picture) and paint the rest for the prompt, streaming like Create."""
        if not source:
            raise user_error("先选一张图：点击上方的结果，或上传一张。 (Pick a picture first: click a result above, or "
                             "upload one.)")
        image = open_picture(source)
        keep = repaint_keep(mode, x0, y0, x1, y1, rows, share)

        def region(painter):
            return painter.region(image, **keep)

        yield from self.create(prompt, style_id, model_choice, top_k, top_p, temperature, guidance, seed,
                               num_images, preview_every, history, request, region=region)

    def region_overlay(self, source, mode="box", x0=4, y0=4, x1=12, y1=12, rows=8, share=0.6):
        """The picture with the grid and the cells a repaint would paint (red), snapped to the code grid."""
        if not source:
            return None
        try:
            keep = keep_cells(GRID, **repaint_keep(mode, x0, y0, x1, y1, rows, share))
        except PainterError as exc:
            raise user_error(str(exc)) from exc
        return grid_overlay(open_picture(source), keep)

    def create(self, prompt, style_id, model_choice, top_k=None, top_p=None, temperature=None, guidance=None,
               seed=-1, num_images=1, preview_every=8, history=None, request: gr.Request = None, region=None):
        """The Create tab's job and the /generate API; a sampling setting left empty is the preset's.
        After Stop, nothing more is sent: a frame painted while the cancel travels would otherwise replace
        "已停止 Stopped" with "48 / 256 tokens" as if the job went on.

        A preview frame sends the emptied gallery again rather than ``gr.skip()``: Gradio rebuilds a component
        and its JSON schema for every skip (milliseconds a frame, on the server's event loop, beside the
        painting), while an unchanged value costs nothing and is not resent."""
        history = list(history or [])
        session = getattr(request, "session_hash", None)
        self._stops.discard(session)
        for images, status, used_seed, params in self.paint(prompt, style_id, model_choice, top_k, top_p, temperature,
                                                              guidance, seed, num_images, preview_every,
                                                              region=region):
            if session in self._stops:
                return
            seeds = seeds_text(used_seed, len(images))
            if images and isinstance(images[0], Path):
                history = ([{**params, "seed": params["seed"] + i, "path": str(p)}
                            for i, p in enumerate(images)] + history)[:KEEP_HISTORY]
                yield [(str(p), f"seed {used_seed + i}") for i, p in enumerate(images)], status, seeds, history, ""
            else:  # the previous results make way for the new picture
                yield [], status, seeds, gr.skip(), preview_html(images)  # (history is a State)

    def compare(self, prompt, seed, model_a, model_b, preview_every, count=1):
        """Both models paint the same prompt with the same seeds (``count`` per side, seed + j), streaming frame
        by frame in turn (one worker, no fight over cores), each with the sampling settings it paints best
        with. Each side is a square panel of equal cells from the first frame, so nothing moves as pictures
        come; the final PNGs of both sides follow as files."""
        try:
            seed, count = resolve_seed(int(seed)), int(count)
        except (TypeError, ValueError, PainterError) as exc:
            raise user_error(f"种子须为 -1 或非负整数 (seed must be -1 or a whole number >= 0): {exc}") from exc
        if not 1 <= count <= 4:
            raise user_error("每边张数须在 1 到 4 之间 (1 to 4 pictures a side).")
        streams = {side: self.paint(prompt, "plain", model, None, None, None, None, seed, count, preview_every,
                                    stream_name=f"{model} · ")
                   for side, model in (("a", model_a), ("b", model_b))}
        latest = {side: (compare_panel([None] * count), "") for side in streams}
        finals: list[str] = []
        yield latest["a"][0], latest["a"][1], latest["b"][0], latest["b"][1], []
        while streams:
            for side in list(streams):
                try:
                    images, status, _, _ = next(streams[side])
                except StopIteration:
                    del streams[side]
                    continue
                if images and isinstance(images[0], Path):
                    finals += [str(p) for p in images]
                latest[side] = (compare_panel(images), status)
            yield latest["a"][0], latest["a"][1], latest["b"][0], latest["b"][1], finals

    def restore(self, file):
        """A dropped PNG -> every parameter it was painted with (or a message saying what is wrong with it)."""
        path = getattr(file, "name", file)
        params = read_params(path) if path else None
        keep = [gr.skip()] * 9
        if not params:
            return [*keep, "这张 PNG 没有 Painter 参数。 (No Painter parameters in this PNG.)"]
        try:
            settings = sampling_settings({k: params[k] for k in ("top_k", "top_p", "temperature", "guidance_scale")
                                          if k in params})
            seed = resolve_seed(params.get("seed", -1))
            prompt = params.get("prompt", "")
            if not isinstance(prompt, str) or len(prompt) > MAX_PROMPT_CHARS:
                raise SamplingError(f"prompt must be text of at most {MAX_PROMPT_CHARS} characters, got "
                                    f"{str(prompt)[:40]!r}")
            for field in ("style", "model"):
                if not isinstance(params.get(field, ""), str):
                    raise SamplingError(f"{field} must be a name, got {params[field]!r}"[:120])
        except (PainterError, TypeError) as exc:
            return [*keep, f"这张 PNG 的参数有误，未恢复 (its parameters are invalid; nothing restored): {exc}"]
        style = params.get("style") if params.get("style") in self.styles else next(iter(self.styles))
        model = params.get("model") if params.get("model") in self.manager.names else AUTO
        s = self.settings_for(style, model).updated(**settings)
        return [prompt, style, model, self.plan(style, model).note, seed, s.top_k, s.top_p, s.temperature,
                s.guidance_scale, f"已恢复参数 (restored): {params.get('model')} · seed {seed}"]

    def reuse(self, history, evt: gr.SelectData):
        """A History picture's settings back in the Create tab, which is shown again."""
        history = history or []
        if not isinstance(evt.index, int) or not 0 <= evt.index < len(history):  # only a crafted call gets here
            return (*(gr.skip(),) * 9, gr.skip())
        item = history[evt.index]
        model = item["model"] if item["model"] in self.manager.names else AUTO
        return (item["prompt"], item["style"], model, self.plan(item["style"], model).note, item["seed"],
                item["top_k"], item["top_p"], item["temperature"], item["guidance_scale"], gr.Tabs(selected=CREATE_TAB))

    def caption(self, item: dict) -> str:
        """A History caption: the preset first, so two pictures of one prompt in two styles differ."""
        style = self.styles.get(item["style"])
        return f"{style.name_zh if style else item['style']} · {item['prompt']} · {item['model']} · seed {item['seed']}"

    def stop(self, status: str, request: gr.Request = None) -> str:
        """Stop: this browser's job sends nothing more (Gradio cancels it too), and the status says so."""
        self._stops.add(getattr(request, "session_hash", None))
        return self.stopped(status)

    @staticmethod
    def stopped(status: str) -> str:
        first = str(status or "").split("\n")[0]
        return f"已停止 Stopped{(' at ' + first.split(' · ')[0]) if ' / ' in first else ''}."

    def models_table(self) -> list[list]:
        """Installed models, then the folders that could not be listed, each with why."""
        return ([[e.name, e.family, e.size, f"{e.megabytes:.1f}", e.source, e.licence, "yes" if e.guidance else "no"]
                 for e in (self.manager.entry(n) for n in self.manager.names)]
                + [[name, "—", "—", "", source, f"无法加载 cannot load: {why}", ""]
                   for name, (source, why) in self.manager.broken.items()])

    def download_commands(self) -> str:
        lines = [f"- `{n}` ({m.get('domain', '')}, {m.get('licence', '')}, {download_size(m)}): `painter download {n}`"
                 for n, m in self.manager.downloadable()]
        return "命令行下载 From the command line:\n\n" + "\n".join(lines) if lines else "（全部已安装 all installed）"

    def downloads_html(self) -> str:
        """A progress bar per download this studio has started (a visitor's, or the owner's preloads)."""
        rows = []
        for job in list(self.manager.downloads.values()):
            name = html.escape(job.name)
            if job.running:
                mb = f"{job.done / 1e6:.1f}" + (f" / {job.total / 1e6:.1f} MB" if job.total else " MB")
                bar = f'<progress max="{job.total}" value="{job.done}"></progress>' if job.total else "<progress></progress>"
                rows.append(f"<div>下载中 Downloading <b>{name}</b> {bar} {mb}</div>")
            elif job.state == "installed":
                rows.append(f"<div><b>{name}</b> 已安装，可在模型列表中选择 (installed: in every model list)</div>")
            else:
                rows.append(f"<div><b>{name}</b> 下载失败，未安装任何文件 (failed, nothing installed): "
                            f"{html.escape(job.state)}</div>")
        return f'<div class="painter-downloads">{"".join(rows)}</div>'

    def models_view(self):
        """Every list of models as it is now: the table, the downloads, the downloadable choice, and the
        Create and Compare model lists (a model installed while the studio runs appears without a restart)."""
        names, downloadable = self.manager.names, self.download_choices()
        return (self.models_table(), self.downloads_html(),
                gr.update(choices=downloadable, value=downloadable[0][1] if downloadable else None),
                gr.update(interactive=self.allow_downloads and bool(downloadable)),
                gr.update(choices=[("自动 Auto", AUTO)] + [(n, n) for n in names]),
                gr.update(choices=names), gr.update(choices=names), self.download_commands(),
                gr.update(visible=self.pai_painter_installed()))

    def download_choices(self) -> list[tuple[str, str]]:
        """(label with its size, name) of each model that can be downloaded."""
        return [(f"{n} · {download_size(m)}", n) for n, m in self.manager.downloadable()]

    def pai_painter_installed(self) -> bool:
        """Whether the article's prompts have a model that paints them (the bundled ones paint noise there)."""
        return any(self.manager.entry(n).family == "pai-painter" for n in self.manager.names)

    def download(self, name):
        """The Models tab's Download: starts (or follows) the model's download and streams its progress
        until it is installed or has failed; the download goes on if the page is closed."""
        if not self.allow_downloads:
            raise user_error("此站点的所有者未开放下载 (the owner of this studio has not allowed downloads; "
                             "run it with --allow-downloads, or list models in PAINTER_PRELOAD).")
        try:
            job = self.manager.download(str(name or ""))
        except PainterError as exc:
            raise user_error(str(exc)) from exc
        while job.running:
            yield self.models_view()
            time.sleep(DOWNLOAD_POLL)
        yield self.models_view()

    def refresh_models(self):
        """While downloads run (a preload, another visitor's): the lists, and whether to look again."""
        return (*self.models_view(), gr.Timer(active=self.manager.downloading))

    def default_pair(self) -> tuple[str, str]:
        names = self.manager.names
        for a, b in (("pai-painter-base-zh", "pai-painter-large-zh"), ("bundled-base", "bundled-large")):
            if a in names and b in names:
                return a, b
        return (names[0], names[-1]) if names else ("", "")


def build(studio: Studio, workers: int = 1, queue_size: int = 16) -> gr.Blocks:
    model_choices = [("自动 Auto", AUTO)] + [(n, n) for n in studio.manager.names]
    style_choices = [(s.label, s.id) for s in studio.styles.values()]
    first_style = next(iter(studio.styles.values()))
    # Gradio's own upload cache is swept too: files older than an hour, checked every ten minutes
    with gr.Blocks(title="Painter 画师", delete_cache=(600, 3600)) as demo:
        gr.Markdown("# Painter 画师\n中文文生图：输入提示词，看着画一笔一笔画出来。 Chinese text-to-image, painted token by token.")
        history = gr.State([])
        tabs = gr.Tabs()
        with tabs, gr.Tab("创作 Create", id=CREATE_TAB):
            with gr.Row():
                with gr.Column(scale=3, elem_id="canvas"):
                    # one line: Enter paints (and Stop cancels it), Shift+Enter starts a new line
                    prompt = gr.Textbox(label="提示词 Prompt", placeholder="例如：红苹果（回车生成 Enter to paint）", lines=1,
                                        max_lines=4, elem_id="prompt")
                    # right under the prompt: on a phone the columns stack, and examples below the sampling
                    # controls were 2,000 pixels down the page
                    examples = gr.Dataset(components=[prompt],
                                          samples=[[e] for e in studio.plan(first_style.id, AUTO).examples],
                                          label="示例 Examples", elem_id="examples")
                    with gr.Row():
                        style = gr.Dropdown(style_choices, value=first_style.id, label="风格 Style", elem_id="style")
                        model = gr.Dropdown(model_choices, value=AUTO, label="模型 Model", elem_id="model")
                    note = gr.Markdown(studio.model_for(first_style.id, AUTO)[1], label="模型说明 Model note",
                                       elem_id="note")
                    preparing = gr.Markdown(studio.manager.preparation_note(), elem_id="preparing")
                    timer = gr.Timer(1.0, active=bool(studio.manager.preparation_note()))
                    timer.tick(lambda: (studio.manager.preparation_note(),
                                        gr.Timer(active=bool(studio.manager.preparation_note()))),
                               None, [preparing, timer], api_name=False, show_progress="hidden")
                    with gr.Row():
                        generate = gr.Button("生成 Paint", variant="primary", elem_id="generate")
                        stop = gr.Button("停止 Stop", variant="stop", elem_id="stop")
                    status = gr.Markdown("", label="状态 Status", elem_id="status")
                    preview = gr.HTML("", label="预览 Preview", elem_id="preview")  # partial pictures while painting
                    gallery = gr.Gallery(label="结果 Results (seed under each picture)", format="png", columns=2,
                                         height="auto", object_fit="contain", elem_id="gallery", interactive=False)
                    files = gr.File(label="下载 PNG (含参数 with parameters)", file_count="multiple", elem_id="files")
                    with gr.Accordion("重绘 Repaint · 变体 Variations", open=False, elem_id="repaint-panel"):
                        gr.Markdown("保留图的一部分，其余按提示词重画。点击上方的一张结果，或上传一张图。 Keep part of a "
                                    "picture and paint the rest for the prompt: click a result above, or upload one.")
                        with gr.Row():
                            r_source = gr.Image(type="filepath", format="png", label="原图 Picture",
                                                elem_id="repaint-source", height=256)
                            r_grid = gr.Image(label="红色格子将重画 Red cells are repainted (16 x 16 grid)",
                                              interactive=False, elem_id="repaint-grid", height=256)
                        r_mode = gr.Radio(REPAINT_MODES, value="box", label="方式 Mode", elem_id="repaint-mode")
                        with gr.Row():
                            r_x0 = gr.Slider(0, GRID - 1, value=4, step=1, label="x0")
                            r_y0 = gr.Slider(0, GRID - 1, value=4, step=1, label="y0")
                            r_x1 = gr.Slider(1, GRID, value=12, step=1, label="x1")
                            r_y1 = gr.Slider(1, GRID, value=12, step=1, label="y1")
                        with gr.Row():
                            r_rows = gr.Slider(1, GRID - 1, value=8, step=1, label="保留行数 Rows kept")
                            r_share = gr.Slider(0.05, 0.95, value=0.6, step=0.05, label="保留比例 Share kept (variations)")
                        r_go = gr.Button("重绘 Repaint", variant="primary", elem_id="repaint")
                with gr.Column(scale=2):
                    with gr.Accordion("采样 Sampling", open=True):
                        # empty until the page loads the first preset's settings (so the API's defaults are empty)
                        top_k = gr.Number(value=None, precision=0, minimum=1, label="top-k")
                        top_p = may_be_empty(gr.Slider(*TOP_P_RANGE, step=0.05, label="top-p"))
                        temperature = may_be_empty(gr.Slider(*TEMPERATURE_RANGE, step=0.05, label="温度 Temperature",
                                                             elem_id="temperature"))
                        guidance = may_be_empty(gr.Slider(
                            *GUIDANCE_RANGE, step=0.5, label="引导 Guidance",
                            interactive=studio.guidance_allowed(first_style.id, AUTO)["interactive"]))
                    with gr.Row():
                        seed = gr.Number(value=-1, precision=0, label="种子 Seed (-1 随机 random)", elem_id="seed")
                        used = gr.Textbox(value="", label="所用种子 Seed used (one per picture)", interactive=False,
                                          elem_id="used")
                    with gr.Row():
                        dice = gr.Button("🎲 随机种子")
                        reuse_seed = gr.Button("♻️ 复用种子 Reuse")
                    num_images = gr.Slider(1, 4, value=1, step=1, label="图片数量 Images", elem_id="images")
                    preview_every = gr.Slider(0, 64, value=8, step=4, label="预览间隔 Preview every N tokens")
                    restore_file = gr.File(label="拖入 PNG 恢复参数 Drop a PNG to restore", file_types=[".png"],
                                           elem_id="restore")
                    restore_msg = gr.Markdown("", label="恢复结果 Restore message")
            with gr.Column(visible=studio.pai_painter_installed()) as article:  # prompts for those models only
                gr.Examples([[e] for e in ARTICLE_EXAMPLES], inputs=[prompt],
                            label="文章中的例子（pai-painter 模型）From the article, for the pai-painter models")

        inputs = [prompt, style, model, top_k, top_p, temperature, guidance, seed, num_images, preview_every]
        for component in inputs:
            quiet(component)
        # the status line says how far painting is, so Gradio's own overlay (which says "Error" over a job
        # cancelled by Stop) is not shown; errors still come as a message
        painted = [gallery, status, used, history, preview]
        event = generate.click(gpu(studio.create), [*inputs, history], painted,
                               api_name="generate", concurrency_id=PAINT_GROUP, concurrency_limit=workers,
                               show_progress="hidden")
        submitted = prompt.submit(gpu(studio.create), [*inputs, history], painted,
                                  api_name=False, concurrency_id=PAINT_GROUP, show_progress="hidden")
        # The PNGs to download follow the pictures in their own event, so that the API's result (and the
        # files its clients fetch) is each picture once; the old list goes when a new job starts.
        for trigger, job in ((generate.click, event), (prompt.submit, submitted)):
            trigger(None, None, [files], js="() => null", api_name=False, queue=False)
            job.success(lambda shown: [path for path, _ in shown or []], [gallery], [files], api_name=False,
                        show_progress="hidden", queue=False)
        # the message comes after the cancel: the browser shows a cancelled stream's last frame once more
        region_inputs = [r_source, r_mode, r_x0, r_y0, r_x1, r_y1, r_rows, r_share]
        for component in region_inputs[1:]:
            quiet(component)
        repainted = r_go.click(gpu(studio.repaint), [r_source, prompt, style, model, *region_inputs[1:], top_k, top_p,
                                                    temperature, guidance, seed, num_images, preview_every, history],
                               painted, api_name="repaint", concurrency_id=PAINT_GROUP, show_progress="hidden")
        r_go.click(None, None, [files], js="() => null", api_name=False, queue=False)
        repainted.success(lambda shown: [path for path, _ in shown or []], [gallery], [files], api_name=False,
                          show_progress="hidden", queue=False)
        for trigger in (r_source.change, *(c.release for c in region_inputs[2:]), r_mode.change):
            trigger(studio.region_overlay, region_inputs, [r_grid], api_name=False, show_progress="hidden")
        stop.click(None, None, None, cancels=[event, submitted, repainted], api_name=False).then(
            studio.stop, [status], [status], api_name=False)
        examples.click(lambda row: row[0] if row else gr.skip(), [examples], [prompt], api_name=False)
        demo.load(studio.style_changed, [style, model], [note, top_k, top_p, temperature, guidance, examples],
                  api_name=False)
        for trigger in (style, model):
            # .input, not .change: restoring a PNG or a history item sets style and model with their own settings
            trigger.input(studio.style_changed, [style, model], [note, top_k, top_p, temperature, guidance, examples],
                          api_name=False)
            trigger.change(studio.guidance_allowed, [style, model], [guidance], api_name=False)
        dice.click(lambda: resolve_seed(-1), None, [seed], api_name=False)
        reuse_seed.click(first_seed, [used], [seed], api_name=False)
        gallery.select(chosen_seed, None, [used], api_name=False)
        gallery.select(chosen_picture, None, [r_source], api_name=False)
        restore_file.upload(studio.restore, [restore_file],
                            [prompt, style, model, note, seed, top_k, top_p, temperature, guidance, restore_msg],
                            api_name="restore")

        with tabs, gr.Tab("对比 Compare"):
            a_default, b_default = studio.default_pair()
            with gr.Row():
                c_prompt = gr.Textbox(label="提示词 Prompt", value="红苹果", scale=3)
                c_seed = gr.Number(value=0, precision=0, label="种子 Seed", scale=1)
                c_preview = gr.Slider(0, 64, value=8, step=4, label="预览间隔 Preview every")
                c_count = gr.Slider(1, 4, value=1, step=1, label="每边张数 Pictures a side (seed, seed + 1, …)")
            with gr.Row():
                c_model_a = gr.Dropdown(studio.manager.names, value=a_default, label="模型 A")
                c_model_b = gr.Dropdown(studio.manager.names, value=b_default, label="模型 B")
            c_go = gr.Button("对比生成 Compare", variant="primary", elem_id="compare")
            with gr.Row(equal_height=True):
                with gr.Column():
                    c_img_a = gr.HTML(compare_panel([None]), label="A", elem_id="compare-a")
                    c_info_a = gr.Markdown(label="A 进度 progress", elem_id="compare-info-a")
                with gr.Column():
                    c_img_b = gr.HTML(compare_panel([None]), label="B", elem_id="compare-b")
                    c_info_b = gr.Markdown(label="B 进度 progress", elem_id="compare-info-b")
            c_files = gr.File(label="下载 PNG (含参数 with parameters)", file_count="multiple")
            for component in (c_prompt, c_seed, c_model_a, c_model_b, c_preview, c_count):
                quiet(component)
            c_go.click(gpu(studio.compare), [c_prompt, c_seed, c_model_a, c_model_b, c_preview, c_count],
                       [c_img_a, c_info_a, c_img_b, c_info_b, c_files], api_name="compare",
                       concurrency_id=PAINT_GROUP, show_progress="hidden")

        with tabs, gr.Tab("历史 History"):
            gr.Markdown("本次会话的作品；点击一张图，把它的参数放回「创作」。 Click a picture to reuse its settings.")
            h_gallery = gr.Gallery(label="历史 History", columns=4, format="png")
            history.change(lambda h: [(i["path"], studio.caption(i)) for i in h], [history], [h_gallery], api_name=False)
            h_gallery.select(studio.reuse, [history],
                             [prompt, style, model, note, seed, top_k, top_p, temperature, guidance, tabs],
                             api_name=False)

        with tabs, gr.Tab("模型 Models"):
            # wrapped, so that every column (guidance last) shows without a horizontal scrollbar
            table = gr.Dataframe(studio.models_table(), headers=["名称 name", "系列 family", "大小 size", "MB",
                                 "来源 source", "许可 licence", "引导 guidance"], interactive=False, wrap=True,
                                 column_widths=["16%", "9%", "7%", "7%", "11%", "40%", "10%"])
            gr.Markdown("### 下载 Download")
            downloadable = studio.download_choices()
            with gr.Row():
                d_choice = gr.Dropdown(downloadable, value=downloadable[0][1] if downloadable else None,
                                       label="模型 Model", elem_id="download-choice", scale=3)
                d_go = gr.Button("下载 Download", elem_id="download",
                                 interactive=studio.allow_downloads and bool(downloadable), scale=1)
            if not studio.allow_downloads:
                gr.Markdown("此站点的所有者未开放下载；所有者可用 `PAINTER_PRELOAD` 预先下载模型。 (Downloads are off "
                            "here: the owner can allow them with `--allow-downloads`, or preload models with "
                            "`PAINTER_PRELOAD`.)")
            d_status = gr.HTML(studio.downloads_html(), elem_id="downloads")
            d_commands = gr.Markdown(studio.download_commands())
            listed = [table, d_status, d_choice, d_go, model, c_model_a, c_model_b, d_commands, article]
            d_go.click(studio.download, [d_choice], listed, api_name=False, concurrency_id="download",
                       concurrency_limit=4, show_progress="hidden")
            d_timer = gr.Timer(1.0, active=studio.manager.downloading)
            d_timer.tick(studio.refresh_models, None, [*listed, d_timer], api_name=False, show_progress="hidden")
            # a page opened after a download sees the model; its Create list is refreshed with the rest
            demo.load(studio.models_view, None, listed, api_name=False)
    demo.queue(max_size=queue_size, default_concurrency_limit=workers)
    return demo


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Painter studio")
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    p.add_argument("--share", action="store_true", help="also serve through a public gradio.live link")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", choices=INFERENCE_MODES,
                   help="auto (fastest that passed the quality check), fp32 (exact), bf16, fp16 (CUDA), int8 (CPU)")
    p.add_argument("--model", action="append", default=[], help="another model directory or name (repeatable)")
    p.add_argument("--styles", default=str(STYLES_DIR), help="folder of style preset JSON files")
    p.add_argument("--workers", type=int, default=8,
                   help="jobs painting at once; each model's batching engine paints them in one batch")
    p.add_argument("--queue-size", type=int, default=16, help="waiting jobs before new ones are told it is busy")
    p.add_argument("--preload", action="append", default=[], metavar="NAME[,NAME]",
                   help="download these known models in the background at start (also PAINTER_PRELOAD)")
    p.add_argument("--allow-downloads", action=argparse.BooleanOptionalAction, default=None,
                   help="let visitors download known models from the Models tab (default: yes when run "
                        "locally, no on a Hugging Face Space)")
    args = p.parse_args(argv)
    if args.allow_downloads is None:
        args.allow_downloads = not os.environ.get("SPACE_ID")  # set by Hugging Face on every Space
    args.preload = [n.strip() for spec in [os.environ.get("PAINTER_PRELOAD", ""), *args.preload]
                    for n in spec.split(",") if n.strip()]
    return args


def create_app(argv: list[str] | None = None, prepare: bool = False) -> tuple[gr.Blocks, argparse.Namespace]:
    """The studio; with ``prepare``, the models the first style paints with are loaded in the background
    from the start (``python app.py`` does this), and the page says so until they are ready. Models to
    preload start downloading at once (a Space owner's PAINTER_PRELOAD), whether or not visitors may."""
    args = parse_args(argv)
    manager = ModelManager(args.model, device=args.device, precision=args.precision,
                           engine_threads=server_engine_threads())
    manager.preload(args.preload)
    studio = Studio(manager, load_styles(args.styles), allow_downloads=args.allow_downloads)
    if prepare and manager.names:
        first = next(iter(studio.styles))
        manager.prepare(list(dict.fromkeys([studio.model_for(first, AUTO)[0], *studio.default_pair()])))
    return build(studio, workers=args.workers, queue_size=args.queue_size), args


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="painter: %(message)s")
    demo, args = create_app(argv, prepare=True)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, **LAUNCH_OPTIONS)
