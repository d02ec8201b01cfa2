import json
import shutil

import pytest
from PIL import Image

from painter.ui.metadata import read_params, save_png
from painter.ui.styles import load_styles, parse_preset
from conftest import ROOT


def test_bundled_presets_load_and_name_their_models():
    styles = {s.id: s for s in load_styles(ROOT / "styles")}
    assert styles["ecommerce"].models == ("pai-painter-commercial-base-zh",)
    assert styles["scenery"].models == ("pai-painter-scenery-base-zh",)
    assert styles["painting"].models == ("pai-painter-painting-base-zh",)
    assert styles["emoji"].models == styles["plain"].models == ("bundled-large", "bundled-base", "demo-large")
    assert list(styles)[0] == "plain" and styles["ecommerce"].name_zh == "电商"
    assert styles["painting"].apply(" 远山 ") == "远山，国画"
    assert "宽松T恤" in styles["ecommerce"].examples


def test_every_presets_fallback_parses_and_names_an_installed_model():
    from painter import hub

    styles = {s.id: s for s in load_styles(ROOT / "styles")}
    installed = hub.installed()
    for sid in ("ecommerce", "scenery", "painting"):
        fallback = styles[sid].fallback
        assert fallback is not None and set(fallback.models) & set(installed), f"{sid} falls back to a bundled model"
        assert all(hub.registry()[m]["family"] in ("bundled", "demo") for m in fallback.models)
        assert fallback.template != "{prompt}" and len(fallback.examples) >= 4
        assert not set(fallback.examples) & set(styles[sid].examples), "the bundled model's own examples"
    assert "白底商品图" in styles["ecommerce"].fallback.template
    assert "风景" in styles["scenery"].fallback.template and "水墨画" in styles["painting"].fallback.template


def test_a_bad_fallback_skips_the_preset(tmp_path, caplog):
    name = {"zh": "坏", "en": "Bad"}
    cases = {"no-model": {"template": "{prompt}"}, "bad-template": {"model": "m", "template": "商品图"},
             "bad-examples": {"model": "m", "examples": ["", 3]}, "unknown-key": {"model": "m", "top_k": 3},
             "not-object": "demo-large", "empty-list": {"model": []}, "list-of-junk": {"model": ["m", 3]}}
    for case, fallback in cases.items():
        (tmp_path / f"{case}.json").write_text(json.dumps({"name": name, "fallback": fallback}), encoding="utf-8")
    assert load_styles(tmp_path)[0].id == "plain" and len(load_styles(tmp_path)) == 1
    for case in cases:
        assert f"{case}.json skipped" in caplog.text and "fallback" in caplog.text


def test_a_missing_preset_model_falls_back_to_the_bundled_models_domain_words(easynlp_dir, tmp_path):
    """电商 without its pai-painter model paints with the bundled model the fallback names, the fallback's template
    and that model's own sampling (not the preset's top-k 100 / temperature 1.0, which give colour noise there)."""
    from painter.ui.app import AUTO, Studio
    from painter.ui.models import ModelManager

    manager = ModelManager(device="cpu", precision="fp32")
    studio = Studio(manager, load_styles(ROOT / "styles"))
    bundled = manager.first_installed(studio.styles["ecommerce"].fallback.models)
    recommended = manager.entry(bundled).sampling
    assert recommended["top_k"] < 100, "the bundled model recommends its own settings"
    plan = studio.plan("ecommerce", AUTO)
    assert plan.model == bundled and plan.template == "{prompt}，白底商品图"
    assert (plan.sampling.top_k, plan.sampling.temperature) == (recommended["top_k"], recommended["temperature"])
    assert "pai-painter-commercial-base-zh" in plan.note and bundled in plan.note
    assert plan.examples == studio.styles["ecommerce"].fallback.examples
    assert set(manager.entry(bundled).domain_words) >= {"白底商品图", "风景", "水墨画"}, "its config lists them"
    chosen = studio.plan("painting", "demo-large")  # another model, picked by hand: its own settings, and...
    assert (chosen.sampling.top_k, chosen.sampling.temperature) == (10, 0.2)
    # ...the prompt as typed: demo-large never learnt 水墨画, and words a model never saw paint colour blotches
    assert manager.entry("demo-large").domain_words == () and chosen.template == "{prompt}"
    assert chosen.examples and not set(chosen.examples) & set(studio.styles["painting"].fallback.examples)
    emoji = studio.plan("emoji", AUTO)  # the bundled pair learnt 3D风格; demo-large gets the prompt as typed
    assert (emoji.model, emoji.template, emoji.note) == (bundled, "3D风格的{prompt}", "")
    assert studio.plan("emoji", "demo-large").template == "{prompt}", "3D风格 is not demo-large's word"
    # the sliders set a picture's first codes; a model's detail settings are named under them
    detail_from = manager.entry(bundled).sampling.get("detail_from")
    shown = studio.style_changed("plain", bundled)[3]["info"]
    assert (f"前 {detail_from} 个" in shown) if detail_from else shown == ""
    assert studio.style_changed("plain", "demo-large")[3]["info"] == "", "demo-large has no detail settings"

    # what is painted is the fallback's prompt, with the model's settings
    *_, (paths, status, _, params) = studio.paint("T恤", "ecommerce", AUTO, None, None, None, None, 0, 1, 0)
    assert (params["model"], params["top_k"], params["temperature"]) == (bundled, recommended["top_k"],
                                                                           recommended["temperature"])
    assert "painting with" not in status, "the model note has its own line; the status does not repeat it"

    # a general pai-painter model, when installed, paints the domain instead of the fallback
    general = shutil.copytree(easynlp_dir, tmp_path / "pai-painter-large-zh")
    studio = Studio(ModelManager(extra=[str(general)], device="cpu", precision="fp32"), load_styles(ROOT / "styles"))
    plan = studio.plan("ecommerce", AUTO)
    assert plan.model == "pai-painter-large-zh" and plan.template == "{prompt}" and plan.sampling.top_k == 100


