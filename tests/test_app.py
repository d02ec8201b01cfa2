"""The studio served for real on a free port, driven through gradio_client."""

import json
import re
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402

from bench.studio import free_port  # noqa: E402
from painter.checkpoints import save_easynlp, save_painter  # noqa: E402
from painter.models import GPTConfig, ModelConfig, PainterModel, VQGANConfig  # noqa: E402
from painter.ui.metadata import read_params  # noqa: E402
from painter.ui.app import LAUNCH_OPTIONS  # noqa: E402
from conftest import ROOT, VOCAB, tiny_model  # noqa: E402

# a preset with its own sampling settings and no model of its own
SKETCH = {"name": {"zh": "素描", "en": "Sketch"}, "template": "{prompt}的素描",
          "sampling": {"top_k": 10, "temperature": 0.2}}


def slow_model() -> PainterModel:
    """A 64x64 VQGAN with a 16x16 grid: 256 tokens, like the real models, so jobs last long enough to cancel."""
    torch.manual_seed(1)
    vqgan = VQGANConfig(ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(), z_channels=8, embed_dim=8,
                        n_embed=128, resolution=64, norm_groups=8)
    gpt = GPTConfig(vocab_size=128 + 21128, block_size=32 + 256, n_layer=2, n_head=2, n_embd=32)
    return PainterModel(ModelConfig(gpt=gpt, vqgan=vqgan))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import painter.ui.app as app

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(app, "FRAME_GAP", 0.0)  # every preview is sent, so the tests can count them
        yield from serve(tmp_path_factory)


def serve(tmp_path_factory):
    from painter.ui.app import create_app

    root = tmp_path_factory.mktemp("models")
    save_painter(tiny_model(), VOCAB, root / "tiny")
    save_painter(tiny_model(seed=3, n_layer=3), VOCAB, root / "tiny3")
    save_painter(slow_model(), VOCAB, root / "slow")
    broken = save_easynlp(tiny_model(), VOCAB, root / "broken")
    weights = broken / "pytorch_model.bin"
    weights.write_bytes(weights.read_bytes()[:5000])
    styles = shutil.copytree(ROOT / "styles", tmp_path_factory.mktemp("styles") / "styles")
    (styles / "sketch.json").write_text(json.dumps(SKETCH, ensure_ascii=False), encoding="utf-8")
    port = free_port()
    demo, _ = create_app(["--model", str(root / "tiny"), "--model", str(root / "tiny3"), "--model",
                          str(root / "slow"), "--model", str(broken), "--port", str(port), "--workers", "2",
                          "--queue-size", "32", "--styles", str(styles)])
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **LAUNCH_OPTIONS)
    yield f"http://127.0.0.1:{port}/"
    demo.close()


def paint_args(prompt="红苹果", model="tiny", seed=5, n=1, preview=4, style="plain"):
    return (prompt, style, model, 100, 1.0, 1.0, 1.0, seed, n, preview)


def run_job(url, *args):
    client = Client(url, verbose=False)
    job = client.submit(*args, api_name="/generate")
    updates = list(job)
    return job, updates


def final_png(updates) -> Path:
    gallery = updates[-1][0]
    return Path(gallery[0]["image"] if isinstance(gallery[0].get("image"), str) else gallery[0]["image"]["path"])


def test_generate_streams_and_ends_with_a_png_holding_its_parameters(server):
    job, updates = run_job(server, *paint_args(preview=4))
    assert len(updates) >= 3  # 3 previews (after 4, 8 and 12 of 16 tokens) and the final picture
    assert "16 / 16 tokens" in updates[-1][1]
    png = final_png(updates)
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size == (256, 256)
    params = read_params(png)
    assert params["prompt"] == "红苹果" and params["model"] == "tiny" and params["seed"] == 5
    assert params["top_k"] == 100 and params["temperature"] == 1.0 and "version" in params
    assert updates[-1][2] == "5"  # the seed used


def test_preview_frames_rebuild_no_component(server, monkeypatch):
    """A frame keeps the emptied gallery as a value: a skip (an empty update) would make Gradio rebuild the
    component and its API schema on every frame, beside the painting."""
    from gradio.state_holder import SessionState

    rebuilt = []
    real = SessionState._update_config
    monkeypatch.setattr(SessionState, "_update_config", lambda self, key: rebuilt.append(key) or real(self, key))
    job, updates = run_job(server, *paint_args(preview=1))
    assert len(updates) >= 15 and rebuilt == []
    assert all(u[0] == [] for u in updates[:-1])  # the previous results are cleared
    assert final_png(updates).is_file()


