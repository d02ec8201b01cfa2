"""The bundled 128 px models as the studio uses them: chosen under each preset, they paint its domain offline."""

import pytest
from PIL import Image

from painter import hub
from painter.evaluation import DOMAIN_CHECKS, domain_measures, retrieval
from painter.serving.engine import server_engine_threads
from painter.ui.app import Studio
from painter.ui.models import ModelManager
from painter.ui.styles import load_styles
from conftest import ROOT

BUNDLED = ("bundled-large", "bundled-base")


@pytest.fixture(scope="module")
def studio() -> Studio:
    """One studio for the module, so each bundled model is loaded (and its auto mode checked) once; models
    load on first use, inside a test, into that test's offline cache. The owner of the cores paints with the
    studio's thread count, as `python app.py` sets it: int8 kernels round differently with another count, and
    the module would otherwise paint what earlier test modules left it."""
    return Studio(ModelManager(device="cpu", engine_threads=server_engine_threads()), load_styles(ROOT / "styles"))


def painted(studio: Studio, style: str, prompt: str, images: int = 2) -> list[dict]:
    """The domain measures of what the studio paints for a preset with the bundled model (seeds 0, 1, ...),
    as a user's click does."""
    model = studio.manager.first_installed(BUNDLED)
    *_, (paths, _, _, params) = studio.paint(prompt, style, model, None, None, None, None, 0, images, 0)
    assert params["model"] == model
    return [domain_measures(Image.open(p)) for p in paths]


def test_the_bundled_models_are_128_pixels_and_recommend_their_own_sampling(studio):
    installed = [name for name in BUNDLED if name in hub.installed()]
    assert installed, "a bundled model ships with the repository"
    manager = studio.manager
    for name in installed:
        painter = manager.get(name)
        assert painter.config.vqgan.resolution == 128 and painter.config.img_len == 256
        assert 0 < manager.entry(name).sampling["top_k"] < 100


def test_every_preset_paints_its_domain_with_the_bundled_model(studio):
    """No pai-painter model installed: 电商 paints a product on white, 风景 a scene to the edges, 国画 grey ink
    on paper, 表情 an emoji in colour on white, each from the preset's first example. The same subject in
    another preset does not score so, so the domain comes from the preset (its words for this model)."""
    model = studio.manager.first_installed(BUNDLED)
    for style in ("ecommerce", "scenery", "painting"):  # each in the words this model learnt for its domain
        assert studio.plan(style, model).template == studio.styles[style].fallback.template
    for style in ("ecommerce", "scenery", "painting", "emoji"):
        measures = painted(studio, style, studio.plan(style, model).examples[0])
        assert all(map(DOMAIN_CHECKS[style], measures)), (style, measures)

    # the same subjects outside their presets' domains
    subject = studio.plan("scenery", model).examples[0]
    assert all(m["fills_frame"] < 0.75 for m in painted(studio, "emoji", subject)), "a scene needs the preset"
    subject = studio.plan("painting", model).examples[0]
    assert all(m["colour"] > 0.5 for m in painted(studio, "emoji", subject)), "ink needs the preset"


@pytest.mark.parametrize("name", BUNDLED)
def test_the_shipped_weights_are_the_trained_ones(studio, name):
    """Each shipped model paints a handful of its own training captions (recipes/bundled/probe.tsv) close enough
    to their pictures that the nearest of the 16 is the right one far more often than chance (1 in 16)."""
    if name not in hub.installed():
        pytest.skip(f"{name} is not installed")
    found = retrieval(studio.manager.get(name), ROOT / "recipes" / "bundled" / "probe.tsv", captions=16,
                      candidates=16)
    assert found.r_at_1 >= 0.25, f"{name}: R@1 {found.r_at_1:.2f} on its training captions (chance 0.06)"


def test_the_bundled_vqgan_gives_every_white_cell_one_code():
    """What the bundled GPTs learnt from: a white background is one code (the VQGAN's white code), not the
    dozens of interchangeable codes its encoder gives white cells by their surroundings; and both GPTs were
    trained on that VQGAN (their configs name its white code; loading checks they match)."""
    import torch

    from painter.checkpoints import load_vqgan, read_config
    from painter.models.vqgan import white_cells

    vqgan = load_vqgan(ROOT / "assets" / "models" / "bundled-vqgan")
    assert vqgan.config.white_code is not None
    picture = torch.ones(1, 3, 128, 128)
    picture[0, 0, 30:90, 40:100] = -0.8  # a teal block off the grid
    with torch.no_grad():
        codes = vqgan.encode(picture)
    white = white_cells(picture, 8)
    assert 100 < int(white.sum()) < 256 and (codes[white] == vqgan.config.white_code).all()
    assert (codes[~white] != vqgan.config.white_code).float().mean() > 0.5
    for name in BUNDLED:
        folder = ROOT / "assets" / "models" / name
        if folder.is_dir():
            assert read_config(folder)[0].vqgan.white_code == vqgan.config.white_code