def test_a_broken_preset_is_skipped_and_the_rest_load(tmp_path, caplog):
    (tmp_path / "good.json").write_text(json.dumps({"name": {"zh": "好", "en": "Good"}, "template": "{prompt}的画"}),
                                        encoding="utf-8")
    (tmp_path / "bad-json.json").write_text("{oops", encoding="utf-8")
    (tmp_path / "no-name.json").write_text(json.dumps({"template": "{prompt}"}), encoding="utf-8")
    (tmp_path / "bad-template.json").write_text(json.dumps({"name": {"zh": "坏", "en": "Bad"}, "template": "x"}),
                                                encoding="utf-8")
    (tmp_path / "bad-sampling.json").write_text(json.dumps({"name": {"zh": "坏", "en": "Bad"},
                                                            "sampling": {"steps": 3}}), encoding="utf-8")
    styles = load_styles(tmp_path)
    assert [s.id for s in styles] == ["good"] and styles[0].apply("猫") == "猫的画"
    for name in ("bad-json", "no-name", "bad-template", "bad-sampling"):
        assert f"{name}.json skipped" in caplog.text


def test_sampling_defaults_are_typed():
    preset = parse_preset({"name": {"zh": "a", "en": "b"}, "sampling": {"top_k": 20.0, "temperature": 1}}, "x.json")
    assert preset.sampling == {"top_k": 20, "temperature": 1.0} and preset.id == "x"
    assert type(preset.sampling["top_k"]) is int and type(preset.sampling["temperature"]) is float


def test_the_studio_shows_the_styles_settings_else_the_models(easynlp_dir, tmp_path):
    """Sliders follow the style, and where the style sets nothing (plain), the model's recommended settings."""
    from painter.checkpoints import convert
    from painter.ui.app import Studio
    from painter.ui.models import ModelManager

    convert(easynlp_dir, tmp_path / "recommending", sampling={"top_k": 5, "temperature": 0.5})
    own = tmp_path / "pai-painter-painting-base-zh"  # the painting preset's own model, recommending the same
    convert(easynlp_dir, own, sampling={"top_k": 5, "temperature": 0.5})
    manager = ModelManager(extra=[str(easynlp_dir), str(tmp_path / "recommending"), str(own)], device="cpu",
                           precision="fp32")
    studio = Studio(manager, load_styles(ROOT / "styles"))
    plain = studio.settings_for("plain", "recommending")
    assert (plain.top_k, plain.top_p, plain.temperature, plain.guidance_scale) == (5, 1.0, 0.5, 1.0)
    reference = studio.settings_for("plain", easynlp_dir.name)
    assert (reference.top_k, reference.temperature) == (100, 1.0)
    painting = studio.settings_for("painting", "pai-painter-painting-base-zh")  # the preset's own settings win
    assert (painting.top_k, painting.temperature) == (100, 1.0)
    assert studio.settings_for("plain", "demo-large").temperature == 0.2  # the bundled models recommend theirs

    # empty sampling fields paint with the model's settings, and the PNG records what was used
    *_, (paths, _, _, params) = studio.paint("红苹果", "plain", "recommending", None, None, None, None, 3, 1, 0)
    assert (params["top_k"], params["temperature"], params["top_p"]) == (5, 0.5, 1.0)
    assert read_params(paths[0])["temperature"] == 0.5


