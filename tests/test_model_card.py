"""The bundled models' cards list every training stage a GPT went through (recipes/model_card.py)."""

import json
import re
import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT / "recipes"))
import model_card  # noqa: E402


def run_dir(path, model, steps, speed):
    path.mkdir(parents=True)
    (path / "run.json").write_text(json.dumps({"model": model}))
    (path / "log.jsonl").write_text("".join(json.dumps({"step": s, "tokens_per_s": speed, "seconds": s * 0.5}) + "\n"
                                            for s in range(1, steps + 1)))
    (path / "model").mkdir()


def test_stages_follow_each_run_back_to_the_plain_code_run(tmp_path, monkeypatch):
    plain = tmp_path / "plain" / "bundled-large"
    run_dir(plain, None, 8, 100.0)
    run_dir(tmp_path / "white", str(tmp_path / "init-large"), 4, 200.0)  # warm-started from a copied export
    run_dir(tmp_path / "more", str(tmp_path / "white" / "model"), 2, 300.0)
    monkeypatch.setenv("INIT", str(tmp_path / "plain"))
    stages = model_card.stage_runs(tmp_path / "more", "bundled-large")
    assert [path for path, _ in stages] == [plain, tmp_path / "white", tmp_path / "more"]
    assert "plain codes" in stages[0][1] and all("continuing from the row above" in what for _, what in stages[1:])
    assert [model_card.median_speed(path) for path, _ in stages] == [100.0, 200.0, 300.0]

    monkeypatch.delenv("INIT")  # a GPT trained from scratch in one run: one stage, named by its size
    run_dir(tmp_path / "scratch", None, 3, 50.0)
    assert model_card.stage_runs(tmp_path / "scratch", "bundled-base") == [
        (tmp_path / "scratch", "`painter train --size bundled-base`")]


def test_the_caption_use_row_appears_only_where_the_evaluation_measured_it():
    row = model_card.caption_row({"caption_loss_own": 0.2612, "caption_loss_other": 1.0498, "caption_rows": 256})
    assert "256 rows" in row and "| 0.261 / 1.050 |" in row and row.endswith("\n")
    assert model_card.caption_row({"valid_loss": 7.1}) == ""


def test_the_card_says_when_the_shipped_settings_are_not_the_sweeps_choice(tmp_path):
    sweep, model = tmp_path / "sweep.json", tmp_path / "model"
    model.mkdir()
    sweep.write_text(json.dumps({"chosen": {"top_k": 10, "temperature": 0.7, "guidance_scale": 1.0}}))
    (model / "config.json").write_text(json.dumps({"sampling": {"top_k": 10, "temperature": 0.7, "guidance_scale": 1.0}}))
    assert model_card.override_text(sweep, model) == ""  # shipped as chosen
    (model / "config.json").write_text(json.dumps({"sampling": {"top_k": 20, "temperature": 0.8, "guidance_scale": 1.0}}))
    assert "chose top-k 10, temperature 0.7, guidance 1.0" in model_card.override_text(sweep, model)
    assert model_card.override_text(tmp_path / "no-sweep.json", model) == ""


