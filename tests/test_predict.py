import json
import base64
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from painter.serving.cli import EXIT_ERROR, EXIT_REJECTED, main
from conftest import ROOT

GOOD = ["红苹果", "宽松T恤", "一只俏皮的狗正跑过草地", "一片水域的景色以日落为背景"]


def write_input(path: Path, n_good: int = 4, bad: bool = True) -> Path:
    lines = [f"{i}\t{GOOD[i % 4]}{i}\n".encode() for i in range(n_good)]
    if bad:
        lines[2:2] = [b"b1\n", b"b2\t\n", "b3\t😀😀\n".encode(), b"b4\t\xff\xfe\n", "b5\t狗\ta\tb\n".encode(), b"\n"]
    path.write_bytes(b"".join(lines))
    return path


def predict(model, inp, out, *extra) -> int:
    return main(["-q", "predict", "--model", str(model), "--input", str(inp), "--output", str(out), *extra])


def test_predict_end_to_end_with_rejected_rows(easynlp_dir, tmp_path):
    inp, out = write_input(tmp_path / "in.tsv"), tmp_path / "out.tsv"
    assert predict(easynlp_dir, inp, out, "--num-images", "2") == EXIT_REJECTED
    rows = [line.split("\t") for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r[0] for r in rows] == ["0", "0", "1", "1", "2", "2", "3", "3"]
    assert rows[0][1] == "红苹果0" and rows[7][1] == "一片水域的景色以日落为背景3"
    image = Image.open(io.BytesIO(base64.b64decode(rows[0][2], validate=True)))
    assert image.format == "PNG" and image.size == (16, 16) and image.mode == "RGB"
    assert rows[0][2] != rows[1][2]  # image 1 uses seed + 1
    rejected = [line.split("\t") for line in (tmp_path / "out.tsv.rejected").read_text(encoding="utf-8").splitlines()]
    assert [(r[0], r[1].split(" ")[0]) for r in rejected] == [
        ("3", "expected"), ("4", "empty"), ("5", "none"), ("6", "not"), ("7", "the")]
    assert "UTF-8" in rejected[3][1] and "is not x0,y0,x1,y1" in rejected[4][1]  # four columns: a repaint row


def test_training_tsv_is_accepted_and_clean_run_exits_zero(easynlp_dir, tmp_path):
    inp, out = tmp_path / "train.tsv", tmp_path / "out.tsv"
    inp.write_text("a\t红苹果\tiVBORw0KGgo=\nb\t宽松T恤\tiVBORw0KGgo=\n", encoding="utf-8")
    (tmp_path / "out.tsv.rejected").write_text("stale")
    assert predict(easynlp_dir, inp, out) == 0
    assert len(out.read_text().splitlines()) == 2
    assert not (tmp_path / "out.tsv.rejected").exists()


def test_resume_repairs_a_torn_line_and_gives_the_same_file(easynlp_dir, tmp_path):
    inp = write_input(tmp_path / "in.tsv", n_good=6)
    full, resumed = tmp_path / "full.tsv", tmp_path / "resumed.tsv"
    predict(easynlp_dir, inp, full, "--num-images", "2", "--batch-size", "3")
    data = full.read_bytes()
    lines = data.splitlines(keepends=True)
    resumed.write_bytes(b"".join(lines[:5]) + lines[5][:37])  # 2.5 prompts done, last line torn
    assert predict(easynlp_dir, inp, resumed, "--num-images", "2", "--batch-size", "4") == EXIT_REJECTED
    assert resumed.read_bytes() == data
    # a finished job re-run changes nothing
    assert predict(easynlp_dir, inp, resumed, "--num-images", "2") == EXIT_REJECTED
    assert resumed.read_bytes() == data


