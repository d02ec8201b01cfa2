import pytest

from painter.errors import CheckpointError, PromptError
from painter.text import TextTokenizer
from conftest import VOCAB

REFERENCE_VECTOR = [23983, 23707, 20101, 18750, 17175, 18146, 21090, 24408, 17068, 19725, 17428, 21076, 19577,
                    19833, 21657]


@pytest.fixture(scope="module")
def tok():
    return TextTokenizer(VOCAB)


def test_reference_test_vector(tok):
    t = tok("风阁水帘今在眼，且来先看早梅红")
    assert t.ids[:15] == REFERENCE_VECTOR
    assert t.ids[15:] == [16384] * 17  # [PAD]=0 shifted by the image vocabulary
    assert len(t.ids) == 32 and t.dropped == 0 and t.unknown == 0


def test_lowercase_accents_and_no_special_tokens(tok):
    t = tok("Café ABC")
    assert t.pieces == ["cafe", "abc"]
    assert 101 + 16384 not in t.ids and 102 + 16384 not in t.ids  # no [CLS]/[SEP]


def test_long_prompt_is_cut_and_reported(tok):
    t = tok("红" * 40)
    assert len(t.ids) == 32 and t.dropped == 8 and t.used_text == "红" * 32


def test_unknown_characters_are_counted(tok):
    t = tok("红苹果😀")
    assert t.unknown == 1 and t.pieces[-1] == "[UNK]"


@pytest.mark.parametrize("bad", ["", "   ", "\n\t"])
def test_empty_prompt_is_an_error(tok, bad):
    with pytest.raises(PromptError, match="empty"):
        tok(bad)


def test_prompt_of_only_unknown_characters_is_an_error(tok):
    with pytest.raises(PromptError, match="vocabulary"):
        tok("😀😀😀")


def test_missing_vocab_file(tmp_path):
    with pytest.raises(CheckpointError, match="vocab.txt"):
        TextTokenizer(tmp_path / "vocab.txt")


def test_a_prompt_far_longer_than_any_model_reads_is_refused(tok):
    """The bound every entry point shares: 1,000 characters kept (the model reads 32 wordpieces of them)."""
    from painter.text import MAX_PROMPT_CHARS

    assert tok("猫" * MAX_PROMPT_CHARS).dropped > 0
    with pytest.raises(PromptError, match="at most 1,000"):
        tok("猫" * (MAX_PROMPT_CHARS + 1))


def test_word_order_a_model_never_learnt_is_left_out_as_its_unlearnt_characters_are():
    """With a model's learnt pairs, a learnt character beside none of its neighbours as in a caption goes too
    (想 of 想一想 and 要 of 您要什么 in 我想要一只猫); a one-wordpiece caption (猫) stands by itself; a prompt
    with no learnt pair is read piece by piece as before; the pairs come from the captions' first text_len."""
    from painter.text import PAD_ID, adjacent_pairs, read_positions

    captions = ["一只猫", "想一想", "您要什么", "猫"]
    full = TextTokenizer(VOCAB)
    learnt, pairs = full.learnt_ids(captions), full.learnt_pairs(captions)
    cat, think = (full.offset_ids(w) for w in ("猫", "想"))
    assert (cat[0] - 16384, PAD_ID) in pairs and (think[0] - 16384, PAD_ID) not in pairs
    tok = TextTokenizer(VOCAB, learnt=learnt, pairs=pairs)
    asked = tok("我想要一只猫")
    assert asked.ids == full("一只猫").ids and asked.ignored == ("我", "想", "要")
    assert tok("我想要猫").used_text == "猫", "a caption of one wordpiece stands by itself"
    assert tok("要想").used_text == "要想" and tok("要想").ignored == (), "no learnt pair: read piece by piece"
    assert TextTokenizer(VOCAB, learnt=learnt)("我想要一只猫").used_text == "想要一只猫"
    assert TextTokenizer(VOCAB, text_len=2).learnt_pairs(["一只猫"]) == full.learnt_pairs(["一只"])
    assert read_positions([5, 6, 7, 8], learnt=(), pairs={(6, 7)}) == [False, True, True, False]
    assert read_positions([5, 6, 7], learnt=(), pairs={(9, 9)}) == [True, True, True]
    assert read_positions([5, 6, 7, 8], learnt={5, 6, 7}, pairs={(6, 7), (5, PAD_ID)}) == [True, True, True, False]
    assert adjacent_pairs([[5, 6, PAD_ID, PAD_ID], [7, PAD_ID], [PAD_ID, PAD_ID], [8]]) == {
        (5, 6), (7, PAD_ID), (8, PAD_ID)}
    assert tok.reading_all()("我想要一只猫").ids == full("我想要一只猫").ids


def test_a_model_that_learnt_some_wordpieces_reads_only_those():
    """With a model's learnt wordpieces, the others are left out (their embeddings never trained) and named."""
    full = TextTokenizer(VOCAB)
    learnt = full.learnt_ids(["画一只猫", "红苹果", "一只猫"])
    assert learnt == sorted(i - 16384 for i in full("画一只猫红苹果").ids[:7])
    assert TextTokenizer(VOCAB, text_len=2).learnt_ids(["画一只猫"]) == sorted(i - 16384 for i in full("画一").ids[:2])
    tok = TextTokenizer(VOCAB, learnt=learnt)
    asked = tok("请画一只猫")
    assert asked.ids == tok("画一只猫").ids == full("画一只猫").ids
    assert asked.ignored == ("请",) and asked.used_text == "画一只猫" and asked.dropped == 0
    assert tok("画一只猫😀").ignored == ("😀",), "the prompt's own text, not [UNK]"
    assert full("请画一只猫").ignored == () and full("请画一只猫").ids != full("画一只猫").ids
    with pytest.raises(PromptError, match="training captions"):
        tok("我想要")
