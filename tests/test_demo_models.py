"""The bundled models: present, small, loadable, the default (bundled-large), and able to paint a red apple."""

import base64
import io

import numpy as np
from PIL import Image

from painter import Painter, hub
from painter.checkpoints import load_checkpoint
from painter.serving.cli import main

MODELS = hub.PROJECT_ROOT / "assets" / "models"


def test_the_shipped_models_fit_the_budget_and_demo_large_is_bundled():
    total = sum(f.stat().st_size for f in MODELS.rglob("*") if f.is_file())
    assert total <= 60e6, total  # everything shipped in assets/models: the 128 px pair, its VQGAN, demo-large
    checkpoint = load_checkpoint(hub.resolve("demo-large"))
    assert checkpoint.format == "painter" and checkpoint.config.caption_dropout > 0
    assert checkpoint.config.img_len == 256 and checkpoint.config.vqgan.resolution == 64
    assert (MODELS / "demo-large" / "README.md").read_text(encoding="utf-8").count("CC-BY 4.0") >= 1


def red_pictures(images) -> int:
    """How many pictures have a mostly red centre (the middle half of each side)."""
    count = 0
    for image in images:
        side = image.size[0]
        centre = np.asarray(image.convert("RGB"), dtype=np.float32)[side // 4:3 * side // 4, side // 4:3 * side // 4]
        red = (centre[..., 0] > 150) & (centre[..., 1] < 110) & (centre[..., 2] < 110)
        count += red.mean() > 0.25
    return count


def test_predict_paints_a_red_apple_with_the_defaults(tmp_path):
    """The issue's acceptance: `painter predict` with no model and no sampling flags (so bundled-large and its
    recommended settings) turns 红苹果 into a red apple."""
    prompts = tmp_path / "p.tsv"
    prompts.write_text("1\t红苹果\n", encoding="utf-8")
    out = tmp_path / "o.tsv"
    assert main(["-q", "predict", "--input", str(prompts), "--output", str(out), "--num-images", "4"]) == 0
    images = [Image.open(io.BytesIO(base64.b64decode(line.split("\t")[2])))
              for line in out.read_text(encoding="utf-8").splitlines()]
    assert [im.size for im in images] == [(128, 128)] * 4
    assert red_pictures(images) >= 3  # most of the centre is red in at least 3 of 4 pictures


def test_the_emoji_preset_paints_a_red_apple():
    """As the studio paints it offline: the emoji preset's model, template and settings."""
    from painter.ui.app import AUTO, Studio
    from painter.ui.models import ModelManager
    from painter.ui.styles import load_styles

    studio = Studio(ModelManager(device="cpu"), load_styles(hub.PROJECT_ROOT / "styles"))
    *_, (paths, _, _, params) = studio.paint("红苹果", "emoji", AUTO, None, None, None, None, 0, 4, 0)
    assert params["model"] in studio.styles["emoji"].models
    assert red_pictures([Image.open(p).resize((128, 128)) for p in paths]) >= 3