def test_every_picture_says_its_own_seed(server):
    """Several pictures: the seed box lists each one's seed, and each result's caption names its own."""
    _, updates = run_job(server, *paint_args(seed=7, n=3, preview=0))
    assert updates[-1][2] == "7, 8, 9"
    assert [item["caption"] for item in updates[-1][0]] == ["seed 7", "seed 8", "seed 9"]
    assert [read_params(Path(item["image"]["path"] if isinstance(item["image"], dict) else item["image"]))["seed"]
            for item in updates[-1][0]] == [7, 8, 9]


def test_same_seed_same_pixels_and_random_seed_reported(server):
    a = np.asarray(Image.open(final_png(run_job(server, *paint_args(seed=11))[1])))
    b = np.asarray(Image.open(final_png(run_job(server, *paint_args(seed=11))[1])))
    c = np.asarray(Image.open(final_png(run_job(server, *paint_args(seed=12))[1])))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    _, updates = run_job(server, *paint_args(seed=-1))
    assert int(updates[-1][2]) >= 0 and read_params(final_png(updates))["seed"] == int(updates[-1][2])


def test_cancel_stops_a_running_job_and_frees_the_worker(server):
    client = Client(server, verbose=False)
    job = client.submit(*paint_args(model="slow", preview=1), api_name="/generate")
    deadline = time.time() + 60
    while time.time() < deadline and len(job.outputs()) < 3:
        time.sleep(0.02)
    assert len(job.outputs()) >= 3
    job.cancel()
    time.sleep(1.0)
    seen = len(job.outputs())
    time.sleep(1.0)
    assert len(job.outputs()) == seen < 256  # nothing more arrives: sampling stopped
    assert "256 / 256" not in str(job.outputs()[-1][1])
    start = time.time()
    _, updates = run_job(server, *paint_args(model="tiny"))
    assert "16 / 16" in updates[-1][1] and time.time() - start < 30


def panel_pictures(html: str) -> list[str]:
    """The kinds of the pictures in a Compare panel, and 'empty' for a cell still waiting."""
    return re.findall(r'<img alt="(\w+)"|class="cell (empty)"', html) and [
        a or b for a, b in re.findall(r'<img alt="(\w+)"|class="cell (empty)"', html)]


def test_compare_streams_two_square_panels_and_the_pngs_of_both(server):
    client = Client(server, verbose=False)
    job = client.submit("红苹果", 3, "tiny", "tiny3", 4, 1, api_name="/compare")
    updates = list(job)
    assert len(updates) >= 3
    assert panel_pictures(updates[0][0]) == panel_pictures(updates[0][2]) == ["empty"], "a panel from the start"
    assert "jpeg" in panel_pictures(updates[1][0]), "previews stream into the panel"
    panel_a, info_a, panel_b, info_b, files = updates[-1]
    assert panel_pictures(panel_a) == panel_pictures(panel_b) == ["png"]
    assert "tiny · 16 / 16" in info_a and "tiny3 · 16 / 16" in info_b
    assert re.search(r"tokens/s · (int4|int8|bf16|fp32)$", info_b), "the mode auto chose for this model on this CPU"
    pictures = [Path(f["path"] if isinstance(f, dict) else f) for f in files]
    assert [read_params(p)["model"] for p in pictures] == ["tiny", "tiny3"]
    assert [read_params(p)["seed"] for p in pictures] == [3, 3], "one seed for both sides"
    a, b = (np.asarray(Image.open(p)) for p in pictures)
    assert a.shape == b.shape == (256, 256, 3) and not np.array_equal(a, b)


def test_compare_paints_a_grid_of_seeds_a_side(server):
    updates = list(Client(server, verbose=False).submit("红苹果", 5, "tiny", "tiny3", 0, 3, api_name="/compare"))
    assert panel_pictures(updates[0][0]) == ["empty"] * 3
    panel_a, _, panel_b, _, files = updates[-1]
    assert panel_pictures(panel_a) == panel_pictures(panel_b) == ["png"] * 3 and 'class="painter-compare grid"' in panel_a
    assert sorted(read_params(Path(f["path"] if isinstance(f, dict) else f))["seed"] for f in files) == [5, 5, 6, 6, 7, 7]


def test_eight_concurrent_clients_all_complete(server):
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: run_job(server, *paint_args(seed=100 + i, preview=0))[1], range(8)))
    seeds = [read_params(final_png(updates))["seed"] for updates in results]
    assert sorted(seeds) == list(range(100, 108))


