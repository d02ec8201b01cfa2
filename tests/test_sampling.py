import pytest
import torch

from bench.reference import reference_sample
from painter.errors import SamplingError
from painter.sampling import (SamplingConfig, image_seeds, next_token_probs, resolve_seed, sampling_settings,
                              top_k_filter, top_p_filter)

PROMPTS = ["红苹果", "一只俏皮的狗正跑过草地", "宽松T恤", "一片水域的景色以日落为背景"]



def reference_codes(painter, prompt: str, seed: int, top_k: int = 100, temperature: float = 1.0) -> torch.Tensor:
    ids = torch.tensor([painter.tokenize(prompt).ids])
    return reference_sample(painter.model.transformer, ids, painter.config.img_len, top_k=top_k,
                            temperature=temperature, seed=seed)[0]


def our_codes(painter, rows, top_k=None, temperature=1.0) -> torch.Tensor:
    sampling = SamplingConfig(top_k=top_k, temperature=temperature).validate(painter.config.img_vocab_size)
    return painter.codes([(painter.tokenize(p), s) for p, s in rows], sampling)


@pytest.mark.parametrize("top_k,temperature", [(100, 1.0), (5, 0.7), (128, 1.3)])
def test_sampler_gives_the_reference_tokens_at_batch_1(painter, top_k, temperature):
    for prompt, seed in [(PROMPTS[0], 0), (PROMPTS[1], 7), (PROMPTS[2], 1234)]:
        ours = our_codes(painter, [(prompt, seed)], top_k, temperature)[0]
        assert torch.equal(ours, reference_codes(painter, prompt, seed, top_k, temperature))


def test_sampler_gives_the_reference_tokens_in_mixed_batches(painter):
    rows = [(PROMPTS[0], 3), (PROMPTS[3], 11), (PROMPTS[0], 4), (PROMPTS[1], 3)]
    ours = our_codes(painter, rows)
    for (prompt, seed), row in zip(rows, ours):
        assert torch.equal(row, reference_codes(painter, prompt, seed))
    assert not torch.equal(ours[0], ours[2]) and not torch.equal(ours[0], ours[3])


def test_images_do_not_depend_on_batch_size(painter):
    one_by_one = [painter.generate(p, seed=5, num_images=3, batch_size=1)[0] for p in PROMPTS[:2]]
    together = painter.generate(PROMPTS[:2], seed=5, num_images=3, batch_size=8)
    odd = painter.generate(PROMPTS[:2], seed=5, num_images=3, batch_size=4)
    for a, b, c in zip(one_by_one, together, odd):
        assert [im.tobytes() for im in a] == [im.tobytes() for im in b] == [im.tobytes() for im in c]
    assert [im.info["seed"] for im in together[1]] == [5, 6, 7]
    # image j of a prompt is image 0 of seed + j
    assert painter.generate(PROMPTS[0], seed=6)[0][0].tobytes() == together[0][1].tobytes()


def test_random_seed_is_picked_and_reported(painter):
    images = painter.generate(PROMPTS[0], seed=-1, num_images=2)[0]
    s = images[0].info["seed"]
    assert s >= 0 and images[1].info["seed"] == s + 1
    assert painter.generate(PROMPTS[0], seed=s)[0][0].tobytes() == images[0].tobytes()


def test_top_k_keeps_ties_like_the_reference():
    logits = torch.tensor([[1.0, 3.0, 2.0, 2.0, 0.5]])
    out = top_k_filter(logits, 2)  # the 2nd largest is 2.0, shared by two entries: both stay
    assert torch.isinf(out).tolist() == [[True, False, False, False, True]]
    assert torch.equal(top_k_filter(logits, 5), logits)


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    assert (top_p_filter(probs, 0.7) > 0).tolist() == [[True, True, False, False]]
    assert (top_p_filter(probs, 0.8) > 0).tolist() == [[True, True, False, False]]
    assert (top_p_filter(probs, 0.81) > 0).tolist() == [[True, True, True, False]]
    assert (top_p_filter(probs, 0.01) > 0).tolist() == [[True, False, False, False]]


def test_top_p_changes_sampling_and_restricts_to_the_nucleus(painter):
    sampling = SamplingConfig(top_p=0.3).validate(128)
    logits = torch.randn(4, 128, generator=torch.Generator().manual_seed(0))
    probs = next_token_probs(logits, sampling)
    full = torch.softmax(logits, -1)
    kept = probs > 0
    assert (kept.sum(-1) < 128).all()
    for row in range(4):  # every kept code is at least as likely as every dropped one
        assert full[row][kept[row]].min() >= full[row][~kept[row]].max()


