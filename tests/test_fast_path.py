"""The fast path: precision modes, int8 and fused layers, the fixed-shape step, fast previews, quality check."""

import dataclasses
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from painter import Painter
from painter.errors import DeviceError, SamplingError
from painter.models import KVCache
from painter.models.gpt import fuse_qkv
from painter.models.packed import INT4_GROUP, Int4Linear, Int8Linear, int4_groups
from painter import precision
from painter.precision import auto_candidates, resolve_inference
from painter.sampling import SamplingConfig, attention_windows
from painter.serving.engine import Engine
from painter.serving.preview import PreviewCanvas, PreviewMap, image_patches, patches_to_images
from conftest import ROOT, tiny_model

CPU = torch.device("cpu")


@pytest.mark.parametrize("mode", ["fp32", "bf16", "int8", "int4", "auto"])
def test_every_mode_loads_and_generates(easynlp_dir, mode):
    if mode == "bf16" and not precision.native_bf16(CPU):
        with pytest.raises(DeviceError, match="no native bf16 arithmetic"):
            Painter.from_pretrained(easynlp_dir, device="cpu", precision=mode)
        return
    painter = Painter.from_pretrained(easynlp_dir, device="cpu", precision=mode)
    image = painter.generate("红苹果", seed=3)[0][0]
    assert image.size == (16, 16) and image.mode == "RGB"
    assert painter.generate("红苹果", seed=3)[0][0].tobytes() == image.tobytes()  # same seed, same pixels
    assert np.asarray(image).std() > 0


def test_auto_takes_the_fastest_usable_mode_and_falls_back_to_fp32(monkeypatch):
    import painter.models.packed as packed

    import time

    # decided from the hardware, never timed: a busy or idle machine makes the same choice
    monkeypatch.setattr(time, "perf_counter", lambda: pytest.fail("auto's choice must not depend on timing"))
    monkeypatch.setattr(precision, "native_bf16", lambda device: True)  # a CPU with native bf16 leads with int4
    assert auto_candidates(CPU) == ["int4", "int8", "bf16", "fp32"]
    monkeypatch.setattr(precision, "native_bf16", lambda device: False)  # AVX2 only: int4's kernel is slow there
    assert auto_candidates(CPU) == ["int8", "fp32"]
    monkeypatch.undo()
    monkeypatch.setattr(packed, "int8_available", lambda: False)
    assert auto_candidates(CPU)[0] == ("bf16" if precision.native_bf16(CPU) else "fp32")
    monkeypatch.setattr(precision, "native_bf16", lambda device: False)
    assert auto_candidates(CPU) == ["fp32"]
    chosen = resolve_inference("fp32", CPU)
    assert (chosen.mode, chosen.gpt_dtype, chosen.decoder_dtype) == ("fp32", torch.float32, torch.float32)
    with pytest.raises(DeviceError, match="int8 is not available here: this PyTorch build has no fbgemm"):
        resolve_inference("int8", CPU)
    with pytest.raises(DeviceError, match="unknown precision 'int2'"):
        resolve_inference("int2", CPU)
    assert "int4 is a CPU mode" in precision.mode_usable("int4", torch.device("cuda"))
    monkeypatch.setattr(packed, "int4_available", lambda: False)
    with pytest.raises(DeviceError, match="int4 is not available here: this PyTorch build has no int4"):
        resolve_inference("int4", CPU)


