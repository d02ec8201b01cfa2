"""The canonical white code: every white cell of a picture is encoded as one code, so a GPT does not learn the
VQGAN's interchangeable background codes as if they meant something."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from painter.checkpoints import load_vqgan, save_vqgan
from painter.errors import ConfigError
from painter.models.vqgan import white_cells
from painter.training.gpt_trainer import vqgan_digest
from painter.training.white_code import choose_white_code, main as white_code_main
from conftest import tiny_model


def pictures_with_white_margins(n: int = 6) -> torch.Tensor:
    """16x16 pictures, white except a coloured 6x6 block that moves from picture to picture."""
    torch.manual_seed(1)
    images = torch.ones(n, 3, 16, 16)
    for i in range(n):
        y, x = (i % 3) * 4, (i // 3) * 6
        images[i, :, y:y + 6, x:x + 6] = torch.rand(3, 1, 1) * 1.6 - 1
    return images


def test_white_cells_are_those_whose_every_pixel_is_white():
    images = torch.ones(1, 3, 16, 16)
    images[0, 1, 5, 5] = 0.9  # one green pixel just below the white level: cell (1, 1) of the 4x4 grid
    images[0, :, 12:, 12:] = 0.97  # 252 of 255: still white
    cells = white_cells(images, 4).view(4, 4)
    expected = torch.ones(4, 4, dtype=torch.bool)
    expected[1, 1] = False
    assert torch.equal(cells, expected)


def test_encode_gives_white_cells_the_white_code_and_leaves_the_others():
    vqgan = tiny_model().first_stage_model
    images = pictures_with_white_margins()
    with torch.no_grad():
        plain = vqgan.encode(images)
        vqgan.config = dataclasses.replace(vqgan.config, white_code=7)
        snapped = vqgan.encode(images)
    white = white_cells(images, vqgan.config.downsample_factor)
    assert white.any() and (~white).any()
    assert (snapped[white] == 7).all()
    assert torch.equal(snapped[~white], plain[~white])
    assert len(plain[white].unique()) > 1  # what the snapping is for: the plain encoding varies over white


def test_the_chosen_code_reconstructs_best_of_those_white_cells_get():
    vqgan = tiny_model().first_stage_model
    images = pictures_with_white_margins()
    code, scores = choose_white_code(vqgan, images)
    with torch.no_grad():
        plain = vqgan.encode(images)
    white = white_cells(images, 4)
    assert set(scores) == set(plain[white].unique().tolist())  # fewer than 12 candidates here: all were tried
    assert code == max(scores, key=scores.get)
    assert vqgan.config.white_code is None  # choosing does not change the VQGAN
    assert choose_white_code(vqgan, torch.zeros(2, 3, 16, 16)) == (None, {})


def test_the_command_sets_the_code_in_place_and_keeps_the_weights(tmp_path):
    from test_training import synthetic_tsv

    vqgan = tiny_model().first_stage_model
    folder = save_vqgan(vqgan, tmp_path / "vqgan", dtype=torch.float16)
    weights = (folder / "vqgan.safetensors").read_bytes()
    white_code_main([str(folder), str(synthetic_tsv(tmp_path / "train.tsv"))])
    assert (folder / "vqgan.safetensors").read_bytes() == weights  # fp16 stays fp16, bit for bit
    code = json.loads((folder / "config.json").read_text())["vqgan"]["white_code"]
    assert load_vqgan(folder).config.white_code == code and 0 <= code < 128


@pytest.mark.parametrize("value, message", [(128, "between 0 and 127"), (-1, "between 0 and 127"),
                                            ("5", "whole number"), (2.0, "whole number")])
def test_a_bad_white_code_is_refused_by_name(tmp_path, value, message):
    folder = save_vqgan(tiny_model().first_stage_model, tmp_path / "vqgan")
    config = json.loads((folder / "config.json").read_text())
    config["vqgan"]["white_code"] = value
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=f"white_code.*{message}"):
        load_vqgan(folder)


def test_codes_cached_for_training_follow_the_white_code():
    vqgan = tiny_model().first_stage_model
    before = vqgan_digest(vqgan)
    vqgan.config = dataclasses.replace(vqgan.config, white_code=3)
    assert vqgan_digest(vqgan) != before


def test_a_shared_vqgan_with_another_white_code_is_named(tmp_path):
    from painter.checkpoints import load_checkpoint, save_painter
    from conftest import VOCAB

    model = tiny_model()
    model.config = dataclasses.replace(model.config, vqgan=dataclasses.replace(model.config.vqgan, white_code=3))
    save_painter(model, VOCAB, tmp_path / "model", vqgan_dir=tmp_path / "vqgan")
    config = json.loads((tmp_path / "vqgan" / "config.json").read_text())
    config["vqgan"]["white_code"] = None  # the shared VQGAN without it
    (tmp_path / "vqgan" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="does not have the white code"):
        load_checkpoint(tmp_path / "model")
