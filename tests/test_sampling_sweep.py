"""The sampling sweep's candidates reach a shipped model's config.json as they were measured
(recipes/sampling_sweep.py prints them; the recipe passes them to `painter convert --sampling`)."""

import json
import sys

import pytest

from conftest import ROOT
from painter import Painter
from painter.sampling import SamplingConfig
from painter.serving.cli import main

sys.path.insert(0, str(ROOT / "recipes"))
import sampling_sweep  # noqa: E402


@pytest.mark.parametrize("settings", sampling_sweep.SETTINGS)
def test_a_chosen_candidate_becomes_the_models_recommended_settings(easynlp_dir, tmp_path, settings):
    result = dict(settings, **{name: {"r_at_1": 0.5} for name in sampling_sweep.SETS})
    words = sampling_sweep.setting_words(result).split()
    assert main(["convert", str(easynlp_dir), str(tmp_path / "m"), *(f"--sampling={w}" for w in words)]) == 0
    assert json.loads((tmp_path / "m" / "config.json").read_text())["sampling"] == settings
    painter = Painter.from_pretrained(tmp_path / "m", device="cpu", precision="fp32")
    assert painter.sampling() == SamplingConfig(**settings)


def result(variety_train: float, variety_heldout: float, r_at_1: float = 0.5, stable: bool = True) -> dict:
    out = {"top_k": 5}
    for name in sampling_sweep.SETS:
        variety = {"train": variety_train, "heldout": variety_heldout}.get(name, 0.0)
        out[name] = {"r_at_1": r_at_1, "variety": variety, "stable": stable}
    return out


def test_a_candidate_must_vary_on_training_captions_and_held_out_pairs():
    assert sampling_sweep.acceptable(result(0.7, 0.6))
    assert not sampling_sweep.acceptable(result(0.7, 0.59)), "held-out pictures alike across seeds"
    assert not sampling_sweep.acceptable(result(0.59, 0.9))
    assert not sampling_sweep.acceptable(result(0.7, 0.7, stable=False))
    assert sampling_sweep.score(result(0.7, 0.7, r_at_1=0.3)) == pytest.approx(0.3)