def test_int4_is_weight_only_in_groups_and_rows_never_interact():
    torch.manual_seed(0)
    linear = torch.nn.Linear(256, 96)
    layer = Int4Linear(linear)
    x = torch.randn(5, 3, 256)
    exact, quantized = linear(x), layer(x)
    assert quantized.shape == exact.shape and quantized.dtype == torch.float32
    assert 0 < ((quantized - exact).norm() / exact.norm()).item() < 0.12  # bf16 activations, 16 levels a group
    for r in range(len(x)):
        assert torch.equal(quantized[r], layer(x[r:r + 1])[0])
    codes, pairs = int4_groups(linear.weight.detach(), INT4_GROUP)
    assert codes.min() >= 0 and codes.max() <= 15 and pairs.shape == (256 // INT4_GROUP, 96, 2)
    rebuilt = (codes.view(96, -1, INT4_GROUP) - 8) * pairs[:, :, 0].float().T[..., None] + pairs[:, :, 1].float().T[..., None]
    assert (rebuilt.view(96, 256) - linear.weight).abs().max() < 0.01  # each weight within its group's step
    with pytest.raises(ValueError, match="multiple of 32"):
        Int4Linear(torch.nn.Linear(100, 8))


def test_the_int4_mode_takes_int4_for_few_rows_and_int8_for_many():
    """One user gets int4's latency, a crowd int8's throughput: both packings are kept, chosen per call."""
    from painter.models.packed import INT4_MAX_ROWS, BatchAwareLinear

    torch.manual_seed(0)
    linear = torch.nn.Linear(256, 96)
    layer = BatchAwareLinear(linear)
    for rows in (1, INT4_MAX_ROWS, INT4_MAX_ROWS + 1, 8):
        x = torch.randn(rows, 1, 256)  # a step: one token per row
        kernel = layer.few if rows <= INT4_MAX_ROWS else layer.many
        assert torch.equal(layer(x), kernel(x)), rows
    assert not torch.equal(layer.few(x), layer.many(x)), "two kernels, two roundings"


def test_int8_mode_quantizes_the_gpt_and_keeps_the_decoder_apart(easynlp_dir):
    painter = Painter.from_pretrained(easynlp_dir, device="cpu", precision="int8")
    gpt = painter.model.transformer
    kinds = {type(m).__name__ for m in gpt.modules() if "Linear" in type(m).__name__}
    assert kinds == {"Int8Linear"}
    assert gpt.blocks[0].attn.qkv.out_features == 3 * gpt.config.n_embd
    assert painter.model.first_stage_model.decoder.conv_out.weight.dtype == painter.inference.decoder_dtype
    # the token embedding is stored in bf16; activations and the key/value cache stay fp32
    assert gpt.tok_emb.weight.dtype == torch.bfloat16 and gpt.pos_emb.dtype == torch.float32
    created, real_empty = [], KVCache.empty.__func__

    def recording_empty(cls, config, batch, dtype, *args, **kwargs):
        created.append(dtype)
        return real_empty(cls, config, batch, dtype, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(KVCache, "empty", classmethod(recording_empty))
        codes = painter.codes([(painter.tokenize("红苹果"), 0)], SamplingConfig().validate(painter.config.img_vocab_size))
    assert set(created) == {torch.float32} and codes.shape == (1, painter.config.img_len)  # engine and prefill


def test_int8_linear_is_close_to_fp32():
    torch.manual_seed(0)
    linear = torch.nn.Linear(256, 512)
    x = torch.randn(4, 7, 256)
    exact, quantized = linear(x), Int8Linear(linear)(x)
    assert quantized.shape == exact.shape and quantized.dtype == torch.float32
    rel = ((quantized - exact).norm() / exact.norm()).item()
    assert 0 < rel < 0.02


def test_int8_rows_do_not_depend_on_the_rest_of_their_batch():
    torch.manual_seed(0)
    layer = Int8Linear(torch.nn.Linear(64, 32))
    batch = torch.randn(6, 64) * torch.tensor([0.1, 1, 10, 100, 1, 1])[:, None]
    batch[4] = 0.5  # a constant row
    batch[5, :32] += 50  # a row with an outlier half
    together = layer(batch)
    for r in range(len(batch)):
        assert torch.equal(together[r], layer(batch[r:r + 1])[0]), f"row {r}"
    exact = batch @ layer_weight(layer).T + layer.bias
    assert torch.allclose(together[4], exact[4], atol=1e-4)  # a constant row is exact


def layer_weight(layer: Int8Linear) -> torch.Tensor:
    weight, _ = torch.ops.quantized.linear_unpack(layer.packed)
    return weight.dequantize()


def test_fused_qkv_and_the_static_step_match_the_cached_forward():
    model = tiny_model(seed=5)
    gpt = model.transformer
    ids = torch.randint(0, 128, (3, 32 + 12))
    with torch.inference_mode():
        full = gpt(ids)
        fused = fuse_qkv(tiny_model(seed=5).transformer)
        assert torch.allclose(fused(ids), full, atol=1e-5)
        from painter.models import KVCache

        cache = KVCache.empty(gpt.config, 3, torch.float32, CPU, max_len=ids.shape[1])
        fused.forward_cached(ids[:, :32], cache)
        for pos in range(32, ids.shape[1]):
            logits = fused.forward_static(ids[:, pos:pos + 1], cache, torch.full((len(ids),), pos))
            cache.length += 1
            assert torch.allclose(logits, full[:, pos], atol=1e-5)


def test_threads_asking_for_the_same_step_share_one_trace(easynlp_dir, monkeypatch):
    from painter import sampling as sampling_module
    from painter.models import KVCache

    gpt = Painter.from_pretrained(easynlp_dir, device="cpu", precision="int8").model.transformer
    cache = KVCache.empty(gpt.config, 1, torch.float32, CPU, max_len=40)
    calls, real_trace = [], torch.jit.trace

    def slow_trace(*args, **kwargs):  # widen the window in which a second thread could start its own trace
        calls.append(1)
        time.sleep(0.3)
        return real_trace(*args, **kwargs)

    monkeypatch.setattr(torch.jit, "trace", slow_trace)
    results = []
    threads = [threading.Thread(target=lambda: results.append(sampling_module.traced_step(
        gpt, torch.zeros(1, 1, dtype=torch.long), cache, torch.zeros(1, dtype=torch.long)))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and len(results) == 3 and all(r is results[0] for r in results)
    assert isinstance(results[0], torch.jit.ScriptModule)


def test_a_warmed_up_engine_traces_nothing_while_a_crowd_paints(easynlp_dir, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    painter = Painter.from_pretrained(easynlp_dir, device="cpu", precision="int8")
    cold = [painter.generate("红苹果", seed=s)[0][0].tobytes() for s in range(5)]  # alone, traced on demand
    fresh = Painter.from_pretrained(easynlp_dir, device="cpu", precision="int8")
    fresh.max_batch = 6  # not a power of two: the largest padded batch is the engine's own size
    traces, real_trace = [], torch.jit.trace
    monkeypatch.setattr(torch.jit, "trace", lambda *a, **k: traces.append(a[1][1].shape) or real_trace(*a, **k))
    fresh.warm_up()
    windows = len(attention_windows(fresh.engine.cache.max_len))
    # padded row counts 1, 2, 4 and 6 (the engine's max_batch), each over every attention window
    assert sorted({shape[1] for shape in traces}) == [1, 2, 4, 6] and len(traces) == 4 * windows
    traces.clear()
    with ThreadPoolExecutor(5) as pool:  # five callers at once: rows 1..5 at different positions
        crowd = list(pool.map(lambda s: fresh.generate("红苹果", seed=s)[0][0].tobytes(), range(5)))
    assert traces == []
    assert crowd == cold  # the warm-up's scratch runs touched no request's cache


def test_compiled_static_step_gives_the_eager_logits_and_codes(easynlp_dir, painter, monkeypatch):
    from painter import sampling as sampling_module
    from painter.models import KVCache
    from painter.sampling import StaticStep, traced_step

    packed = painter.model.transformer  # fp32 on CPU: oneDNN-packed weights, which TorchScript cannot trace
    cache = KVCache.empty(packed.config, 1, torch.float32, CPU, max_len=40)
    assert traced_step(packed, torch.zeros(1, 1, dtype=torch.long), cache, torch.zeros(1, dtype=torch.long)) is None  # stays eager
    painter = Painter.from_pretrained(easynlp_dir, device="cpu", precision="int8")
    gpt, ids = painter.model.transformer, torch.tensor([painter.tokenize("红苹果").ids] * 2)
    traced = traced_step(gpt, torch.zeros(1, 1, dtype=torch.long), cache, torch.zeros(1, dtype=torch.long))
    assert isinstance(traced, torch.jit.ScriptModule)
    assert traced_step(gpt, torch.ones(1, 1, dtype=torch.long), cache, torch.tensor([5])) is traced  # once per shape
    monkeypatch.setattr(sampling_module, "ATTEND_BUCKET", 8)
    caches = [KVCache.empty(gpt.config, 2, torch.float32, CPU, max_len=32 + 15) for _ in range(3)]
    with torch.inference_mode():
        for cache in caches:
            gpt.forward_cached(ids, cache)
        steps = [StaticStep(gpt, cache, 2, compile=compile) for cache, compile in zip(caches, (False, True))]
        for pos in range(15):  # attention windows of 40 positions, then the whole cache of 47
            fed = torch.tensor([[pos], [14 - pos]])
            expected = gpt.forward_cached(fed, caches[2])
            eager, compiled = (step(fed, [32 + pos] * 2) for step in steps)
            assert torch.allclose(eager, expected, atol=1e-5) and torch.allclose(compiled, expected, atol=1e-5)
    sampling = SamplingConfig().validate(painter.config.img_vocab_size)
    uncond = painter.tokenizer.unconditional()
    runs = [Engine(gpt, uncond, 16, CPU, max_batch=2, compile=compile).submit(ids[0].tolist(), [4, 5], sampling).result()
            for compile in (False, True)]
    assert torch.equal(runs[0], runs[1])


def test_patches_round_trip_and_fast_preview_tracks_the_real_decode():
    images = torch.randn(2, 3, 16, 16)
    assert torch.equal(patches_to_images(image_patches(images, 4), 4), images)
    vqgan = tiny_model(seed=1).first_stage_model.eval()
    preview = PreviewMap.fit(vqgan, grids=32)
    assert preview.weight.shape == (vqgan.config.embed_dim + 1, 3 * 4 * 4)
    codes = torch.randint(0, vqgan.config.n_embed, (4, 16), generator=torch.Generator().manual_seed(9))
    with torch.inference_mode():
        real = vqgan.decode(codes)
    canvas = PreviewCanvas(preview, vqgan.quantize.embedding.weight, 4)
    fast = canvas.update(codes, 16)
    assert fast.shape == real.shape
    # a random decoder smears codes over their neighbours, so the per-cell map only partly explains it
    assert np.corrcoef(fast.flatten().numpy(), real.flatten().numpy())[0, 1] > 0.2
    # half the grid: the other half stays grey
    half = PreviewCanvas(preview, vqgan.quantize.embedding.weight, 4).update(codes, 8)
    assert (half[:, :, 8:] == 0).all() and torch.equal(half[:, :, :8], fast[:, :, :8])


def test_preview_map_is_cached_and_a_torn_cache_is_refitted(tmp_path, monkeypatch, caplog):
    vqgan = tiny_model(seed=1).first_stage_model.eval()
    first = PreviewMap.for_vqgan(vqgan, tmp_path)
    [path] = tmp_path.glob("preview-*.safetensors")
    monkeypatch.setattr(PreviewMap, "fit", classmethod(lambda cls, v: pytest.fail("refitted a cached map")))
    assert torch.equal(PreviewMap.for_vqgan(vqgan, tmp_path).weight, first.weight)
    path.write_bytes(path.read_bytes()[:40])
    monkeypatch.undo()
    again = PreviewMap.for_vqgan(vqgan, tmp_path)
    assert "unreadable preview map" in caplog.text and torch.allclose(again.weight, first.weight)


def test_stream_previews_fast_and_decoded(painter):
    fast = list(painter.stream("红苹果", seed=2, preview_every=8))
    decoded = list(painter.stream("红苹果", seed=2, preview_every=8, preview="decode"))
    assert [f.step for f in fast] == [f.step for f in decoded] == [8, 16]
    assert fast[-1].image.tobytes() == decoded[-1].image.tobytes()  # the final frame is always a real decode
    assert fast[0].image.tobytes() != decoded[0].image.tobytes()
    with pytest.raises(SamplingError, match="preview must be one of fast, decode"):
        next(painter.stream("红苹果", preview="full"))


def test_quality_check_computation(easynlp_dir):
    from painter.serving.quality import compare, divergence, reference_run, stepped_logits

    exact = Painter.from_pretrained(easynlp_dir, device="cpu", precision="fp32")
    reference = reference_run(exact, ["红苹果", "宽松T恤"], decodes=1)
    sequences = reference.sequences
    assert sequences.shape == (2, 32 + 16) and reference.images.shape == (1, 3, 16, 16)
    assert torch.equal(sequences[:, :32], torch.tensor([exact.tokenize(p).ids for p in ["红苹果", "宽松T恤"]]))
    gpt = exact.model.transformer
    logits = stepped_logits(gpt, sequences, 32)
    with torch.inference_mode():
        assert torch.allclose(logits, gpt(sequences[:, :-1])[:, 31:], atol=1e-5)  # the cached path, step by step
    assert torch.allclose(logits, reference.logits, atol=1e-5)
    assert divergence(logits, logits) == (0.0, 1.0)
    # halved logits: the same ranking, a KL computed here by hand
    p, q = torch.softmax(logits, -1), torch.softmax(logits / 2, -1)
    expected = (p * (p.log() - q.log())).sum(-1).mean().item()
    kl, top1 = divergence(logits, logits / 2)
    assert kl == pytest.approx(expected, rel=1e-4) and kl > 0.01 and top1 == 1.0
    itself = compare(exact, reference)
    assert abs(itself.kl) < 1e-6 and itself.top1 == 1.0 and itself.decoder_psnr > 100 and itself.passed
    for mode in ["bf16", "int8"] if precision.native_bf16(CPU) else ["int8"]:
        verdict = compare(Painter.from_pretrained(easynlp_dir, device="cpu", precision=mode), reference)
        assert verdict.mode == mode and 0 < verdict.kl < 0.5 and 0.5 < verdict.top1 <= 1
        # a bf16 decoder rounds; where there is no native bf16 the decoder stays fp32 and is exact
        assert 25 < verdict.decoder_psnr < 100 if verdict.decoder == "bfloat16" else verdict.decoder_psnr > 100


def test_auto_checks_each_model_once_and_skips_modes_that_fail(easynlp_dir, tmp_path, monkeypatch, caplog):
    import shutil

    import painter.serving.quality as quality

    model = tmp_path / "model"
    shutil.copytree(easynlp_dir, model)
    runs = []
    real_run = quality.reference_run
    monkeypatch.setattr(quality, "reference_run", lambda *a, **k: runs.append(1) or real_run(*a, **k))
    monkeypatch.setattr("painter.serving.pipeline.reference_run", quality.reference_run)
    monkeypatch.setattr(quality, "KL_TARGET", 1.0)  # the tiny random model passes a loose target
    monkeypatch.setattr(precision, "AUTO_ORDER", {"cpu": ("int8", "bf16", "fp32")})  # int4 or not, as any CPU
    with caplog.at_level("WARNING"):
        assert Painter.from_pretrained(model, device="cpu").precision == "int8"
    assert len(runs) == 1 and "this happens once" in caplog.text
    store = quality.VerdictStore(model, CPU, Path(os.environ["PAINTER_CACHE"]) / "quality")
    assert store.path.is_file() and set(store.verdicts) == {"int8"} and 0 < store.get("int8").kl < 1
    assert Painter.from_pretrained(model, device="cpu").precision == "int8" and len(runs) == 1  # cached

    store.record(dataclasses.replace(store.get("int8"), kl=2.0))  # a failed verdict: auto moves on
    second = "bf16" if precision.native_bf16(CPU) else "fp32"
    assert Painter.from_pretrained(model, device="cpu").precision == second
    assert len(runs) == (2 if second == "bf16" else 1)  # bf16 had no verdict yet: checked then

    (model / "config.json").touch()  # new files, new verdicts
    assert quality.VerdictStore(model, CPU, store.path.parent).get("int8") is None


def test_unreadable_or_unwritable_verdicts_mean_checking_again(easynlp_dir, tmp_path, caplog):
    from painter.serving.quality import Verdict, VerdictStore

    store = VerdictStore(easynlp_dir, CPU, tmp_path)
    store.path.write_text("{not json", encoding="utf-8")
    with caplog.at_level("WARNING"):
        assert VerdictStore(easynlp_dir, CPU, tmp_path).get("int8") is None
    assert "ignoring unreadable quality verdicts" in caplog.text
    verdict = Verdict("int8", 0.01, 0.9, 45.0, "bfloat16")
    store.record(verdict)
    assert VerdictStore(easynlp_dir, CPU, tmp_path).get("int8") == verdict and verdict.passed
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    VerdictStore(easynlp_dir, CPU, blocked).record(verdict)  # the cache cannot be written: a warning, no error
    assert "could not store the quality verdict" in caplog.text


def test_fast_preview_of_the_trained_demo_vqgan_looks_like_its_decode():
    from painter.checkpoints import load_vqgan

    vqgan = load_vqgan(ROOT / "assets" / "models" / "demo-vqgan").eval()
    preview = PreviewMap.fit(vqgan)  # fitted on 8x8-code decodes (32x32 pixels), used on the full 16x16 grid
    codes = torch.randint(0, vqgan.config.n_embed, (4, 256), generator=torch.Generator().manual_seed(9))
    with torch.inference_mode():
        real = vqgan.decode(codes)
        assert vqgan.decode(codes[:, :64], 8).shape == (4, 3, 32, 32)
    fast = PreviewCanvas(preview, vqgan.quantize.embedding.weight, 4).update(codes, 256)
    assert np.corrcoef(fast.flatten().numpy(), real.flatten().numpy())[0, 1] > 0.75


def test_checkpoints_load_block_by_block_and_painter_files_lazily(painter_dir, easynlp_dir):
    from painter.checkpoints import SafetensorsFile, build_model, load_checkpoint

    checkpoint = load_checkpoint(painter_dir)
    assert isinstance(checkpoint.state_dict, SafetensorsFile)
    seen = []
    lazy = build_model(checkpoint, prepare=lambda name, module: seen.append((name, type(module).__name__)))
    assert seen == [("transformer.blocks.0", "Block"), ("transformer.blocks.1", "Block"), ("", "PainterModel")]
    eager = load_checkpoint(easynlp_dir)
    state = eager.state_dict
    left = []
    model = build_model(eager, prepare=lambda name, module: left.append(len(state)))
    # a dict is consumed as it is loaded, so each original tensor can be freed once its group is converted
    assert left[0] > left[1] > left[2] == 0
    for (k, a), b in zip(lazy.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), k
