"""Repaint: keep part of a picture and paint the rest, from Python and the command line."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from painter import Painter
from painter.checkpoints import save_painter
from painter.serving.cli import EXIT_ERROR, main
from painter.serving.repaint import RepaintError, keep_mask
from painter.ui.metadata import read_params
from conftest import ROOT, VOCAB
from test_app import slow_model  # a 16 x 16 grid and a decoder without attention, like the bundled VQGAN


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_painter(slow_model(), VOCAB, tmp_path_factory.mktemp("repaint") / "slow")


@pytest.fixture(scope="module")
def painter(model_dir):
    return Painter.from_pretrained(model_dir, device="cpu", precision="fp32")


def bundled_vqgan_model(tmp_path) -> Painter:
    """A small random GPT on the shipped 128 px VQGAN: real pictures' decoder, milliseconds of GPT."""
    from painter.checkpoints import load_vqgan
    from painter.models import GPTConfig, ModelConfig, PainterModel

    vqgan = load_vqgan(ROOT / "assets" / "models" / "bundled-vqgan")
    gpt = GPTConfig(vocab_size=vqgan.config.n_embed + 21128, block_size=32 + 256, n_layer=2, n_head=2, n_embd=32)
    torch.manual_seed(0)
    model = PainterModel(ModelConfig(gpt=gpt, vqgan=vqgan.config))
    model.first_stage_model.load_state_dict(vqgan.state_dict())
    with torch.no_grad():
        model.transformer.tok_emb.weight.normal_(std=1.0)
        model.transformer.head.weight.normal_(std=0.5)
    return Painter.from_pretrained(save_painter(model, VOCAB, tmp_path / "bundled-vqgan-gpt"), device="cpu",
                                   precision="fp32")


def test_a_repainted_box_keeps_every_other_code_and_the_picture_away_from_it(painter, tmp_path):
    """Kept cells come back bit-identical. The decoder's convolutions reach 3 cells (24 px) from a changed
    code; beyond them only GroupNorm's image-wide statistics move a pixel, by a few grey levels (so a picture
    is never pixel-identical away from a repaint: its codes are)."""
    source = painter.generate("红苹果", seed=1)[0][0]
    box = (5, 4, 11, 9)
    out = painter.repaint(source, "狐狸", box=box, seed=2, num_images=2)
    keep = keep_mask(16, box=box)
    before = painter.image_codes(source)
    after = [painter.image_codes(im) for im in out]
    assert all(torch.equal(a[keep], before[keep]) for a in after), "kept cells bit-identical"
    assert not torch.equal(after[0][~keep], before[~keep]) and not torch.equal(after[0], after[1])
    again = painter.repaint(source, "狐狸", box=box, seed=2, num_images=2)
    assert [a.tobytes() for a in again] == [a.tobytes() for a in out], "the same seed repaints the same"
    rows = painter.repaint(source, "狐狸", keep_rows=6, seed=2)[0]
    assert torch.equal(painter.image_codes(rows)[:96], before[:96]), "keeping rows completes the picture below them"

    real = bundled_vqgan_model(tmp_path)
    source = real.generate("红苹果", seed=1)[0][0]
    repainted = real.repaint(source, "狐狸", box=box, seed=2)[0]
    diff = np.abs(np.asarray(source, dtype=int) - np.asarray(repainted, dtype=int)).max(2)
    cell, reach = 8, 3
    near = np.zeros_like(diff, dtype=bool)
    near[max(0, (box[1] - reach) * cell):(box[3] + reach) * cell, max(0, (box[0] - reach) * cell):(box[2] + reach) * cell] = True
    inside = diff[box[1] * cell:box[3] * cell, box[0] * cell:box[2] * cell]
    assert inside.mean() > 20, "the box is repainted"
    # measured: at most 18 and on average 2.5 grey levels for this 6 x 5-cell box (GroupNorm's statistics)
    assert diff[~near].max() <= 24 and diff[~near].mean() < 4, (diff[~near].max(), diff[~near].mean())


def test_any_picture_is_encoded_and_bad_requests_get_clear_messages(painter):
    photo = Image.new("RGBA", (300, 180), (0, 0, 0, 0))  # transparent, not square: on white, centre-cropped
    photo.paste((200, 30, 30, 255), (100, 40, 200, 140))
    out = painter.repaint(photo, "红苹果", box=(0, 0, 8, 8), seed=0)[0]
    assert out.size == (64, 64) and out.info["codes"] and out.info["vqgan"] == painter.vqgan_id
    source = painter.generate("红苹果", seed=1)[0][0]
    for kwargs, message in [({"box": (3, 3, 3, 9)}, "not a region"), ({"box": (0, 0, 17, 4)}, "not a region"),
                            ({"keep_rows": 0}, "keep_rows must be"), ({"keep_rows": 16}, "keep_rows must be"),
                            ({"mask": np.ones((8, 8))}, "16 x 16"), ({"mask": np.ones((16, 16))}, "nothing would be"),
                            ({"mask": np.zeros((16, 16))}, "keeps no cell"), ({}, "one of keep_rows, box or mask"),
                            ({"box": (0, 0, 4, 4), "keep_rows": 3}, "one of keep_rows, box or mask")]:
        with pytest.raises(RepaintError, match=message):
            painter.repaint(source, "狐狸", **kwargs)
    foreign = source.copy()
    foreign.info = {**source.info, "vqgan": "0123456789abcdef"}
    with pytest.raises(RepaintError, match="another VQGAN"):
        painter.repaint(foreign, "狐狸", box=(0, 0, 4, 4))
    with pytest.raises(RepaintError, match="PIL image"):
        painter.repaint(b"not a picture", "狐狸", box=(0, 0, 4, 4))


