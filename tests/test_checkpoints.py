import json
import os
import pickle
import re
import shutil
import time
from pathlib import Path

import pytest
import torch

from painter import Painter
from painter.checkpoints import EASYNLP_WEIGHTS, PAINTER_WEIGHTS, convert, load_checkpoint
from painter.errors import CheckpointError, ConfigError, ModelNotFoundError
from painter.hub import resolve
from painter.serving.cli import main


def copy_model(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "model"
    shutil.copytree(src, dst)
    return dst


def edit_state(model_dir: Path, edit) -> None:
    path = model_dir / EASYNLP_WEIGHTS
    state = torch.load(path, weights_only=True)
    edit(state)
    torch.save(state, path)


def edit_config(model_dir: Path, **changes) -> None:
    path = model_dir / "config.json"
    data = json.loads(path.read_text())
    for k, v in changes.items():
        if v is None:
            data.pop(k, None)
        else:
            data[k] = v
    path.write_text(json.dumps(data))


def test_easynlp_layout_has_the_references_keys(easynlp_dir):
    state = torch.load(easynlp_dir / EASYNLP_WEIGHTS, weights_only=True)
    assert all(k.startswith(("transformer.", "first_stage_model.")) for k in state)
    masks = [k for k in state if k.endswith("attn.mask")]
    assert len(masks) == 2 and state[masks[0]].shape == (1, 1, 48, 48)
    assert json.loads((easynlp_dir / "config.json").read_text())["model_type"] == "artist"


def test_missing_tensor_is_named(easynlp_dir, tmp_path):
    d = copy_model(easynlp_dir, tmp_path)
    edit_state(d, lambda s: s.pop("transformer.blocks.1.attn.query.weight"))
    with pytest.raises(CheckpointError, match=r"missing tensor.*transformer\.blocks\.1\.attn\.query\.weight"):
        load_checkpoint(d)


def test_unexpected_tensor_is_named(easynlp_dir, tmp_path):
    d = copy_model(easynlp_dir, tmp_path)
    edit_state(d, lambda s: s.update({"transformer.extra.weight": torch.zeros(3)}))
    with pytest.raises(CheckpointError, match=r"unexpected tensor.*transformer\.extra\.weight"):
        load_checkpoint(d)


def test_mask_of_a_block_that_does_not_exist_is_unexpected(easynlp_dir, tmp_path):
    d = copy_model(easynlp_dir, tmp_path)
    edit_state(d, lambda s: s.update({"transformer.blocks.7.attn.mask": torch.zeros(1, 1, 48, 48)}))
    with pytest.raises(CheckpointError, match=r"blocks\.7\.attn\.mask"):
        load_checkpoint(d)


def test_wrong_shape_names_key_and_both_shapes(easynlp_dir, tmp_path):
    d = copy_model(easynlp_dir, tmp_path)
    edit_state(d, lambda s: s.update({"first_stage_model.quant_conv.weight": torch.zeros(8, 8, 3, 3)}))
    with pytest.raises(CheckpointError, match=r"quant_conv\.weight has shape \[8, 8, 3, 3\] but the config needs "
                                              r"\[8, 8, 1, 1\]"):
        load_checkpoint(d)


def test_truncated_weights(easynlp_dir, tmp_path):
    d = copy_model(easynlp_dir, tmp_path)
    path = d / EASYNLP_WEIGHTS
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(d)


def test_truncated_safetensors(painter_dir, tmp_path):
    d = copy_model(painter_dir, tmp_path)
    path = d / PAINTER_WEIGHTS
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(d)


class Boom:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/painter-pwned",))


def test_pickle_that_runs_code_is_refused(easynlp_dir, tmp_path):
    d = copy_model(easynlp_dir, tmp_path)
    torch.save({"transformer.tok_emb.weight": Boom()}, d / EASYNLP_WEIGHTS, pickle_module=pickle)
    with pytest.raises(CheckpointError, match="could not be read"):
        load_checkpoint(d)
    assert not Path("/tmp/painter-pwned").exists()


@pytest.mark.parametrize("changes,match", [
    ({"model_type": None}, "no model_type"),
    ({"model_type": "bert"}, "not a pai-painter"),
    ({"n_head": 3}, "not divisible by n_head"),
    ({"block_size": 50}, "block_size 50"),
    ({"vocab_size": 21000}, "vocab_size"),
])
def test_bad_configs(easynlp_dir, tmp_path, changes, match):
    d = copy_model(easynlp_dir, tmp_path)
    edit_config(d, **changes)
    with pytest.raises(ConfigError, match=match):
        load_checkpoint(d)


def test_config_that_is_not_json(easynlp_dir, tmp_path):
    d = copy_model(easynlp_dir, tmp_path)
    (d / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_checkpoint(d)


def test_missing_files(easynlp_dir, tmp_path):
    d = copy_model(easynlp_dir, tmp_path)
    (d / "vocab.txt").unlink()
    with pytest.raises(CheckpointError, match="vocab.txt"):
        load_checkpoint(d)
    (d / EASYNLP_WEIGHTS).unlink()
    with pytest.raises(CheckpointError, match="holds no weights"):
        load_checkpoint(d)
    (d / "config.json").unlink()
    with pytest.raises(CheckpointError, match="holds no weights"):
        load_checkpoint(d)


def test_vocab_of_the_wrong_size(easynlp_dir, tmp_path):
    d = copy_model(easynlp_dir, tmp_path)
    lines = (d / "vocab.txt").read_text(encoding="utf-8").split("\n")
    (d / "vocab.txt").write_text("\n".join(lines[:20000]) + "\n", encoding="utf-8")
    with pytest.raises(CheckpointError, match="20000 wordpieces"):
        Painter.from_pretrained(d, device="cpu")


def test_unknown_name_and_missing_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("PAINTER_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ModelNotFoundError, match="Did you mean pai-painter-base-zh"):
        resolve("pai-painter-bse-zh")
    with pytest.raises(ModelNotFoundError, match=str(tmp_path / "cache" / "pai-painter-large-zh")):
        resolve("pai-painter-large-zh")
    with pytest.raises(ModelNotFoundError, match="no directory"):
        resolve(str(tmp_path / "nowhere"))
    (tmp_path / "cache" / "pai-painter-base-zh").mkdir(parents=True)
    assert resolve("alibaba-pai/pai-painter-base-zh") == tmp_path / "cache" / "pai-painter-base-zh"


def test_conversion_round_trip_is_bit_identical(easynlp_dir, tmp_path):
    ours = tmp_path / "ours"
    back = tmp_path / "back"
    assert main(["convert", str(easynlp_dir), str(ours)]) == 0
    assert (ours / PAINTER_WEIGHTS).is_file() and json.loads((ours / "config.json").read_text())["format"] == "painter"
    assert main(["convert", str(ours), str(back)]) == 0
    a = torch.load(easynlp_dir / EASYNLP_WEIGHTS, weights_only=True)
    b = torch.load(back / EASYNLP_WEIGHTS, weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((back / "config.json").read_text()) == json.loads((easynlp_dir / "config.json").read_text())
    images = [Painter.from_pretrained(d, device="cpu").generate(["红苹果", "宽松T恤"], seed=3, num_images=2)
              for d in (easynlp_dir, ours, back)]
    as_bytes = [[im.tobytes() for ims in run for im in ims] for run in images]
    assert as_bytes[0] == as_bytes[1] == as_bytes[2]


def test_convert_refuses_a_non_empty_destination(easynlp_dir, tmp_path):
    (tmp_path / "x.txt").write_text("keep me")
    with pytest.raises(CheckpointError, match="not empty"):
        convert(easynlp_dir, tmp_path)
    assert (tmp_path / "x.txt").read_text() == "keep me"


def test_standalone_vqgan_is_checked_strictly(tmp_path):
    from safetensors.torch import load_file, save_file

    from painter.checkpoints import VQGAN_WEIGHTS, load_vqgan, save_vqgan
    from conftest import tiny_model

    d = save_vqgan(tiny_model().first_stage_model, tmp_path / "vq")
    assert load_vqgan(d).config.n_embed == 128
    state = load_file(d / VQGAN_WEIGHTS)
    state["quant_conv.weight"] = torch.zeros(8, 8, 3, 3)
    save_file(state, str(d / VQGAN_WEIGHTS))
    with pytest.raises(CheckpointError, match=r"quant_conv\.weight has shape \[8, 8, 3, 3\] but the config needs"):
        load_vqgan(d)


RECOMMENDED = ["--sampling", "top_k=5", "--sampling", "temperature=0.5"]


def test_recommended_sampling_is_stored_read_back_and_used_where_none_is_given(easynlp_dir, tmp_path):
    ours, back = tmp_path / "ours", tmp_path / "back"
    assert main(["convert", str(easynlp_dir), str(ours), *RECOMMENDED]) == 0
    assert json.loads((ours / "config.json").read_text())["sampling"] == {"top_k": 5, "temperature": 0.5}
    assert main(["convert", str(ours), str(back)]) == 0  # the EasyNLP layout keeps them too
    assert json.loads((back / "config.json").read_text())["sampling"] == {"top_k": 5, "temperature": 0.5}

    plain, recommending = (Painter.from_pretrained(d, device="cpu", precision="fp32") for d in (easynlp_dir, back))
    assert plain.sampling().top_k == 100 and plain.sampling().temperature == 1.0
    assert recommending.sampling() == plain.sampling(top_k=5, temperature=0.5)
    assert recommending.sampling(temperature=2.0).temperature == 2.0  # a given setting wins

    def pixels(painter, **kw):
        images = painter.generate(["红苹果", "宽松T恤"], seed=3, num_images=2, **kw)
        return [im.tobytes() for ims in images for im in ims]

    defaults = recommending.generate("红苹果", seed=3)[0][0]
    assert defaults.info["top_k"] == 5 and defaults.info["temperature"] == 0.5
    assert pixels(recommending) == pixels(plain, top_k=5, temperature=0.5)
    assert pixels(recommending) != pixels(plain)
    assert pixels(recommending, temperature=1.0) == pixels(plain, top_k=5)
    frames = list(recommending.stream("红苹果", seed=3, preview_every=0))
    assert frames[-1].image.tobytes() == plain.generate("红苹果", seed=3, top_k=5, temperature=0.5)[0][0].tobytes()


@pytest.mark.parametrize("sampling,match", [
    ({"temprature": 0.5}, "unknown sampling setting 'temprature'"),
    ({"top_k": 500}, "codebook size 128"),
    ("hot", "JSON object"),
])
def test_bad_recommended_sampling_names_the_file(easynlp_dir, tmp_path, sampling, match):
    d = copy_model(easynlp_dir, tmp_path)
    edit_config(d, sampling=sampling)
    with pytest.raises(ConfigError, match=match) as error:
        load_checkpoint(d)
    assert str(d / "config.json") in str(error.value)


def test_convert_refuses_a_bad_recommended_setting(easynlp_dir, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["convert", str(easynlp_dir), str(tmp_path / "a"), "--sampling", "temperature"])
    assert "KEY=NUMBER" in capsys.readouterr().err
    assert main(["convert", str(easynlp_dir), str(tmp_path / "b"), "--sampling", "temperature=-1"]) == 1
    assert not (tmp_path / "b" / "config.json").exists()


def _mutated(painter_dir, tmp_path, change) -> Path:
    import json
    import shutil

    model = Path(shutil.copytree(painter_dir, tmp_path / "model"))
    config = json.loads((model / "config.json").read_text())
    change(config)
    (model / "config.json").write_text(json.dumps(config))
    return model


def _set(path, value):
    def change(config):
        node = config
        *parents, leaf = path.split(".")
        for key in parents:
            node = node[key]
        node[leaf] = value
    return change


@pytest.mark.parametrize("path,value,message", [
    ("gpt.n_layer", 10 ** 9, "n_layer must be between 1 and 256"),
    ("vqgan.num_res_blocks", 10 ** 8, "vqgan.num_res_blocks must be between"),
    ("gpt.n_embd", 4e11, "n_embd must be a whole number"),
    ("gpt.n_head", 0, "n_head must be between"),
    ("vqgan.norm_groups", 0, "norm_groups must be between"),
    ("text_len", "abc", "text_len must be a whole number"),
    ("caption_dropout", "x", "caption_dropout must be a number"),
    ("gpt.n_layer", 2.5, "n_layer must be a whole number"),
    ("gpt.n_layer", "2", "n_layer must be a whole number"),
    ("vqgan.ch", -32, "vqgan.ch must be between"),
    ("vqgan.resolution", -64, "vqgan.resolution must be between"),
    ("vqgan.ch_mult", [1, "x"], "vqgan.ch_mult must be a whole number"),
    ("vqgan_path", ".", "is not a VQGAN folder"),
])
def test_absurd_or_mistyped_config_fields_fail_at_once_naming_the_field(painter_dir, tmp_path, path, value, message):
    model = _mutated(painter_dir, tmp_path, _set(path, value))
    started = time.time()
    with pytest.raises((ConfigError, CheckpointError), match=re.escape(message)):
        load_checkpoint(model)
    assert time.time() - started < 1.0


def test_deeply_nested_json_is_a_config_error(painter_dir, tmp_path):
    import shutil

    model = Path(shutil.copytree(painter_dir, tmp_path / "model"))
    (model / "config.json").write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(ConfigError, match="nests JSON too deeply|not valid JSON"):
        load_checkpoint(model)


@pytest.mark.parametrize("content,message", [(b"", "is empty"), (b"\xff\xfe\x00binary", "not UTF-8"),
                                             ("猫\n狗\n".encode(), "not a BERT vocabulary")])
def test_a_bad_vocabulary_gets_a_clear_message(painter_dir, tmp_path, content, message):
    import shutil

    from painter.text import TextTokenizer

    model = Path(shutil.copytree(painter_dir, tmp_path / "model"))
    (model / "vocab.txt").write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        TextTokenizer(model / "vocab.txt")


def test_a_model_folder_that_is_a_symlink_loop_is_reported(tmp_path, caplog):
    from painter.serving.cli import EXIT_ERROR, main

    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    out = tmp_path / "out.tsv"
    (tmp_path / "in.tsv").write_text("1\t红苹果\n", encoding="utf-8")
    assert main(["-q", "predict", "--model", str(loop), "--input", str(tmp_path / "in.tsv"), "--output",
                 str(out)]) == EXIT_ERROR
    assert "Traceback" not in caplog.text and str(loop) in caplog.text


def test_a_vqgan_alone_converts_to_fp16_and_refuses_model_options(tmp_path):
    from safetensors.torch import load_file

    from painter.checkpoints import load_vqgan, save_vqgan
    from conftest import tiny_model

    vqgan = tiny_model().first_stage_model
    src = save_vqgan(vqgan, tmp_path / "vqgan")
    dst = convert(src, tmp_path / "half", dtype=torch.float16)
    stored = load_file(dst / "vqgan.safetensors")
    assert {t.dtype for t in stored.values()} == {torch.float16}
    assert (dst / "vqgan.safetensors").stat().st_size < 0.6 * (src / "vqgan.safetensors").stat().st_size
    again = load_vqgan(dst)
    assert again.config == vqgan.config
    for k, v in vqgan.state_dict().items():
        assert torch.allclose(again.state_dict()[k], v.half().float())
    with pytest.raises(CheckpointError, match="a VQGAN alone"):
        convert(src, tmp_path / "other", to="easynlp")


def test_domain_words_are_stored_in_both_layouts_and_checked(easynlp_dir, tmp_path):
    """The words a model learnt for a domain travel with it (painter convert --domain-word), so the studio wraps
    prompts in a preset's fallback template only for a model that knows them."""
    ours, back = tmp_path / "ours", tmp_path / "back"
    assert main(["convert", str(easynlp_dir), str(ours), "--to", "painter", "--domain-word", "水墨画",
                 "--domain-word", "风景", "--domain-word", "水墨画"]) == 0
    assert json.loads((ours / "config.json").read_text())["domain_words"] == ["水墨画", "风景"]
    assert main(["convert", str(ours), str(back)]) == 0  # EasyNLP ignores keys it does not know
    assert load_checkpoint(back).config.domain_words == ("水墨画", "风景")
    assert load_checkpoint(easynlp_dir).config.domain_words == ()
    for bad in ("水墨画", ["x" * 40], [3], [""]):
        d = copy_model(easynlp_dir, tmp_path / f"bad{len(list(tmp_path.iterdir()))}")
        edit_config(d, domain_words=bad)
        with pytest.raises(ConfigError, match="domain_words") as error:
            load_checkpoint(d)
        assert str(d / "config.json") in str(error.value)


def test_learnt_wordpieces_travel_with_a_model_and_leave_out_the_others(easynlp_dir, tmp_path):
    """painter convert --learnt-from TSV stores the wordpieces of the captions a model learnt from; the model then
    paints 请画一只猫 as 画一只猫 (请 never trained), in both layouts, with the pairs of wordpieces side by side in
    them (word order); a bad list is one clear error."""
    from painter import Painter
    from painter.text import TextTokenizer
    from conftest import VOCAB

    tsv = tmp_path / "train.tsv"
    tsv.write_text("a/0\t画一只猫\tAAAA\nb/0\t红苹果\tAAAA\nc/0\t\tAAAA\n", encoding="utf-8")  # pictures unread
    ours, back = tmp_path / "ours", tmp_path / "back"
    assert main(["convert", str(easynlp_dir), str(ours), "--to", "painter", "--learnt-from", str(tsv)]) == 0
    learnt = json.loads((ours / "config.json").read_text())["learnt_text"]
    assert learnt == TextTokenizer(VOCAB).learnt_ids(["画一只猫", "红苹果"]) and len(learnt) == 7
    pairs = json.loads((ours / "config.json").read_text())["learnt_pairs"]
    assert pairs == [list(p) for p in TextTokenizer(VOCAB).learnt_pairs(["画一只猫", "红苹果"])] and len(pairs) == 5
    assert main(["convert", str(ours), str(back)]) == 0
    assert list(load_checkpoint(back).config.learnt_text) == learnt
    assert [list(p) for p in load_checkpoint(back).config.learnt_pairs] == pairs
    assert load_checkpoint(easynlp_dir).config.learnt_text == ()
    painter = Painter.from_pretrained(ours, device="cpu", precision="fp32")
    asked = painter.tokenize("请画一只猫")
    assert asked.ids == painter.tokenize("画一只猫").ids and asked.ignored == ("请",)
    assert [painter.generate(p, seed=3)[0][0].info["codes"] for p in ("请画一只猫", "画一只猫")].count(
        painter.generate("画一只猫", seed=3)[0][0].info["codes"]) == 2
    exact = Painter.from_pretrained(easynlp_dir, device="cpu", precision="fp32")  # no list: every wordpiece read
    assert exact.tokenize("请画一只猫").ids != exact.tokenize("画一只猫").ids
    empty = tmp_path / "empty.tsv"
    empty.write_text("a/0\t \tAAAA\n", encoding="utf-8")
    assert main(["convert", str(easynlp_dir), str(tmp_path / "none"), "--learnt-from", str(empty)]) == 1
    assert not (tmp_path / "none").exists()
    for bad in ([-1], [10 ** 6], ["画"], "12", [True]):
        d = copy_model(easynlp_dir, tmp_path / f"bad{len(list(tmp_path.iterdir()))}")
        edit_config(d, learnt_text=bad)
        with pytest.raises(ConfigError, match="learnt_text"):
            load_checkpoint(d)
    for bad in ([[1]], [[1, 2, 3]], [[-1, 2]], [[1, 10 ** 6]], [["画", 1]], [[True, 1]], "12", [12]):
        d = copy_model(easynlp_dir, tmp_path / f"bad{len(list(tmp_path.iterdir()))}")
        edit_config(d, learnt_pairs=bad)
        with pytest.raises(ConfigError, match="learnt_pairs"):
            load_checkpoint(d)


def test_hostile_model_folders_are_refused_with_one_clear_line(painter_dir, easynlp_dir, tmp_path):
    """A thousands-digit integer, a number written as text, 10^7 residual blocks in a standalone VQGAN, NaN
    weights, weights that link to a device: each a ConfigError or CheckpointError naming what is wrong, at once."""
    import math
    import os
    import time

    from safetensors.torch import load_file, save_file

    from painter.checkpoints import build_model, load_vqgan
    from painter.errors import CheckpointError

    digits = copy_model(painter_dir, tmp_path / "digits")
    text = (digits / "config.json").read_text()
    (digits / "config.json").write_text(text.replace('"n_layer": 2', '"n_layer": ' + "9" * 5000, 1))
    with pytest.raises(ConfigError, match="holds a value no model config has"):
        load_checkpoint(digits)
    words = copy_model(easynlp_dir, tmp_path / "words")
    edit_config(words, text_vocab_size="21128")
    with pytest.raises(ConfigError, match="text_vocab_size must be a whole number"):
        load_checkpoint(words)
    vqgan = tmp_path / "vqgan"
    vqgan.mkdir()
    (vqgan / "config.json").write_text(json.dumps({"vqgan": {"num_res_blocks": 10**7}}))
    save_file({"x": torch.zeros(1)}, str(vqgan / "vqgan.safetensors"))
    start = time.monotonic()
    with pytest.raises(ConfigError, match="num_res_blocks must be between 0 and 64"):
        load_vqgan(vqgan)
    assert time.monotonic() - start < 5
    nan = copy_model(painter_dir, tmp_path / "nan")
    state = load_file(str(nan / "model.safetensors"))
    key = next(k for k in state if k.endswith("attn.key.weight"))
    state[key][0, 0] = math.nan
    save_file(state, str(nan / "model.safetensors"))
    with pytest.raises(CheckpointError, match=f"{key} holds NaN"):
        build_model(load_checkpoint(nan))
    linked = copy_model(painter_dir, tmp_path / "linked")
    os.remove(linked / "model.safetensors")
    os.symlink("/dev/zero", linked / "model.safetensors")
    with pytest.raises(CheckpointError, match="not a regular file"):
        load_checkpoint(linked)