def test_png_parameters_round_trip(tmp_path):
    params = {"prompt": "红苹果", "style": "emoji", "model": "demo-large", "seed": 7, "top_k": 20, "top_p": 1.0,
              "temperature": 0.9, "guidance_scale": 1.5, "version": "0.1.0"}
    path = save_png(Image.new("RGB", (4, 4)), tmp_path / "a.png", params)
    assert read_params(path) == params
    with Image.open(path) as image:
        assert image.text["prompt"] == "红苹果" and image.text["seed"] == "7"  # readable by people too
    Image.new("RGB", (4, 4)).save(tmp_path / "plain.png")
    (tmp_path / "junk.png").write_bytes(b"not a png")
    assert read_params(tmp_path / "plain.png") is None and read_params(tmp_path / "junk.png") is None


def _studio(tmp_path=None):
    from painter.ui.app import Studio
    from painter.ui.models import ModelManager

    return Studio(ModelManager(device="cpu", precision="fp32"), load_styles(ROOT / "styles"), tmp_path)


def test_stop_says_it_stopped_and_cancels_enter_too():
    from painter.ui.app import Studio, build

    assert Studio.stopped("48 / 256 tokens · 3.1 s · 15 tokens/s · int8") == "已停止 Stopped at 48 / 256 tokens."
    assert Studio.stopped("") == "已停止 Stopped."
    config = build(_studio()).get_config_file()
    cancelling = [d for d in config["dependencies"] if d.get("cancels")]
    assert len(cancelling) == 1 and len(cancelling[0]["cancels"]) == 3, "Stop cancels the button's, Enter's and Repaint's jobs"


def test_after_stop_a_job_sends_nothing_more_and_other_browsers_paint_on(tmp_path):
    from types import SimpleNamespace

    studio = _studio(tmp_path)
    mine, theirs = SimpleNamespace(session_hash="a"), SimpleNamespace(session_hash="b")
    job = studio.create("红苹果", "emoji", "demo-large", seed=1, preview_every=8, request=mine)
    other = studio.create("红苹果", "emoji", "demo-large", seed=1, preview_every=8, request=theirs)
    status = next(job)[1]
    next(other)
    assert studio.stop(status, mine) == f"已停止 Stopped at {status.split(' · ')[0]}."
    assert list(job) == [], "no frame after Stop"
    assert "256 / 256" in list(other)[-1][1], "another browser's job goes on"
    again = list(studio.create("红苹果", "emoji", "demo-large", seed=1, preview_every=64, request=mine))
    # previews every 64 tokens, fewer where they come within FRAME_GAP of each other (a fast CPU)
    assert 1 <= len(again) <= 4 and "256 / 256" in again[-1][1], "this browser paints again after its Stop"


def test_previews_are_sent_at_most_ten_a_second_at_the_models_size(tmp_path):
    from painter.ui.app import FRAME_GAP

    studio = _studio(tmp_path)
    frames = list(studio.paint("红苹果", "emoji", "demo-large", None, None, None, None, 1, 1, 1))
    previews, last = frames[:-1], frames[-1]
    elapsed = float(last[1].split(" · ")[1].removesuffix(" s"))
    assert len(previews) <= elapsed / FRAME_GAP + 2 < 255, "not one frame per token"
    assert previews and all(im.size == (64, 64) for im in previews[0][0]), "the browser scales previews"
    assert "256 / 256" in last[1] and last[0][0].name.endswith(".png")


def test_history_captions_name_the_preset_and_reuse_returns_to_create():
    from types import SimpleNamespace

    from painter.ui.app import CREATE_TAB

    studio = _studio()
    item = {"prompt": "猫", "style": "emoji", "model": "demo-large", "seed": 3, "top_k": 10, "top_p": 1.0,
            "temperature": 0.2, "guidance_scale": 1.0}
    assert studio.caption(item) != studio.caption({**item, "style": "plain"})
    assert studio.caption(item).startswith("表情")
    out = studio.reuse([item], SimpleNamespace(index=0))
    assert out[:3] == ("猫", "emoji", "demo-large") and out[-1].selected == CREATE_TAB
    assert out[3] == "", "the note follows the reused style"
    painting = studio.reuse([{**item, "style": "painting"}], SimpleNamespace(index=0))
    assert "pai-painter-painting-base-zh" in painting[3]