def test_pictures_in_any_colour_mode_are_encoded_as_what_they_show(painter):
    """A print-shop CMYK JPEG, a 16-bit greyscale scan and a palette GIF encode to the codes of the same picture
    in plain RGB (a few codes may differ where JPEG or the palette changed the pixels), never to white."""
    import io

    rgb = Image.new("RGB", (96, 96), (240, 240, 240))
    rgb.paste((200, 30, 30), (24, 24, 72, 72))
    cmyk = io.BytesIO()
    rgb.convert("CMYK").save(cmyk, "JPEG", quality=95)
    grey16 = Image.fromarray(np.asarray(rgb.convert("L"), dtype=np.uint16) * 257)  # mode I;16
    reference = painter.image_codes(rgb)
    for name, picture in [("CMYK", Image.open(cmyk)), ("I;16", grey16), ("P", rgb.convert("P"))]:
        codes = painter.image_codes(picture)
        same = (codes == reference).float().mean().item()
        if name == "I;16":  # grey, so compare with the grey picture
            same = (codes == painter.image_codes(rgb.convert("L"))).float().mean().item()
        assert same > 0.8, (name, same)
    white = painter.image_codes(Image.new("RGB", (96, 96), (255, 255, 255)))
    assert (painter.image_codes(grey16) != white).any()  # Pillow's own convert("RGB") clips I;16 to white


def test_paint_and_repaint_from_the_command_line(model_dir, tmp_path):
    first = tmp_path / "first.png"
    assert main(["-q", "paint", "红苹果", "--model", str(model_dir), "--output", str(first), "--seed", "4",
                 "--precision", "fp32"]) == 0
    params = read_params(first)
    assert params["seed"] == 4 and params["prompt"] == "红苹果" and len(params["codes"]) == 684
    out = tmp_path / "fox.png"
    assert main(["-q", "repaint", "狐狸", "--model", str(model_dir), "--image", str(first), "--box", "4,4,12,12",
                 "--output", str(out), "--num-images", "2", "--precision", "fp32"]) == 0
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == ["first.png", "fox-0.png", "fox-1.png"]
    assert read_params(tmp_path / "fox-1.png")["seed"] == 1 and "repainted" in read_params(tmp_path / "fox-0.png")
    not_png = tmp_path / "notes.txt"
    not_png.write_text("hello")
    assert main(["-q", "repaint", "狐狸", "--model", str(model_dir), "--image", str(not_png), "--keep-rows", "4",
                 "--output", str(tmp_path / "x.png")]) == EXIT_ERROR
    assert main(["-q", "repaint", "狐狸", "--model", str(model_dir), "--image", str(first), "--box", "4,4,4,12",
                 "--output", str(tmp_path / "y.png")]) == EXIT_ERROR
    assert sorted(p.name for p in tmp_path.iterdir()) == [*written, "notes.txt"], "nothing written on an error"
    with pytest.raises(SystemExit):
        main(["repaint", "狐狸", "--image", str(first), "--box", "1,2,3", "--output", str(tmp_path / "z.png")])
    buffer = io.BytesIO()
    Image.open(first).save(buffer, format="PNG")  # metadata dropped: the picture is encoded instead
    (tmp_path / "plain.png").write_bytes(buffer.getvalue())
    assert main(["-q", "repaint", "狐狸", "--model", str(model_dir), "--image", str(tmp_path / "plain.png"),
                 "--keep-rows", "8", "--output", str(tmp_path / "enc.png"), "--precision", "fp32"]) == 0


def test_a_streamed_repaint_shows_the_kept_cells_from_its_first_frame(painter):
    from painter.serving.preview import GREY

    source = painter.generate("红苹果", seed=1)[0][0]
    frames = list(painter.stream("狐狸", seed=2, preview_every=4, repaint=painter.region(source, keep_rows=10)))
    first = np.asarray(frames[0].image, dtype=np.float32) / 127.5 - 1
    assert frames[0].step == 4 and not frames[0].final
    grey = np.abs(first - GREY).max(2) < 0.02
    assert grey[44:].all(), "free cells not yet sampled are grey"
    assert not grey[4:36].all(), "kept rows are painted from the first frame"
    assert frames[-1].final and "repainted" in frames[-1].image.info
    assert torch.equal(painter.image_codes(frames[-1].image)[:160], painter.image_codes(source)[:160])
