"""Downloads against an HTTP server on 127.0.0.1 serving archives built here in EasyNLP's layout."""

import hashlib
import os
import pickle
import shutil
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from painter import Painter, hub
from painter.checkpoints import EASYNLP_WEIGHTS, save_easynlp
from painter.errors import CheckpointError, ModelNotFoundError
from painter.hub import fetch as dl
from painter.serving.cli import main
from conftest import ARCHIVE_NAME as NAME, ARCHIVE_PATH as PATH, VOCAB, tgz, tiny_model



def test_download_verify_extract_and_predict(server, archive, online, tmp_path, monkeypatch):
    server.files[PATH] = archive
    monkeypatch.setitem(hub.registry()[NAME], "sha256", hashlib.sha256(archive).hexdigest())
    assert main(["-q", "download", NAME, "--mirror", server.url]) == 0
    model_dir = online / NAME
    assert sorted(p.name for p in model_dir.iterdir()) == ["config.json", "pytorch_model.bin", "vocab.txt"]
    assert not list(online.glob(".*.tgz*"))  # archive and partial file cleaned up
    prompts = tmp_path / "p.tsv"
    prompts.write_text("1\t红苹果\n", encoding="utf-8")
    assert main(["-q", "predict", "--model", NAME, "--input", str(prompts), "--output", str(tmp_path / "o.tsv")]) == 0
    assert len((tmp_path / "o.tsv").read_text().splitlines()) == 1


def test_from_pretrained_downloads_on_first_use(server, archive, online, monkeypatch):
    server.files[PATH] = archive
    monkeypatch.setenv("PAINTER_MIRROR", server.url)
    painter = Painter.from_pretrained(NAME, device="cpu")
    assert painter.generate("红苹果")[0][0].size == (16, 16)
    Painter.from_pretrained(NAME, device="cpu")
    assert len(server.requests) == 1  # the second load used the cache


def test_resume_after_the_connection_is_cut(server, archive, online):
    server.files[PATH] = archive
    server.mode = "cut"
    hub.download(NAME, mirror=server.url, progress=False)
    assert server.requests[0][1] is None and server.requests[1][1] == f"bytes={len(archive) // 2}-"
    assert (online / NAME / EASYNLP_WEIGHTS).is_file()


def test_interrupted_download_keeps_its_part_and_resumes_next_time(server, archive, online):
    server.files[PATH] = archive
    server.mode = "cut"
    with pytest.raises(dl.DownloadError, match="try again .* to resume from where it stopped"):
        dl.fetch(server.url + PATH, online / "a.tgz", retries=0, progress=False)
    part = online / "a.tgz.part"
    assert part.stat().st_size == len(archive) // 2
    dl.fetch(server.url + PATH, online / "a.tgz", progress=False)
    assert (online / "a.tgz").read_bytes() == archive and not part.exists()
    assert server.requests[-1][1] == f"bytes={len(archive) // 2}-"


def test_server_ignoring_range_restarts_cleanly(server, archive, online):
    server.files[PATH] = archive
    online.mkdir(parents=True)
    (online / "a.tgz.part").write_bytes(archive[:1000])
    server.mode = "norange"
    dl.fetch(server.url + PATH, online / "a.tgz", progress=False)
    assert (online / "a.tgz").read_bytes() == archive


def test_server_errors(server, archive, online):
    with pytest.raises(dl.DownloadError, match="HTTP 404"):
        hub.download(NAME, mirror=server.url, progress=False)
    server.files[PATH] = archive
    server.mode = "error500"  # one 500, then fine: retried
    hub.download(NAME, mirror=server.url, progress=False)
    assert [r[0] for r in server.requests].count(PATH) == 3


def test_bad_checksum_is_refused_and_the_cache_unchanged(server, archive, online, monkeypatch):
    server.files[PATH] = archive
    monkeypatch.setitem(hub.registry()[NAME], "sha256", "0" * 64)
    with pytest.raises(dl.DownloadError, match="checksum mismatch"):
        hub.download(NAME, mirror=server.url, progress=False)
    assert not (online / NAME).exists() and not [p for p in online.iterdir() if not p.name.endswith(".lock")]


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "nested-link", "hardlink", "device", "missing",
                                  "huge", "full-disk"])