def test_training_rows_tell_which_version_of_the_data_a_stage_read(tmp_path):
    """Stages of one GPT may have read 4 captions a picture or 5: the card shows each stage's rows, from its log."""
    for name, rows, epochs in (("four", 13_080, 5), ("five", 16_260, 3)):
        path = tmp_path / name
        path.mkdir()
        steps = -(-rows // 16) * epochs  # an epoch's last batch is partial
        (path / "run.json").write_text(json.dumps({"loop": {"batch_size": 16}}))
        (path / "log.jsonl").write_text(json.dumps({"step": steps, "epoch": float(epochs)}) + "\n")
        assert abs(model_card.training_rows(path) - rows) <= 16


def test_the_card_says_when_a_model_leaves_out_unlearnt_wordpieces():
    assert "1,548 wordpieces" in model_card.learnt_sentence({"learnt_text": list(range(1548))})
    assert "pairs" not in model_card.learnt_sentence({"learnt_text": list(range(1548))})
    assert "7,292 pairs" in model_card.learnt_sentence({"learnt_text": [1], "learnt_pairs": [[1, 2]] * 7292})
    assert model_card.learnt_sentence({}) == model_card.learnt_sentence({"learnt_text": []}) == ""


def test_a_gpt_made_from_anothers_blocks_lists_that_gpts_stages_first(tmp_path, monkeypatch):
    """bundled-base from three of bundled-large's blocks: its card's stages are large's, then its own."""
    plain = tmp_path / "plain" / "bundled-large"
    run_dir(plain, None, 8, 100.0)
    run_dir(tmp_path / "runs" / "bundled-large", str(tmp_path / "init-large"), 4, 200.0)
    run_dir(tmp_path / "runs" / "bundled-base-more", str(tmp_path / "runs" / "bundled-large" / "model"), 2, 300.0)
    info = json.loads((tmp_path / "runs" / "bundled-base-more" / "run.json").read_text())
    (tmp_path / "runs" / "bundled-base-more" / "run.json").write_text(
        json.dumps({**info, "keep_layers": [0, 1, 3], "reword": 0.5}))
    monkeypatch.setenv("INIT", str(tmp_path / "plain"))
    stages = model_card.stage_runs(tmp_path / "runs" / "bundled-base-more", "bundled-base")
    assert [path for path, _ in stages] == [plain, tmp_path / "runs" / "bundled-large",
                                            tmp_path / "runs" / "bundled-base-more"]
    assert "--size bundled-large" in stages[0][1]
    assert "keeping blocks 0, 1, 3" in stages[2][1] and "reworded with probability 0.5" in stages[2][1]
    assert "keeping" not in stages[1][1] and "reworded" not in stages[1][1]


def test_a_reshipped_card_keeps_its_training_sections_and_shows_the_new_settings_and_numbers(tmp_path):
    """New settings on a machine without the training runs: `python recipes/model_card.py` rewrites the limits
    line, the sampling and the metrics of the shipped card and keeps the rest."""
    import shutil

    shipped = ROOT / "assets" / "models" / "bundled-large"
    models, runs = tmp_path / "models", tmp_path / "runs"
    runs.mkdir()
    shutil.copytree(shipped, models / "bundled-large", ignore=shutil.ignore_patterns("*.safetensors"))
    config_file = models / "bundled-large" / "config.json"
    config = json.loads(config_file.read_text())
    config["sampling"] = {"top_k": 5, "top_p": 1.0, "temperature": 0.5, "guidance_scale": 1.0, "detail_from": 128,
                          "detail_top_k": 50, "detail_temperature": 1.0}
    config_file.write_text(json.dumps(config))
    (runs / "bundled-large-eval.json").write_text(json.dumps({
        **config["sampling"], "precision": "int8", "captions": 100, "seeds": 4, "valid_loss": 7.5,
        "vqgan_psnr": 25.1, "r_at_1_train": 0.86, "r_at_1_train_per_seed": [0.86, 0.8, 0.81, 0.83],
        "r_at_1_train_variety": 0.81, "r_at_1_heldout": 0.41, "r_at_1_paraphrase": 0.9}))
    model_card.main("bundled-large", runs, models)

    before, after = (path.read_text(encoding="utf-8") for path in (shipped / "README.md", models / "bundled-large" / "README.md"))
    kept = before.split("## Sampling")[0]
    assert re.sub(r"\*\*Limits\.\*\* .*", "", kept) == re.sub(r"\*\*Limits\.\*\* .*", "", after.split("## Sampling")[0])
    assert "for 86% of its training captions, 41% of unseen (subject, style) pairs and 90%" in after
    assert "| R@1, training captions | 0.860 | 0.860 / 0.800 / 0.810 / 0.830 | 0.81 |" in after
    assert "top-k 5, temperature 0.5, guidance 1.0, from image code 128 top-k 50, temperature 1.0" in after
    assert "detail-from 128" in after and "0.760" not in after
