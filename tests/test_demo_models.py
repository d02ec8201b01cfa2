"""The bundled demo models: present, small, loadable, the default, and able to paint a red apple."""

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from painter import Painter, hub
from painter.checkpoints import load_checkpoint
from painter.serving.cli import main

MODELS = hub.PROJECT_ROOT / "assets" / "models"


def test_the_pair_is_bundled_small_and_shares_one_vqgan():
    total = sum(f.stat().st_size for f in MODELS.rglob("*") if f.is_file())
    assert total <= 40e6, total
    configs = {}
    for name in ("demo-base", "demo-large"):
        checkpoint = load_checkpoint(hub.resolve(name))
        configs[name] = checkpoint.config
        assert checkpoint.format == "painter" and checkpoint.config.caption_dropout > 0
        assert checkpoint.config.img_len == 256 and checkpoint.config.vqgan.resolution == 64
        assert (MODELS / name / "README.md").read_text(encoding="utf-8").count("CC-BY 4.0") >= 1
    assert configs["demo-base"].vqgan == configs["demo-large"].vqgan
    assert configs["demo-large"].gpt.n_layer > configs["demo-base"].gpt.n_layer


def test_predict_defaults_to_demo_large(tmp_path):
    prompts = tmp_path / "p.tsv"
    prompts.write_text("1\t红苹果\n", encoding="utf-8")
    assert main(["-q", "predict", "--input", str(prompts), "--output", str(tmp_path / "o.tsv")]) == 0
    image = Image.open(io.BytesIO(base64.b64decode((tmp_path / "o.tsv").read_text().split("\t")[2])))
    assert image.size == (64, 64)


@pytest.mark.parametrize("name", ["demo-large"])
def test_red_apple_is_red(name):
    painter = Painter.from_pretrained(name, device="cpu")
    # as the studio paints it: the emoji preset's template and sampling settings (styles/emoji.json)
    preset = json.loads((hub.PROJECT_ROOT / "styles" / "emoji.json").read_text(encoding="utf-8"))
    images = painter.generate(preset["template"].format(prompt="红苹果"), seed=0, num_images=4,
                              **preset["sampling"])[0]
    reds = 0
    for image in images:
        a = np.asarray(image, dtype=np.float32)
        centre = a[16:48, 16:48]
        red = (centre[..., 0] > 150) & (centre[..., 1] < 110) & (centre[..., 2] < 110)
        reds += red.mean() > 0.25
    assert reds >= 3  # most of the centre is red in at least 3 of 4 pictures