@pytest.mark.parametrize("args,message", [
    (paint_args(prompt="   "), "请输入提示词"),
    (paint_args(n=9), "1 到 4|maximum value 4"),  # Gradio checks slider ranges itself
    (paint_args(seed=-7), "种子"),
    (("红苹果", "plain", "tiny", 0, 1.0, 1.0, 1.0, 1, 1, 4), "minimum value 1"),
    (("红苹果", "plain", "tiny", 1000, 1.0, 1.0, 1.0, 1, 1, 4), "codebook size 128"),  # in the UI's range, not the model's
    (("红苹果", "plain", "tiny", 100, 1.0, -1.0, 1.0, 1, 1, 4), "minimum value 0.05"),
    (paint_args(prompt="😀😀"), "vocabulary"),
    (paint_args(model="broken"), "加载失败"),
])
def test_bad_input_gives_a_message_and_no_stuck_worker(server, args, message):
    client = Client(server, verbose=False)
    with pytest.raises(Exception, match=message):
        client.predict(*args, api_name="/generate")
    assert "16 / 16" in run_job(server, *paint_args())[1][-1][1]  # the worker is free, other models work


def test_long_prompt_runs_and_says_what_was_used(server):
    _, updates = run_job(server, *paint_args(prompt="一只俏皮的狗正跑过草地" * 4))
    assert "模型只看到" in updates[-1][1] and "16 / 16" in updates[-1][1]


def test_restore_from_png(server, tmp_path):
    _, updates = run_job(server, *paint_args(seed=42, style="emoji"))
    client = Client(server, verbose=False)
    restored = client.predict(handle_file(str(final_png(updates))), api_name="/restore")
    assert restored[:3] == ("红苹果", "emoji", "tiny") and restored[4] == 42
    assert restored[3] == "", "the model note follows the restored style and model"
    plain = tmp_path / "plain.png"
    Image.new("RGB", (8, 8), (1, 2, 3)).save(plain)
    message = client.predict(handle_file(str(plain)), api_name="/restore")[-1]
    assert "没有 Painter 参数" in message


@pytest.mark.parametrize("params,message", [
    ({"prompt": "猫", "top_k": "abc", "seed": 1}, "top_k must be a whole number"),
    ({"prompt": "猫", "seed": "x"}, "seed must be a whole number"),
    ({"prompt": "猫", "temperature": -3, "seed": 1}, "temperature"),
    ({"prompt": ["猫"], "seed": 1}, "prompt must be text"),
    ({"prompt": "猫", "top_k": 10**30, "seed": 1}, "top_k must be a whole number from 1 to"),  # orjson's limit
    ({"prompt": "猫", "temperature": 1e-300, "seed": 1}, "temperature must be a number from 0.05 to 2.0"),
    ({"prompt": "猫", "seed": 2**70}, "seed must be between 0 and"),
    ({"prompt": "猫", "style": [], "seed": 1}, "style must be a name"),
    ({"prompt": "猫", "model": {"x": 1}, "seed": 1}, "model must be a name"),
    ({"prompt": "猫" * 5000, "seed": 1}, "prompt must be text of at most 1000"),
])
def test_restoring_a_png_with_bad_parameters_restores_nothing_and_says_why(server, tmp_path, params, message):
    from painter.ui.metadata import save_png

    crafted = save_png(Image.new("RGB", (8, 8)), tmp_path / "crafted.png", {"style": "emoji", **params})
    restored = Client(server, verbose=False).predict(handle_file(str(crafted)), api_name="/restore")
    assert "参数有误" in restored[-1] and message in restored[-1]
    assert restored[0] in (None, "", {"__type__": "update"})  # the prompt box is left alone


def test_a_bad_api_value_is_answered_with_its_message(server):
    client = Client(server, verbose=False)
    with pytest.raises(Exception) as error:
        client.predict("红苹果", "plain", "tiny", 100, 1.0, 1.0, 1.0, "x", 1, 0, api_name="/generate")
    message = str(error.value).strip()
    assert message and message != "None" and "Seed" in message and "'x'" in message, "a message, not {'error': null}"