def test_resume_after_a_real_kill(easynlp_dir, tmp_path):
    inp = tmp_path / "in.tsv"
    inp.write_text("".join(f"{i}\t{GOOD[i % 4]}\n" for i in range(300)), encoding="utf-8")
    killed, full = tmp_path / "killed.tsv", tmp_path / "full.tsv"
    cmd = [sys.executable, "-m", "painter", "-q", "predict", "--model", str(easynlp_dir), "--input", str(inp),
           "--output", str(killed), "--batch-size", "1"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.time() + 120
    while time.time() < deadline and (not killed.exists() or killed.read_bytes().count(b"\n") < 2):
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = killed.read_bytes().count(b"\n")
    assert 2 <= partial < 300
    # the same command (the int4 mode's kernels depend on a step's rows, so the same --batch-size)
    assert predict(easynlp_dir, inp, killed, "--batch-size", "1") == 0
    assert predict(easynlp_dir, inp, full, "--batch-size", "1") == 0
    assert killed.read_bytes() == full.read_bytes()


def test_random_seed_is_picked_and_reported(easynlp_dir, tmp_path, caplog):
    inp, out = write_input(tmp_path / "in.tsv", n_good=1, bad=False), tmp_path / "out.tsv"
    assert predict(easynlp_dir, inp, out, "--seed", "-1") == 0
    seed = int(caplog.text.split("picked seed ")[1].split(";")[0])
    again = tmp_path / "again.tsv"
    assert predict(easynlp_dir, inp, again, "--seed", str(seed)) == 0
    assert again.read_bytes() == out.read_bytes()


def test_output_of_another_job_is_not_touched(easynlp_dir, tmp_path, caplog):
    inp, out = write_input(tmp_path / "in.tsv", bad=False), tmp_path / "out.tsv"
    out.write_text("x\tsomething else\tAAAA\n", encoding="utf-8")
    assert predict(easynlp_dir, inp, out) == EXIT_ERROR
    assert "not this job's row" in caplog.text
    assert out.read_text(encoding="utf-8") == "x\tsomething else\tAAAA\n"


@pytest.mark.parametrize("content", [b"notes\nlast line", b"hello", b"0\t\xe7\xba\xa2\xe8\x8b\xb9\xe6\x9e\x9c0\tnot an image\n",
                                     b"0\t\xe7\xba\xa2\xe8\x8b\xb9\xe6\x9e\x9c0\tiVBORw0KGgo\n1\tsomething"])
def test_a_file_that_is_not_this_jobs_output_is_left_byte_for_byte(easynlp_dir, tmp_path, caplog, content):
    """Nothing is repaired or appended unless every line is proven to be this job's."""
    inp, out = write_input(tmp_path / "in.tsv", bad=True), tmp_path / "notes.txt"
    out.write_bytes(content)
    assert predict(easynlp_dir, inp, out) == EXIT_ERROR
    assert "not this job's" in caplog.text or "not a row of this job" in caplog.text
    assert out.read_bytes() == content
    assert not (tmp_path / "notes.txt.rejected").exists()


def test_the_input_is_never_the_output(easynlp_dir, tmp_path, caplog):
    inp = write_input(tmp_path / "same.tsv", bad=False)
    before = inp.read_bytes()
    assert predict(easynlp_dir, inp, inp) == EXIT_ERROR
    assert "is the input file" in caplog.text and inp.read_bytes() == before


def test_a_second_run_on_the_same_output_stops_at_once(easynlp_dir, tmp_path, caplog):
    import fcntl

    inp, out = write_input(tmp_path / "in.tsv", bad=False), tmp_path / "out.tsv"
    with open(out, "a") as held:  # another run is writing it
        fcntl.flock(held, fcntl.LOCK_EX)
        started = time.time()
        assert predict(easynlp_dir, inp, out) == EXIT_ERROR
        assert time.time() - started < 30
    assert "another painter predict is writing" in caplog.text and out.read_bytes() == b""
    assert predict(easynlp_dir, inp, out) == 0 and out.read_bytes().count(b"\n") == 4


def test_a_byte_order_mark_is_not_part_of_the_first_idx(easynlp_dir, tmp_path):
    inp, out = tmp_path / "in.tsv", tmp_path / "out.tsv"
    inp.write_bytes(b"\xef\xbb\xbf" + "a1\t红苹果\n".encode())
    assert predict(easynlp_dir, inp, out) == 0
    assert out.read_text(encoding="utf-8").startswith("a1\t红苹果\tiVBOR")


def test_rejects_that_cannot_be_written_give_a_clear_error(easynlp_dir, tmp_path, caplog, monkeypatch):
    import errno

    import painter.serving.predict as predict_module

    def read_only(path):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(predict_module, "atomic_output", read_only)
    inp, out = write_input(tmp_path / "in.tsv", bad=True), tmp_path / "out.tsv"
    assert predict(easynlp_dir, inp, out) == EXIT_ERROR
    assert "cannot write the list of rejected rows" in caplog.text and "Read-only file system" in caplog.text
    assert "Traceback" not in caplog.text


@pytest.mark.parametrize("args,message", [
    (["--num-images", "0"], "number of images"),
    (["--top-k", "0"], "top_k"),
    (["--top-k", "129"], "codebook size 128"),
    (["--temperature", "0"], "temperature"),
    (["--temperature", "-2"], "temperature"),
    (["--batch-size", "0"], "batch-size"),
    (["--precision", "fp8"], "unknown precision"),
    (["--device", "cuda"] if not __import__("torch").cuda.is_available() else ["--device", "tpu"], "device"),
])
def test_bad_options_are_refused_before_anything_is_written(easynlp_dir, tmp_path, caplog, args, message):
    inp, out = write_input(tmp_path / "in.tsv", bad=False), tmp_path / "out.tsv"
    assert predict(easynlp_dir, inp, out, *args) == EXIT_ERROR
    assert message in caplog.text
    assert not out.exists() or out.stat().st_size == 0


def test_unwritable_output_missing_input_and_unknown_model(easynlp_dir, tmp_path, caplog):
    inp = write_input(tmp_path / "in.tsv", bad=False)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert predict(easynlp_dir, inp, blocker / "out.tsv") == EXIT_ERROR
    assert "cannot write output" in caplog.text
    assert predict(easynlp_dir, tmp_path / "missing.tsv", tmp_path / "out.tsv") == EXIT_ERROR
    assert "cannot read input" in caplog.text
    assert predict("no-such-model", inp, tmp_path / "out.tsv") == EXIT_ERROR
    assert "unknown model 'no-such-model'" in caplog.text


def test_cli_runs_as_a_module():
    proc = subprocess.run([sys.executable, "-m", "painter", "--version"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("painter ")


def test_a_models_recommended_sampling_is_predicts_default(easynlp_dir, tmp_path):
    from painter.checkpoints import convert

    model = convert(easynlp_dir, tmp_path / "model", sampling={"top_k": 5, "temperature": 0.5})
    inp = write_input(tmp_path / "in.tsv", bad=False)
    runs = {"defaults": (model,), "explicit": (easynlp_dir, "--top-k", "5", "--temperature", "0.5"),
            "reference": (easynlp_dir,)}
    for name, (m, *flags) in runs.items():
        assert predict(m, inp, tmp_path / f"{name}.tsv", *flags) == 0
    images = {name: [line.split("\t")[2] for line in (tmp_path / f"{name}.tsv").read_text().splitlines()]
              for name in runs}
    assert images["defaults"] == images["explicit"] != images["reference"]


def torchrun(model, inp, out, *extra) -> subprocess.Popen:
    """``torchrun --standalone --nproc_per_node 2 -m painter predict ...``: two CPU processes over gloo."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "painter",
           "-q", "predict", "--model", str(model), "--input", str(inp), "--output", str(out), *extra]
    return subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finished(proc: subprocess.Popen) -> int:
    output, _ = proc.communicate(timeout=300)
    print(output[-3000:])
    return proc.returncode


def test_torchrun_writes_the_bytes_one_process_writes(easynlp_dir, tmp_path):
    inp = write_input(tmp_path / "in.tsv", n_good=7)  # 14 image rows: blocks of 7 with rejected rows between
    single, sharded = tmp_path / "single.tsv", tmp_path / "sharded.tsv"
    # each rank's blocks are whole batches of the single run's, and each process has one thread, as torchrun's
    # workers do: so even int8 paints the same bytes
    args = ("--num-images", "2", "--precision", "int8", "--batch-size", "3")
    proc = subprocess.run([sys.executable, "-m", "painter", "-q", "predict", "--model", str(easynlp_dir), "--input",
                           str(inp), "--output", str(single), *args], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert proc.returncode == EXIT_REJECTED
    assert finished(torchrun(easynlp_dir, inp, sharded, *args)) == 0
    assert sharded.read_bytes() == single.read_bytes() and single.read_bytes().count(b"\n") == 14
    assert not list(tmp_path.glob("sharded.tsv.part*"))  # merged and removed
    assert Path(f"{sharded}.rejected").read_bytes() == Path(f"{single}.rejected").read_bytes()


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            found += [int(child), *children(int(child))]
    return found


def test_torchrun_resumes_after_a_rank_dies(easynlp_dir, tmp_path):
    inp = tmp_path / "in.tsv"
    inp.write_text("".join(f"{i}\t{GOOD[i % 4]}\n" for i in range(200)), encoding="utf-8")
    out, full = tmp_path / "out.tsv", tmp_path / "full.tsv"
    proc = torchrun(easynlp_dir, inp, out, "--batch-size", "1", "--precision", "fp32")
    part = tmp_path / "out.tsv.part1of2-b1"
    deadline = time.time() + 120
    while time.time() < deadline and (not part.exists() or part.read_bytes().count(b"\n") < 2):
        time.sleep(0.01)
    rank1 = [pid for pid in children(proc.pid)
             if b"RANK=1\0" in Path(f"/proc/{pid}/environ").read_bytes().replace(b"LOCAL_RANK", b"")]
    assert rank1, "rank 1 not found"
    os.kill(rank1[0], signal.SIGKILL)
    assert finished(proc) != 0
    assert 2 <= part.read_bytes().count(b"\n") < 100 and out.read_bytes() == b""  # nothing merged yet
    assert finished(torchrun(easynlp_dir, inp, out, "--batch-size", "4", "--precision", "fp32")) != 0
    assert out.read_bytes() == b"" and part.exists()  # another batch size cuts other blocks: refused, kept
    assert finished(torchrun(easynlp_dir, inp, out, "--batch-size", "1", "--precision", "fp32")) == 0
    assert predict(easynlp_dir, inp, full, "--precision", "fp32") == 0
    assert out.read_bytes() == full.read_bytes() and not list(tmp_path.glob("out.tsv.part*"))


def test_parts_of_another_process_count_are_not_mixed_in(easynlp_dir, tmp_path):
    inp = write_input(tmp_path / "in.tsv", n_good=2, bad=False)
    out = tmp_path / "out.tsv"
    (tmp_path / "out.tsv.part0of3-b8").write_text("")
    assert finished(torchrun(easynlp_dir, inp, out, "--precision", "fp32")) != 0
    assert not out.exists() and (tmp_path / "out.tsv.part0of3-b8").exists()


@pytest.mark.parametrize("rows,unit,world", [(14, 3, 2), (7, 8, 2), (100, 8, 3), (5, 1, 4), (0, 8, 2)])
def test_shard_blocks_cover_every_row_once_in_whole_batches(rows, unit, world):
    from painter.serving.shards import Shard

    blocks = [Shard(rank, world).block(rows, unit) for rank in range(world)]
    assert [r for b in blocks for r in b] == list(range(rows))
    assert all(b.start % unit == 0 for b in blocks if len(b))
    sizes = [len(b) for b in blocks]
    assert max(sizes) - min(sizes) <= unit


ODD_BREAKS = ("\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029")  # line breaks to str.splitlines only


def test_prompts_holding_odd_line_breaks_resume_and_merge_to_the_same_bytes(easynlp_dir, tmp_path):
    """One line-counting rule (bytes and \\n) in predict, resume, parts and merge: a prompt may hold a form
    feed or U+2028, which are text inside a field, not the end of a row."""
    from painter.data.tsv import PromptRow
    from painter.serving.predict import _merge
    from painter.serving.shards import Shard

    inp, full = tmp_path / "in.tsv", tmp_path / "full.tsv"
    texts = [f"红苹果{c}和{c}狐狸" for c in ODD_BREAKS] + ["雪山"]
    inp.write_text("".join(f"{i}\t{t}\n" for i, t in enumerate(texts)), encoding="utf-8")
    assert predict(easynlp_dir, inp, full, "--batch-size", "3") == 0
    data = full.read_bytes()
    lines = data.split(b"\n")[:-1]
    assert len(lines) == len(texts) and [line.split(b"\t")[1].decode() for line in lines] == texts

    resumed = tmp_path / "resumed.tsv"  # 3 rows done, the 4th torn inside its prompt's odd break
    resumed.write_bytes(b"\n".join(lines[:3]) + b"\n" + lines[3][:len(b"3\t") + 10])
    assert predict(easynlp_dir, inp, resumed, "--batch-size", "3") == 0
    assert resumed.read_bytes() == data

    todo = [(PromptRow(n + 1, str(n), t), None, 0) for n, t in enumerate(texts)]
    out = tmp_path / "out.tsv"
    for rank in range(2):  # the parts two ranks wrote, and a merge cut short after 2 of rank 1's rows
        block = Shard(rank, 2).block(len(todo), 1)
        Shard(rank, 2).part(out, 1, rank).write_bytes(b"".join(lines[i] + b"\n" for i in block))
    cut = Shard(1, 2).block(len(todo), 1).start + 2
    out.write_bytes(b"".join(line + b"\n" for line in lines[:cut]))
    _merge(Shard(0, 2), out, todo, 1)
    assert out.read_bytes() == data and not list(tmp_path.glob("out.tsv.part*"))


def test_a_prompt_with_a_lone_carriage_return_is_one_rejected_row(easynlp_dir, tmp_path):
    """No output line can hold such a row, so it is rejected with its reason; the job paints every other row
    (before, it stopped before painting anything, on every rerun)."""
    inp, out = tmp_path / "in.tsv", tmp_path / "out.tsv"
    inp.write_bytes("a\t红苹果\nb\t猫\rX\nc\t宽松T恤\n".encode())
    assert predict(easynlp_dir, inp, out) == EXIT_REJECTED
    assert [line.split("\t")[0] for line in out.read_text(encoding="utf-8").split("\n")[:-1]] == ["a", "c"]
    rejected = (tmp_path / "out.tsv.rejected").read_text(encoding="utf-8")
    assert rejected.startswith("2\ta carriage return") and rejected.count("\n") == 1


def test_a_resume_by_another_job_is_refused_naming_what_differs(easynlp_dir, tmp_path):
    """The job (model, seed, sampling, precision) is kept beside its output: another --seed or model is refused
    with a message and nothing changed; --overwrite starts over; the same command resumes."""
    inp, out = write_input(tmp_path / "in.tsv", n_good=3, bad=False), tmp_path / "out.tsv"
    assert predict(easynlp_dir, inp, out, "--seed", "1", "--precision", "fp32") == 0
    lines = out.read_bytes().split(b"\n")[:-1]
    out.write_bytes(b"\n".join(lines[:2]) + b"\n")  # stopped after two rows
    before = out.read_bytes()
    assert predict(easynlp_dir, inp, out, "--seed", "2", "--precision", "fp32") == EXIT_ERROR
    assert predict(easynlp_dir, inp, out, "--seed", "1", "--top-k", "5", "--precision", "fp32") == EXIT_ERROR
    assert out.read_bytes() == before, "nothing changed"
    assert predict(easynlp_dir, inp, out, "--seed", "1", "--precision", "fp32") == 0
    assert out.read_bytes() == b"\n".join(lines) + b"\n", "the same job resumes"
    assert predict(easynlp_dir, inp, out, "--seed", "2", "--precision", "fp32", "--overwrite") == 0
    assert len(out.read_bytes().split(b"\n")) == 4 and out.read_bytes() != b"\n".join(lines) + b"\n"
    assert json.loads((tmp_path / "out.tsv.job.json").read_text())["seed"] == 2


def test_predict_repaints_rows_that_carry_a_picture_and_a_box(tmp_path):
    """idx<TAB>text<TAB>imgbase64<TAB>x0,y0,x1,y1 repaints that box of the picture (in cells), in the same running
    batch as the plain rows; a bad picture or box is a rejected row."""
    import base64 as b64

    from painter import Painter
    from painter.checkpoints import save_painter
    from painter.data.images import picture_params, png_bytes, png_info
    from painter.serving.repaint import keep_mask
    from conftest import VOCAB
    from test_app import slow_model

    model = save_painter(slow_model(), VOCAB, tmp_path / "slow")
    painter = Painter.from_pretrained(model, device="cpu", precision="fp32")
    source = painter.generate("红苹果", seed=3)[0][0]
    picture = b64.b64encode(png_bytes(source, png_info(picture_params(source)))).decode()
    inp, out = tmp_path / "in.tsv", tmp_path / "out.tsv"
    inp.write_text(f"a\t狐狸\t{picture}\t4,4,12,12\nb\t红苹果\nc\t狐狸\tnot-base64\t0,0,4,4\n"
                   f"d\t狐狸\t{picture}\t0,0,20,4\n", encoding="utf-8")
    assert predict(model, inp, out, "--precision", "fp32") == EXIT_REJECTED
    rows = [line.split("\t") for line in out.read_text(encoding="utf-8").split("\n")[:-1]]
    assert [r[0] for r in rows] == ["a", "b"]
    repainted = Image.open(io.BytesIO(base64.b64decode(rows[0][2])))
    keep = keep_mask(16, box=(4, 4, 12, 12))
    before, after = painter.image_codes(source), painter.image_codes(repainted)
    assert torch.equal(after[keep], before[keep]) and not torch.equal(after, before)
    rejected = (tmp_path / "out.tsv.rejected").read_text(encoding="utf-8")
    assert "\nc" not in rejected and rejected.startswith("3\t") and "\n4\t" in rejected and "not a region" in rejected