def test_results_on_disk_are_capped_and_the_folder_removed_at_exit(tmp_path, monkeypatch):
    import atexit

    import painter.ui.app as app

    monkeypatch.setattr(app, "KEEP_PNGS", 3)
    studio = _studio(tmp_path)
    paths = [studio._save(Image.new("RGB", (4, 4), (i, 0, 0)), {"seed": i}) for i in range(5)]
    assert sorted(tmp_path.glob("painter-*.png")) == sorted(paths[2:])
    registered = []
    monkeypatch.setattr(atexit, "register", lambda fn, *args: registered.append((fn, args)))
    own = _studio()
    assert registered and registered[0][1][0] == own.output_dir
    registered[0][0](*registered[0][1])
    assert not own.output_dir.exists()


def test_a_model_that_says_guidance_hurts_it_gets_no_guidance_slider(easynlp_dir, tmp_path):
    import json

    from painter.checkpoints import convert, read_config
    from painter.ui.models import ModelManager

    studio = _studio()
    assert studio.manager.entry("demo-large").guidance is False, "the demo models' cards: guidance hurts them"
    assert studio.guidance_allowed("emoji", "demo-large")["interactive"] is False
    rows = studio.models_table()
    assert [r[-1] for r in rows if r[0] == "demo-large"] == ["no"]
    helps = convert(easynlp_dir, tmp_path / "helps", to="painter", guidance=True)
    assert json.loads((helps / "config.json").read_text())["guidance"] is True
    assert read_config(helps)[0].guidance_helps
    assert ModelManager(extra=[str(helps)], device="cpu").entry("helps").guidance is True
    (helps / "config.json").write_text(json.dumps({**json.loads((helps / "config.json").read_text()),
                                                   "guidance": "maybe"}))
    with pytest.raises(Exception, match='"guidance" must be true or false'):
        read_config(helps)


def test_models_are_prepared_in_the_background_and_the_page_says_so(painter_dir, monkeypatch):
    import threading

    from painter.serving.pipeline import Painter
    from painter.ui.models import ModelManager

    gate = threading.Event()
    real = Painter.preview_map

    def slow_preview_map(self):
        gate.wait(30)
        return real(self)

    monkeypatch.setattr(Painter, "preview_map", slow_preview_map)
    manager = ModelManager(extra=[str(painter_dir)], device="cpu", precision="fp32")
    thread = manager.prepare([painter_dir.name, "not-installed"])
    assert painter_dir.name in manager.preparation_note() and "首次启动" in manager.preparation_note()
    gate.set()
    thread.join(60)
    assert manager.preparation_note() == "" and manager.preparing == {painter_dir.name: "ready"}
    assert painter_dir.name in manager._loaded, "the first painting finds the model loaded"


def test_the_studios_engines_leave_a_core_to_the_server(painter_dir, monkeypatch):
    """Each model's engine steps with the manager's thread count, on the owner of the cores; the caller keeps
    its own."""
    import torch

    from painter.serving.engine import Engine, server_engine_threads
    from painter.ui.models import ModelManager

    assert server_engine_threads() == max(1, torch.get_num_threads() - 1)
    seen = []
    real = Engine._step
    monkeypatch.setattr(Engine, "_step", lambda self: seen.append(torch.get_num_threads()) or real(self))
    before = torch.get_num_threads()
    painter = ModelManager(extra=[str(painter_dir)], device="cpu", precision="fp32", engine_threads=1).get(
        painter_dir.name)
    painter.generate("红苹果", seed=0)
    assert seen and set(seen) == {1} and torch.get_num_threads() == before
    seen.clear()
    painter.set_engine_threads(2)  # the owner takes a new count when it next wakes
    painter.generate("红苹果", seed=0)
    assert set(seen) == {2}


def test_the_readmes_preset_table_matches_the_presets():
    """The README's claims about the presets' models and fallbacks are the files' own (styles/*.json)."""
    import re

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = {m.group(1): (m.group(2), m.group(3)) for m in re.finditer(r"^\| (\S+) [^|]*\| ([^|]*) \| ([^|]*) \|$",
                                                                     readme, flags=re.M)}
    styles = load_styles(ROOT / "styles")
    for style in styles:
        assert style.name_zh in rows, f"the README's preset table lacks {style.name_zh}"
        models, fallback = rows[style.name_zh]
        assert re.findall(r"`([^`]+)`", models) == list(style.models)
        if style.fallback is None:
            assert fallback.strip() == "—"
        else:
            named = re.findall(r"`([^`]+)`", fallback)
            assert named == [*style.fallback.models, style.fallback.template], (style.id, named)