def test_sampling_left_empty_in_the_api_is_the_presets(server):
    client = Client(server, verbose=False)
    parameters = {p["parameter_name"]: p for p in
                  client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/generate"]["parameters"]}
    assert all(parameters[k]["parameter_default"] is None for k in ("top_k", "top_p", "temperature", "guidance"))
    result = client.predict("红苹果", "sketch", "tiny", seed=5, preview_every=0, api_name="/generate")
    params = read_params(final_png([result]))
    assert (params["style"], params["top_k"], params["temperature"]) == ("sketch", 10, 0.2)  # the preset's
    result = client.predict("红苹果", "sketch", "tiny", None, None, 0.7, None, 5, 1, 0, api_name="/generate")
    assert (read_params(final_png([result]))["top_k"], read_params(final_png([result]))["temperature"]) == (10, 0.7)


def test_api_outputs_have_names():
    from painter.ui.app import build

    api = build(studio_for_api()).get_api_info()
    for endpoint in ("/generate", "/restore"):
        names = [r["label"] for r in api["named_endpoints"][endpoint]["returns"]]
        assert not [n for n in names if n.startswith("value_")], (endpoint, names)


def studio_for_api():
    from painter.ui.app import Studio
    from painter.ui.models import ModelManager
    from painter.ui.styles import load_styles
    from conftest import ROOT

    return Studio(ModelManager(device="cpu", precision="fp32"), load_styles(ROOT / "styles"))


def test_some_characters_outside_the_vocabulary_are_reported(server):
    _, updates = run_job(server, *paint_args(prompt="红苹果😀"))
    assert "16 / 16" in updates[-1][1] and "1 个字不在词表中" in updates[-1][1]


def test_a_client_that_disconnects_mid_stream_frees_the_worker(server, monkeypatch):
    import json
    import urllib.request

    import painter.serving.pipeline as pipeline

    frames = []  # every preview, fast or decoded, becomes pictures through tensor_to_pil
    original = pipeline.tensor_to_pil
    monkeypatch.setattr(pipeline, "tensor_to_pil", lambda images: frames.append(1) or original(images))
    request = urllib.request.Request(server + "gradio_api/call/generate", method="POST",
                                     data=json.dumps({"data": list(paint_args(model="slow", preview=1))}).encode(),
                                     headers={"Content-Type": "application/json"})
    event_id = json.load(urllib.request.urlopen(request, timeout=30))["event_id"]
    stream = urllib.request.urlopen(server + f"gradio_api/call/generate/{event_id}", timeout=30)
    deadline = time.time() + 60
    while len(frames) < 3 and time.time() < deadline:
        stream.readline()
    assert len(frames) >= 3
    stream.close()  # the browser tab goes away
    time.sleep(1.5)
    seen = len(frames)
    time.sleep(1.5)
    assert len(frames) == seen < 256  # sampling stopped with the connection
    assert "16 / 16" in run_job(server, *paint_args())[1][-1][1]


def test_an_empty_prompt_is_logged_in_one_line_without_a_traceback(server, capfd, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="painter.ui.app")
    capfd.readouterr()
    with pytest.raises(Exception, match="请输入提示词"):
        Client(server, verbose=False).predict(*paint_args(prompt="   "), api_name="/generate")
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err
    assert [r.getMessage() for r in caplog.records if r.name == "painter.ui.app"] == [
        "refused: 请输入提示词，例如「红苹果」。 (Type a prompt first.)"]


def call_by_index(url: str, fn_index: int, data: list, event_data=None) -> dict:
    """An event called as a crafted client would: by its number, with any payload (Gradio lets a client call
    events marked private this way)."""
    import json
    import urllib.request

    session = f"crafted{fn_index}"
    body = {"data": data, "fn_index": fn_index, "session_hash": session, "event_data": event_data}
    request = urllib.request.Request(url + "gradio_api/queue/join", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    urllib.request.urlopen(request, timeout=30).read()
    with urllib.request.urlopen(url + f"gradio_api/queue/data?session_hash={session}", timeout=60) as stream:
        for line in stream:
            if line.startswith(b"data:"):
                message = json.loads(line[5:])
                if message.get("msg") == "process_completed":
                    return message
    raise AssertionError(f"event {fn_index} never completed")


def test_private_events_called_with_crafted_payloads_do_no_harm(server, tmp_path):
    from painter.ui.app import build

    config = build(studio_for_api()).get_config_file()
    private = [d for d in config["dependencies"] if d.get("api_visibility") == "private"]
    junk = ["x" * 5000, -10**12, None, {"path": "/etc/passwd"}, ["../../etc/passwd"]]
    before = {p.name for p in tmp_path.iterdir()}
    for dep in private:
        for value in junk:
            message = call_by_index(server, dep["id"], [value] * len(dep["inputs"]), {"index": 10**9, "value": value})
            output = message.get("output", {})
            if not message.get("success"):
                error = str(output.get("error") or "")
                assert error, (dep["id"], value, message)  # a message, not null
                if not error.startswith("Could not preprocess input"):  # Gradio's own check of the payload
                    assert not any(w in error for w in ("out of range", "has no attribute", "not subscriptable")), error
            assert "root:x:" not in str(output) and "/etc/passwd" not in str(output.get("data")), (dep["id"], value)
    assert {p.name for p in tmp_path.iterdir()} == before
    assert "16 / 16 tokens" in run_job(server, *paint_args())[1][-1][1], "the studio still paints"


@pytest.mark.parametrize("change,message", [({3: 0}, "less than minimum value 1"), ({5: 5.0}, "greater than maximum"),
                                            ({8: 9}, "greater than maximum value 4"), ({1: "nostyle"}, "choices"),
                                            ({2: "nomodel"}, "choices")])
def test_a_refused_api_value_is_one_log_line_not_a_traceback(server, capfd, change, message):
    args = list(paint_args(preview=0))
    for index, value in change.items():
        args[index] = value
    with pytest.raises(Exception, match=message):
        Client(server, verbose=False).predict(*args, api_name="/generate")
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err, (out + err)[-2000:]


def test_repaint_through_the_api_keeps_the_rest_of_a_result(server, tmp_path):
    """A result's PNG carries its codes: /repaint keeps every cell outside the box bit for bit and streams
    like /generate; the overlay shows the cells to repaint; a bad region is a message."""
    import torch

    from painter.serving.repaint import codes_from_text, keep_mask

    client = Client(server, verbose=False)
    source = final_png(run_job(server, *paint_args(model="slow", seed=2, preview=0))[1])
    job = client.submit(handle_file(str(source)), "狐狸", "plain", "slow", "box", 4, 4, 12, 12, 8, 0.6,
                        None, None, None, None, 7, 2, 64, api_name="/repaint")
    updates = list(job)
    assert len(updates) >= 3 and "256 / 256" in updates[-1][1] and updates[-1][2] == "7, 8"
    pictures = [Path(item["image"]["path"] if isinstance(item["image"], dict) else item["image"])
                for item in updates[-1][0]]
    keep = keep_mask(16, box=(4, 4, 12, 12))
    before = codes_from_text(read_params(source)["codes"], 256, 128)
    for picture in pictures:
        params = read_params(picture)
        after = codes_from_text(params["codes"], 256, 128)
        assert torch.equal(after[keep], before[keep]) and not torch.equal(after, before)
        assert params["prompt"] == "狐狸" and '"kept": 192' in params["repainted"]
    with pytest.raises(Exception, match="not a region"):
        client.predict(handle_file(str(source)), "狐狸", "plain", "slow", "box", 9, 4, 3, 12, 8, 0.6,
                       None, None, None, None, 7, 1, 0, api_name="/repaint")


def test_the_repaint_overlay_tints_the_cells_to_repaint():
    from painter.ui.app import Studio, grid_overlay
    from painter.serving.repaint import keep_mask

    picture = Image.new("RGB", (64, 64), (255, 255, 255))
    shown = np.asarray(grid_overlay(picture, keep_mask(16, keep_rows=10)), dtype=int)
    assert shown.shape == (256, 256, 3)
    red = (shown[..., 0] - shown[..., 1]) > 60
    assert red[170:, :].mean() > 0.7 and red[:150, :].mean() < 0.01, "rows 10-15 tinted, rows 0-9 not"
    assert Studio.region_overlay(None, None) is None


def test_a_prompt_of_a_million_characters_is_refused_at_once(server):
    start = time.time()
    with pytest.raises(Exception, match="at most 1,000 characters"):
        Client(server, verbose=False).predict(*paint_args(prompt="猫" * 1_000_000, preview=0), api_name="/generate")
    assert time.time() - start < 30


def test_a_png_whose_parameters_nest_thousands_deep_has_none(tmp_path):
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("painter", "[" * 100_000 + "]" * 100_000)
    Image.new("RGB", (8, 8)).save(tmp_path / "deep.png", pnginfo=info)
    assert read_params(tmp_path / "deep.png") is None
    info = PngImagePlugin.PngInfo()
    info.add_text("painter", '{"seed": ' + "9" * 5000 + "}")
    Image.new("RGB", (8, 8)).save(tmp_path / "digits.png", pnginfo=info)
    assert read_params(tmp_path / "digits.png") is None