@pytest.mark.parametrize("kwargs,match", [
    ({"top_k": 0}, "top_k"), ({"top_k": 129}, "top_k"), ({"top_k": 2.5}, "top_k"),
    ({"temperature": 0}, "temperature"), ({"temperature": -1}, "temperature"),
    ({"top_p": 0}, "top_p"), ({"top_p": 1.5}, "top_p"),
])
def test_bad_sampling_values_are_refused(kwargs, match):
    with pytest.raises(SamplingError, match=match):
        SamplingConfig(**kwargs).validate(128)


def test_default_top_k_is_the_references_capped_to_the_codebook():
    assert SamplingConfig().validate(16384).top_k == 100
    assert SamplingConfig().validate(64).top_k == 64


def test_bad_seeds_and_image_counts():
    with pytest.raises(SamplingError, match="number of images"):
        image_seeds(0, 0)
    with pytest.raises(SamplingError, match="seed"):
        resolve_seed(-5)
    with pytest.raises(SamplingError, match="seed"):
        resolve_seed("3")
    assert image_seeds(10, 3) == [10, 11, 12]


def test_generate_refuses_bad_input(painter):
    from painter.errors import PromptError
    with pytest.raises(PromptError):
        painter.generate([""])
    with pytest.raises(SamplingError):
        painter.generate("红苹果", num_images=0)
    with pytest.raises(SamplingError):
        painter.generate("红苹果", temperature=0)


def test_sampling_settings_are_typed_and_checked():
    assert sampling_settings({"top_k": 10.0, "temperature": 1}) == {"top_k": 10, "temperature": 1.0}
    assert type(sampling_settings({"top_k": 10.0})["top_k"]) is int
    assert type(sampling_settings({"temperature": 1})["temperature"]) is float
    assert sampling_settings({}) == {}


@pytest.mark.parametrize("data,match", [
    ({"steps": 3}, "unknown sampling setting 'steps'"), ({"top_k": 2.5}, "top_k must be a whole number"),
    ({"top_k": True}, "top_k must be a whole number"), ({"temperature": "0.3"}, "temperature must be a number"),
    ({"temperature": 0}, "temperature must be a number from 0.05 to 2.0"), ({"top_p": 2}, "top_p"),
    ({"top_k": 129}, "codebook size 128"), ({"guidance_scale": 99}, "guidance_scale"), ([1, 2], "JSON object"),
])
def test_bad_sampling_settings_are_refused(data, match):
    with pytest.raises(SamplingError, match=match):
        sampling_settings(data, codebook_size=128)


def test_updated_replaces_only_the_settings_given():
    recommended = SamplingConfig(top_k=10, temperature=0.2)
    assert recommended.updated(top_k=None, top_p=None, temperature=None) == recommended
    assert recommended.updated(temperature=1.0, top_p=0.9) == SamplingConfig(top_k=10, top_p=0.9, temperature=1.0)


def test_detail_settings_draw_the_codes_from_detail_from_on(painter):
    """The first ``detail_from`` codes are drawn with the plain settings (greedy here, so the greedy codes), the
    rest with the detail ones; the settings check names a bad detail value; a model's config may carry them and
    a caller's own top-k leaves them in place."""
    greedy = our_codes(painter, [(PROMPTS[0], 3)], top_k=1)[0]
    detail = SamplingConfig(top_k=1, detail_from=6, detail_top_k=100, detail_temperature=1.3)
    mixed = painter.codes([(painter.tokenize(PROMPTS[0]), 3)], detail.validate(painter.config.img_vocab_size))[0]
    assert len(mixed) == 16 and torch.equal(mixed[:6], greedy[:6]) and not torch.equal(mixed[6:], greedy[6:])
    assert detail.at(5) is detail and (detail.at(6).top_k, detail.at(6).temperature) == (100, 1.3)
    assert SamplingConfig(top_k=7, detail_from=5, detail_temperature=1.5).at(5).top_k == 7, "top-k kept"
    for bad, match in ((dict(detail_from=0), "detail_from"), (dict(detail_top_k=5), "need detail_from"),
                       (dict(detail_from=9, detail_temperature=9.0), "detail settings .* temperature")):
        with pytest.raises(SamplingError, match=match):
            SamplingConfig(**bad).validate(1024)
    settings = sampling_settings({"top_k": 20, "detail_from": 160, "detail_top_k": 50, "detail_temperature": 1})
    assert SamplingConfig(**settings).updated(top_k=5).at(200).top_k == 50
    with pytest.raises(SamplingError, match="detail_from must be a whole number"):
        sampling_settings({"detail_from": 1.5})