def test_saving_from_eight_threads_past_the_limit_loses_no_finished_picture(tmp_path, monkeypatch):
    """Once the output folder holds its newest KEEP_PNGS, every save prunes the oldest: eight painting workers
    saving at once must each get their own file, and the folder must keep exactly the newest ones."""
    from concurrent.futures import ThreadPoolExecutor

    import painter.ui.app as app
    from painter.ui.app import Studio
    from painter.ui.models import ModelManager

    monkeypatch.setattr(app, "KEEP_PNGS", 20)
    studio = Studio(ModelManager(device="cpu"), load_styles(ROOT / "styles"), output_dir=tmp_path)
    picture = Image.new("RGB", (8, 8), (200, 30, 30))

    def save_many(worker):
        return [studio._save(picture, {"prompt": "猫", "seed": worker * 100 + i}) for i in range(60)]

    with ThreadPoolExecutor(8) as pool:
        paths = [p for batch in pool.map(save_many, range(8)) for p in batch]
    assert len(paths) == 480 and len(set(paths)) == 480, "every save returned its own file, none failed"
    assert len(list(tmp_path.glob("painter-*.png"))) == 20


def test_a_result_that_cannot_be_saved_is_one_clear_line(tmp_path, monkeypatch):
    import errno

    import painter.ui.app as app
    from painter.errors import PainterError
    from painter.ui.app import Studio
    from painter.ui.models import ModelManager

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(app, "save_png", full)
    studio = Studio(ModelManager(device="cpu"), load_styles(ROOT / "styles"), output_dir=tmp_path)
    with pytest.raises(PainterError, match="could not be saved .*No space left on device"):
        studio._save(Image.new("RGB", (8, 8)), {"prompt": "猫"})


def test_a_bad_model_folder_is_listed_with_its_reason_and_the_others_work(painter_dir, easynlp_dir, tmp_path):
    """The studio starts whatever a model folder holds: a config no model has is shown in the Models table with
    why, and the good models paint."""
    import json as json_module
    import shutil as shutil_module

    from painter.ui.app import Studio
    from painter.ui.models import ModelManager

    bad = shutil_module.copytree(easynlp_dir, tmp_path / "bad-model")
    config = json_module.loads((bad / "config.json").read_text())
    config["text_vocab_size"] = "21128"
    (bad / "config.json").write_text(json_module.dumps(config))
    manager = ModelManager(extra=[str(bad), str(painter_dir)], device="cpu", precision="fp32")
    assert painter_dir.name in manager.names and "bad-model" not in manager.names
    rows = {row[0]: row for row in Studio(manager, load_styles(ROOT / "styles")).models_table()}
    assert "cannot load" in rows["bad-model"][5] and "text_vocab_size" in rows["bad-model"][5]
    assert manager.get(painter_dir.name).generate("红苹果", seed=0)[0][0].size == (16, 16)


def test_an_uploaded_picture_too_large_or_not_a_picture_is_one_clear_line(tmp_path, monkeypatch):
    """A decompression bomb (here: more than twice Pillow's pixel limit, lowered for the test) and a file that
    is no picture are refused with the reason, before any pixel is decoded; a CMYK JPEG opens as it is."""
    import gradio as gr

    from painter.ui.app import open_picture

    big, cmyk, text = tmp_path / "big.png", tmp_path / "print.jpg", tmp_path / "notes.png"
    Image.new("L", (400, 400)).save(big)
    Image.new("CMYK", (40, 30), (0, 200, 200, 0)).save(cmyk)
    text.write_text("not a picture")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50_000)
    with pytest.raises(gr.Error, match="not a readable picture.*DecompressionBombError"):
        open_picture(str(big))
    with pytest.raises(gr.Error, match="not a readable picture.*UnidentifiedImageError"):
        open_picture(str(text))
    opened = open_picture(str(cmyk))
    assert opened.mode == "CMYK" and opened.size == (40, 30)


def test_the_studio_names_the_characters_a_model_left_out():
    from painter.text import TextTokenizer, TokenizedPrompt
    from painter.ui.app import prompt_notes
    from conftest import VOCAB

    full = TextTokenizer(VOCAB)
    tok = TextTokenizer(VOCAB, learnt=full.learnt_ids(["画一只猫"]))
    notes = prompt_notes(tok("请帮我画一只猫"), 32)
    assert len(notes) == 1 and "「请帮我」" in notes[0] and "never learnt" in notes[0]
    assert prompt_notes(full("请帮我画一只猫"), 32) == []
    assert prompt_notes(TokenizedPrompt(ids=[], pieces=[], dropped=0, unknown=0), 32) == []
