import pytest
import torch

from painter.models import GPT, GPTConfig, KVCache, VQGAN, VQGANConfig
from painter.models.gpt import attention_mask, reference_attention_mask
from conftest import tiny_config, tiny_model


def full_recompute_logits(gpt: GPT, seq: torch.Tensor) -> torch.Tensor:
    return gpt(seq)[:, -1]


@pytest.mark.parametrize("n_unmasked", [0, 5])
def test_cached_logits_equal_full_recompute_at_every_step(n_unmasked):
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=300, block_size=48, n_layer=3, n_head=4, n_embd=64, n_unmasked=n_unmasked)
    gpt = GPT(cfg, img_vocab_size=100).eval()
    seq = torch.randint(0, 300, (3, 32))
    cache = KVCache.empty(cfg, 3, torch.float32, torch.device("cpu"))
    with torch.no_grad():
        logits = gpt.forward_cached(seq, cache)
        for _ in range(16):
            ref = full_recompute_logits(gpt, seq)
            torch.testing.assert_close(logits, ref, atol=1e-4, rtol=0)
            nxt = logits.argmax(-1, keepdim=True)  # greedy: the tokens must agree too
            assert torch.equal(nxt, ref.argmax(-1, keepdim=True))
            seq = torch.cat([seq, nxt], 1)
            logits = gpt.forward_cached(nxt, cache)
    assert cache.length == 48


def test_cache_accepts_chunks_of_several_tokens():
    torch.manual_seed(1)
    cfg = GPTConfig(vocab_size=200, block_size=40, n_layer=2, n_head=2, n_embd=32)
    gpt = GPT(cfg, 100).eval()
    seq = torch.randint(0, 200, (2, 40))
    cache = KVCache.empty(cfg, 2, torch.float32, torch.device("cpu"))
    with torch.no_grad():
        gpt.forward_cached(seq[:, :20], cache)
        logits = gpt.forward_cached(seq[:, 20:27], cache)  # 7 tokens at once after a prefix
        torch.testing.assert_close(logits, gpt(seq[:, :27])[:, -1], atol=1e-5, rtol=0)


def test_sequence_longer_than_block_size_is_refused():
    cfg = GPTConfig(vocab_size=50, block_size=8, n_layer=1, n_head=1, n_embd=8)
    with pytest.raises(ValueError, match="block_size"):
        GPT(cfg, 10)(torch.zeros(1, 9, dtype=torch.long))


def test_attention_mask_matches_reference_buffer():
    ref = reference_attention_mask(10, 3)[0, 0].bool()
    assert torch.equal(attention_mask(0, 10, 3, torch.device("cpu")), ref)
    assert torch.equal(attention_mask(4, 6, 3, torch.device("cpu")), ref[4:10])
    assert attention_mask(9, 1, 3, torch.device("cpu")) is None


def test_gpt_state_dict_names_are_the_references():
    keys = set(GPT(GPTConfig(vocab_size=50, block_size=8, n_layer=1, n_head=1, n_embd=8), 10).state_dict())
    assert {"tok_emb.weight", "pos_emb", "ln_f.weight", "head.weight", "blocks.0.attn.key.weight",
            "blocks.0.attn.query.bias", "blocks.0.attn.value.weight", "blocks.0.attn.proj.weight",
            "blocks.0.ln1.weight", "blocks.0.ln2.bias", "blocks.0.mlp.0.weight", "blocks.0.mlp.2.bias"} <= keys
    assert "head.bias" not in keys


def test_real_vqgan_layout_has_the_reference_tensor_count():
    with torch.device("meta"):
        sd = VQGAN(VQGANConfig()).state_dict()
        gpt = GPT(GPTConfig(), 16384).state_dict()
    assert len(sd) == 343
    assert len(sd) + len(gpt) + 12 == 552  # + one attn.mask buffer per block in the checkpoint
    assert sd["quantize.embedding.weight"].shape == (16384, 256)
    assert sd["decoder.up.4.attn.2.proj_out.weight"].shape == (512, 512, 1, 1)
    assert sd["encoder.down.3.downsample.conv.weight"].shape == (256, 256, 3, 3)
    assert sd["decoder.up.1.upsample.conv.weight"].shape == (128, 128, 3, 3)
    assert "decoder.up.0.upsample.conv.weight" not in sd and "encoder.down.4.downsample.conv.weight" not in sd
    assert sum(v.numel() for v in sd.values()) == 76_073_859


def test_quantizer_picks_the_nearest_code():
    torch.manual_seed(0)
    vq = tiny_model().first_stage_model.quantize
    z = torch.randn(2, 8, 4, 4)
    codes = vq.nearest_codes(z)
    flat = z.permute(0, 2, 3, 1).reshape(-1, 8)
    brute = torch.cdist(flat, vq.embedding.weight).argmin(1).view(2, 16)
    assert torch.equal(codes, brute)
    # A latent that *is* a codebook vector maps to that code, and lookup gives it back.
    exact = vq.lookup(torch.arange(16).view(1, 16), 4)
    assert torch.equal(vq.nearest_codes(exact), torch.arange(16).view(1, 16))


def test_encode_decode_shapes_and_round_trip_of_codes():
    torch.manual_seed(0)
    vqgan = tiny_model().first_stage_model
    with torch.no_grad():
        images = torch.rand(3, 3, 16, 16) * 2 - 1
        codes = vqgan.encode(images)
        assert codes.shape == (3, 16) and codes.dtype == torch.long
        assert int(codes.max()) < 128
        decoded = vqgan.decode(codes)
    assert decoded.shape == (3, 3, 16, 16)
    assert torch.isfinite(decoded).all()


def test_grid_sizes_follow_the_config():
    cfg = tiny_config()
    assert cfg.vqgan.grid_size == 4 and cfg.img_len == 16 and cfg.text_vocab_size == 21128
    assert VQGANConfig().grid_size == 16


def test_packed_linears_give_the_same_logits_and_tokens():
    from painter.models.packed import PackedLinear, onednn_available, pack_linears

    if not onednn_available():
        pytest.skip("this PyTorch has no oneDNN")
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=300, block_size=48, n_layer=3, n_head=4, n_embd=64)
    plain = GPT(cfg, img_vocab_size=100).eval()
    packed = GPT(cfg, img_vocab_size=100).eval()
    packed.load_state_dict(plain.state_dict())
    assert pack_linears(packed) == 3 * 6 + 1 and isinstance(packed.head, PackedLinear)
    seq = torch.randint(0, 300, (2, 48))
    with torch.inference_mode():
        a, b = plain(seq), packed(seq)
    torch.testing.assert_close(a, b, atol=1e-4, rtol=0)
    assert torch.equal(a.argmax(-1), b.argmax(-1))


def test_packing_is_skipped_without_onednn(monkeypatch):
    from painter.models import packed as packed_module

    monkeypatch.setattr(packed_module, "onednn_available", lambda: False)
    gpt = GPT(GPTConfig(vocab_size=50, block_size=8, n_layer=1, n_head=1, n_embd=8), 10)
    assert packed_module.pack_linears(gpt) == 0 and isinstance(gpt.head, torch.nn.Linear)