def test_malicious_or_broken_archives_are_refused(server, archive, online, tmp_path, kind, monkeypatch):
    files = {f"{NAME}/config.json": b"{}", f"{NAME}/pytorch_model.bin": b"x", f"{NAME}/vocab.txt": b"x"}
    extra = []
    if kind == "dotdot":
        files["../../evil.txt"] = b"pwned"
    elif kind == "absolute":
        files[str(tmp_path / "evil.txt")] = b"pwned"
    elif kind == "symlink":
        link = tarfile.TarInfo(f"{NAME}/link")
        link.type, link.linkname = tarfile.SYMTYPE, "../../../../etc/passwd"
        extra.append(link)
    elif kind == "nested-link":  # stays inside the archive, but not inside the model folder once installed
        del files[f"{NAME}/vocab.txt"]
        files = {f"p/q/{k.split('/', 1)[1]}": v for k, v in files.items()} | {"secret.txt": b"secret"}
        link = tarfile.TarInfo("p/q/vocab.txt")
        link.type, link.linkname = tarfile.SYMTYPE, "../../secret.txt"
        extra.append(link)
    elif kind == "hardlink":
        link = tarfile.TarInfo(f"{NAME}/copy")
        link.type, link.linkname = tarfile.LNKTYPE, f"{NAME}/vocab.txt"
        extra.append(link)
    elif kind == "full-disk":  # the extraction folder has 2 bytes free; the archive expands to 4
        real = dl.shutil.disk_usage
        monkeypatch.setattr(dl.shutil, "disk_usage", lambda p: real(p)._replace(free=2)
                            if Path(p).name.startswith(f".{NAME}-") else real(p))
    elif kind == "device":
        dev = tarfile.TarInfo(f"{NAME}/dev")
        dev.type = tarfile.CHRTYPE
        extra.append(dev)
    elif kind == "missing":
        del files[f"{NAME}/vocab.txt"]
    elif kind == "huge":
        monkeypatch.setattr(dl, "MAX_EXTRACTED_BYTES", 3)  # the three files hold 4 bytes
    server.files[PATH] = tgz(files, extra)
    with pytest.raises(dl.DownloadError, match="unsafe|no model directory|expands") as error:
        hub.download(NAME, mirror=server.url, progress=False)
    if "link" in kind:
        assert "is a link" in str(error.value)
    assert "Offline?" not in str(error.value), "a refused archive has nothing to do with being offline"
    assert not (online / NAME).exists()
    assert not (tmp_path / "evil.txt").exists() and not (online.parent / "evil.txt").exists()
    assert not list(online.glob(".*.tgz")), "a refused archive is not kept in the cache"


def test_concurrent_downloads_make_one_copy(server, archive, online):
    server.files[PATH] = archive
    results = []
    threads = [threading.Thread(target=lambda: results.append(hub.download(NAME, mirror=server.url, progress=False)))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 3 and len(set(results)) == 1
    assert [r[0] for r in server.requests].count(PATH) == 1


def test_offline_mode_says_what_to_do(tmp_path):
    with pytest.raises(ModelNotFoundError) as err:
        hub.download(NAME, progress=False)
    message = str(err.value)
    assert "PAINTER_OFFLINE" in message and "atp-modelzoo-sh.oss-cn-shanghai.aliyuncs.com" in message
    assert "config.json, pytorch_model.bin and vocab.txt" in message


def test_unknown_name_lists_close_matches():
    with pytest.raises(ModelNotFoundError, match="Did you mean pai-painter-large-zh"):
        hub.download("pai-painter-lrage-zh")


def to_paddle(model) -> dict[str, np.ndarray]:
    """Our weights in PaddleNLP's names and layout (what its converted files hold)."""
    sd, out = model.state_dict(), {}
    inverse = {"ln1": "norm1", "ln2": "norm2", "attn.query": "self_attn.q_proj", "attn.key": "self_attn.k_proj",
               "attn.value": "self_attn.v_proj", "attn.proj": "self_attn.out_proj", "mlp.0": "linear1", "mlp.2": "linear2"}
    for k, v in sd.items():
        a = v.numpy()
        if k.startswith("transformer.blocks."):
            _, _, i, *rest = k.split(".")
            inner, kind = ".".join(rest[:-1]), rest[-1]
            out[f"gpt.decoder.layers.{i}.{inverse[inner]}.{kind}"] = a.T.copy() if kind == "weight" and "ln" not in inner else a
        elif k == "transformer.tok_emb.weight":
            out["gpt.embeddings.word_embeddings.weight"] = a
        elif k == "transformer.pos_emb":
            out["gpt.embeddings.position_embeddings.weight"] = a[0]
        elif k.startswith("transformer.ln_f."):
            out["gpt.decoder.norm." + k.rsplit(".", 1)[1]] = a
        elif k == "transformer.head.weight":
            out["lm_head.decoder_weight"] = np.concatenate([a, np.zeros((21128, a.shape[1]), a.dtype)])
        elif k == "first_stage_model.quantize.embedding.weight":
            out["vqgan_detokenizer.embedding.weight"] = a
        elif k.startswith(("first_stage_model.decoder.", "first_stage_model.post_quant_conv.")):
            out["vqgan_detokenizer." + k.removeprefix("first_stage_model.")] = a
    out["StructuredToParameterName@@"] = {"a": "b"}
    return out


def test_paddle_weights_convert_to_the_same_pictures(tmp_path, caplog):
    from painter.hub.paddle import convert_paddle

    model = tiny_model()
    pdparams = tmp_path / "model_state.pdparams"
    pdparams.write_bytes(pickle.dumps(to_paddle(model), protocol=2))
    vq = model.config.vqgan.__class__(**{**model.config.vqgan.__dict__, "encoder": False})
    dst = convert_paddle(pdparams, VOCAB, tmp_path / "converted", n_head=2, vqgan=vq)
    reference = save_easynlp(model, VOCAB, tmp_path / "reference")
    a = Painter.from_pretrained(reference, device="cpu").generate(["红苹果", "宽松T恤"], seed=1)
    b = Painter.from_pretrained(dst, device="cpu").generate(["红苹果", "宽松T恤"], seed=1)
    assert [im.tobytes() for ims in a for im in ims] == [im.tobytes() for ims in b for im in ims]
    assert main(["convert", str(dst), str(tmp_path / "back")]) == 1  # EasyNLP would invent an encoder
    assert "no VQGAN encoder" in caplog.text


class Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/painter-paddle-pwned",))


def test_a_pickle_that_calls_anything_is_refused(tmp_path):
    from painter.hub.paddle import read_pdparams

    path = tmp_path / "evil.pdparams"
    path.write_bytes(pickle.dumps({"gpt.embeddings.word_embeddings.weight": Evil()}))
    with pytest.raises(CheckpointError, match="refused to load posix.system|refused to load os.system"):
        read_pdparams(path)
    assert not Path("/tmp/painter-paddle-pwned").exists()
    (tmp_path / "trunc.pdparams").write_bytes(pickle.dumps({"a": np.zeros(100)})[:50])
    with pytest.raises(CheckpointError, match="not a readable"):
        read_pdparams(tmp_path / "trunc.pdparams")


def test_hf_models_honour_the_hub_offline_setting(monkeypatch, tmp_path):
    pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="hf:someone/painter-emoji"):
        hub.download("hf:someone/painter-emoji", cache=tmp_path)


