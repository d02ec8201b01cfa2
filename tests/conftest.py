"""Tiny random models in the real on-disk layouts, built fresh by the tests (no downloads)."""

from __future__ import annotations

import io
import sys
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from painter.checkpoints import save_easynlp, save_painter
from painter.hub import fetch
from painter.models import GPTConfig, ModelConfig, PainterModel, VQGANConfig

ROOT = Path(__file__).resolve().parents[1]
VOCAB = ROOT / "assets" / "vocab.txt"
sys.path.insert(0, str(ROOT))  # the bench's reference loop is what the sampler is checked against


def tiny_config(n_layer: int = 2, n_embd: int = 32, n_head: int = 2, n_embed: int = 128) -> ModelConfig:
    """A 16x16-pixel VQGAN with a 4x4 code grid and a 2-layer GPT: real structure, milliseconds to run."""
    vqgan = VQGANConfig(ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(4,), z_channels=8,
                        embed_dim=8, n_embed=n_embed, resolution=16, norm_groups=8)
    gpt = GPTConfig(vocab_size=n_embed + 21128, block_size=32 + vqgan.num_codes, n_layer=n_layer, n_head=n_head,
                    n_embd=n_embd)
    return ModelConfig(gpt=gpt, vqgan=vqgan)


def tiny_model(seed: int = 0, **kw) -> PainterModel:
    torch.manual_seed(seed)
    model = PainterModel(tiny_config(**kw)).eval()
    # Spread the codebook so that quantization and decoding are not degenerate, and make the GPT's
    # next-token distributions peaked and prompt-dependent (minGPT's init gives nearly uniform ones, under
    # which any sampler would look right).
    with torch.no_grad():
        model.first_stage_model.quantize.embedding.weight.normal_()
        model.transformer.tok_emb.weight.normal_(std=1.0)
        model.transformer.head.weight.normal_(std=0.5)
    return model


@pytest.fixture(scope="session")
def easynlp_dir(tmp_path_factory) -> Path:
    return save_easynlp(tiny_model(), VOCAB, tmp_path_factory.mktemp("easynlp"))


@pytest.fixture(scope="session")
def painter_dir(tmp_path_factory) -> Path:
    return save_painter(tiny_model(), VOCAB, tmp_path_factory.mktemp("painter"))


@pytest.fixture(scope="session")
def painter(easynlp_dir):
    """The exact mode: its tokens are the reference's."""
    from painter import Painter

    return Painter.from_pretrained(easynlp_dir, device="cpu", precision="fp32")


@pytest.fixture(autouse=True)
def no_network_downloads(monkeypatch, tmp_path_factory):
    """Tests never reach the internet: known names resolve offline, into an empty cache."""
    monkeypatch.setenv("PAINTER_OFFLINE", "1")
    monkeypatch.setenv("PAINTER_CACHE", str(tmp_path_factory.mktemp("cache")))


ARCHIVE_NAME = "pai-painter-base-zh"  # the known model the download tests serve
ARCHIVE_PATH = f"/release/easynlp_modelzoo/alibaba-pai/{ARCHIVE_NAME}.tgz"
REAL_SLEEP = time.sleep  # the download tests patch time.sleep away for the client's back-off


class Server:
    """Model archives over HTTP on 127.0.0.1: serves ``files``; ``mode`` makes it misbehave (cut: the first
    response stops halfway; norange, error500, redirect, chunked, trickle) or go slowly (slow: four pieces,
    0.3 s apart)."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.mode = "ok"
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                if self.path not in server.files:
                    self.send_error(404, "Not Found")
                    return
                if server.mode == "redirect":
                    server.mode = "ok"
                    self.send_response(302)
                    self.send_header("Location", server.url.replace("127.0.0.1", "localhost") + self.path)
                    self.end_headers()
                    return
                if server.mode == "chunked":  # broken chunked encoding once: a chunk shorter than announced
                    server.mode = "ok"
                    self.send_response(200)
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    self.wfile.write(b"ffff\r\n" + server.files[self.path][:100])
                    self.wfile.flush()
                    self.connection.shutdown(2)
                    return
                if server.mode == "endless":  # no size at all, and bytes that never stop
                    self.send_response(200)
                    self.end_headers()
                    try:
                        while True:
                            self.wfile.write(b"\0" * 65536)
                    except (BrokenPipeError, ConnectionResetError):
                        return
                if server.mode == "error500":
                    server.mode = "ok"
                    self.send_error(500, "Internal Server Error")
                    return
                data = server.files[self.path]
                start = int(rng.split("=")[1].split("-")[0]) if rng and server.mode != "norange" else 0
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if server.mode == "trickle":  # a byte at a time, forever slower than any floor
                    for byte in body[:40]:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        REAL_SLEEP(0.05)  # the tests patch time.sleep away for the client's back-off
                    return
                if server.mode == "slow":
                    quarter = -(-len(body) // 4)
                    for start in range(0, len(body), quarter):
                        self.wfile.write(body[start:start + quarter])
                        self.wfile.flush()
                        REAL_SLEEP(0.3)
                    return
                if server.mode == "cut":
                    server.mode = "ok"
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(2)
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.httpd.shutdown()


def tgz(members: dict[str, bytes], extra=None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra or []:
            tar.addfile(info)
    return buf.getvalue()


@pytest.fixture(scope="session")
def archive(tmp_path_factory) -> bytes:
    d = save_easynlp(tiny_model(), VOCAB, tmp_path_factory.mktemp("src") / ARCHIVE_NAME)
    return tgz({f"{ARCHIVE_NAME}/{f.name}": f.read_bytes() for f in d.iterdir()})


@pytest.fixture
def online(monkeypatch, tmp_path):
    monkeypatch.delenv("PAINTER_OFFLINE")
    monkeypatch.setattr(fetch.time, "sleep", lambda s: None)
    cache = tmp_path / "cache"
    monkeypatch.setenv("PAINTER_CACHE", str(cache))
    return cache