def test_a_full_disk_is_refused_before_anything_is_written(server, archive, online, monkeypatch):
    import collections

    server.files[PATH] = archive
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(dl.shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 100, 100))
    with pytest.raises(dl.DownloadError, match="not enough disk space"):
        hub.download(NAME, mirror=server.url, progress=False)
    assert not (online / NAME).exists() and not list(online.glob("*.part"))


def test_registry_knows_every_published_model():
    known = hub.registry()
    for name in ("pai-painter-base-zh", "pai-painter-large-zh", "pai-painter-commercial-base-zh",
                 "pai-painter-scenery-base-zh", "pai-painter-painting-base-zh"):
        assert known[name]["sources"][0].endswith(f"/{name}.tgz") and known[name]["paddle"].endswith(".pdparams")
    assert known["demo-large"]["bundled"] == "assets/models/demo-large"


def test_a_trickling_server_is_given_up_on_and_the_part_kept(server, archive, online, monkeypatch):
    server.files[PATH] = archive
    server.mode = "trickle"
    monkeypatch.setattr(dl, "SPEED_WINDOW", 0.5)
    started = time.time()
    with pytest.raises(dl.DownloadError, match="gave up.*bytes/s"):
        hub.download(NAME, mirror=server.url, progress=False)
    assert time.time() - started < 30


def test_broken_chunked_encoding_is_retried_and_a_redirect_to_another_host_is_logged(server, archive, online,
                                                                                    monkeypatch, caplog):
    server.files[PATH] = archive
    monkeypatch.setitem(hub.registry()[NAME], "sha256", hashlib.sha256(archive).hexdigest())
    server.mode = "chunked"
    assert hub.download(NAME, mirror=server.url, progress=False) == online / NAME
    assert "retrying" in caplog.text
    shutil.rmtree(online / NAME)
    server.mode = "redirect"
    assert hub.download(NAME, mirror=server.url, progress=False) == online / NAME
    assert "redirected the download to localhost" in caplog.text and "sha256 is checked" in caplog.text


def test_an_unreachable_host_fails_at_once_and_promises_no_resume(tmp_path):
    """Offline, a download does not retry for seconds behind a 0.0 MB bar, and does not offer to resume what
    was never fetched: it names the host and says to check the connection or set a mirror."""
    import time

    start = time.monotonic()
    with pytest.raises(dl.DownloadError) as error:
        dl.fetch("http://painter-test.invalid/model.tgz", tmp_path / "m.tgz", progress=False)
    message = str(error.value)
    assert time.monotonic() - start < 5
    assert "painter-test.invalid" in message and "nothing was fetched" in message and "resume" not in message
    assert not (tmp_path / "m.tgz").exists()


def test_a_download_that_never_ends_stops_at_its_bound_and_fills_no_disk(server, online, monkeypatch):
    """No size in the registry, no Content-Length, bytes forever: the download stops at MAX_UNSIZED_BYTES with a
    message and leaves nothing behind."""
    monkeypatch.setattr(dl, "MAX_UNSIZED_BYTES", 3 * 2**20)
    server.files[PATH] = b"x"
    server.mode = "endless"
    with pytest.raises(dl.DownloadError, match="without saying its size"):
        dl.fetch(server.url + PATH, online / "a.tgz", retries=0, progress=False)
    assert not (online / "a.tgz").exists() and not (online / "a.tgz.part").exists()
