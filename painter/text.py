"""The reference's text tokenization: Chinese BERT WordPiece, lower-cased, no [CLS]/[SEP], cut to 32
wordpieces, right-padded with [PAD], then shifted past the image codes.

``tokenizers``' BertWordPieceTokenizer reproduces BERT's basic + wordpiece tokenizer exactly (Chinese
characters split one by one, accents stripped with lower-casing) and is far lighter than ``transformers``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Collection, Iterable, Sequence

from tokenizers import BertWordPieceTokenizer

from painter.errors import CheckpointError, PromptError

PAD_ID = 0
PAD_TOKEN = "[PAD]"
UNK_TOKEN = "[UNK]"
# Prompts longer than this are refused everywhere (the studio, its API, predict rows, Painter): far above the 32
# wordpieces a model reads, far below what could tie up a server (a megabyte per request was accepted once).
MAX_PROMPT_CHARS = 1000


@dataclass(frozen=True)
class TokenizedPrompt:
    """Token ids ready for the GPT, plus what a user should be told about the cut."""

    ids: list[int]  # text_len ids, already offset by the image vocabulary size
    pieces: list[str]  # the wordpieces that were kept (no padding)
    dropped: int  # wordpieces lost to the length cut
    unknown: int  # kept wordpieces that the vocabulary did not know
    ignored: tuple[str, ...] = ()  # the prompt's text of wordpieces the model never learnt, left out (TextTokenizer)

    @property
    def used_text(self) -> str:
        """The part of the prompt the model actually sees, in wordpieces joined back together."""
        return "".join(p[2:] if p.startswith("##") else p for p in self.pieces)


def _check_vocab(vocab_file: Path) -> None:
    """A readable BERT vocabulary: UTF-8 text, one piece a line, with the [PAD] and [UNK] pieces the
    prompt encoding relies on (the tokenizer library fails on anything else with an unhelpful panic)."""
    try:
        lines = vocab_file.read_bytes().decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise CheckpointError(f"vocabulary file {vocab_file} is not UTF-8 text (byte {exc.start}); it should be the "
                              "model's vocab.txt (Chinese BERT, 21,128 lines)") from exc
    except OSError as exc:
        raise CheckpointError(f"vocabulary file {vocab_file} cannot be read: {exc.strerror or exc}") from exc
    if not any(line.strip() for line in lines):
        raise CheckpointError(f"vocabulary file {vocab_file} is empty")
    missing = {PAD_TOKEN, UNK_TOKEN} - {line.strip() for line in lines}
    if missing or lines[PAD_ID].strip() != PAD_TOKEN:
        raise CheckpointError(f"vocabulary file {vocab_file} is not a BERT vocabulary: it lacks "
                              f"{', '.join(sorted(missing)) or f'{PAD_TOKEN} on line {PAD_ID + 1}'}")


def adjacent_pairs(rows: Iterable[Sequence[int]]) -> set[tuple[int, int]]:
    """The wordpiece pairs that stand side by side in these captions' ids (padding excluded), and (w, [PAD])
    for a caption that is the one wordpiece w: what ``TextTokenizer``'s ``pairs`` are made of."""
    pairs = {(a, b) for ids in rows for a, b in zip(ids, ids[1:]) if PAD_ID not in (a, b)}
    alone = {ids[0] for ids in rows if ids and ids[0] != PAD_ID and (len(ids) == 1 or ids[1] == PAD_ID)}
    return pairs | {(w, PAD_ID) for w in alone}


def read_positions(ids: Sequence[int], learnt: Collection[int], pairs: Collection[tuple[int, int]]) -> list[bool]:
    """Which of a prompt's wordpieces reach the model. A wordpiece its captions never used is left out (its
    embedding never trained). With ``pairs`` (side by side in some caption), so is a learnt one that stands
    beside none of its neighbours as in a caption and is no caption by itself: the model learnt it only inside
    other words, which it pulls toward (我想要一只猫 reaches a model that learnt 一只猫 as 一只猫, though it
    learnt 想 from 想一想 and 要 from 您要什么; 日落时的大海 reaches bundled-large without 海, which its captions
    had only in 海绵, 海豹 and 海豚). A prompt with no learnt pair at all is read piece by piece."""
    known = [not learnt or i in learnt for i in ids]
    if not pairs:
        return known
    n = len(ids)
    paired = [known[k] and ((ids[k], PAD_ID) in pairs or (k > 0 and (ids[k - 1], ids[k]) in pairs)
                            or (k + 1 < n and (ids[k], ids[k + 1]) in pairs)) for k in range(n)]
    return paired if any(paired) else known


class TextTokenizer:
    """Prompt text -> the GPT's text tokens. With ``learnt`` (a model's ``learnt_text``: the wordpiece ids its
    training captions used), other wordpieces are left out: their embeddings never trained, and a small model
    that memorised its captions reads such random vectors as another subject (bundled-large painted 请画一张X
    right half as often as 画一张X). With ``pairs`` (its ``learnt_pairs``) also learnt wordpieces in an order no
    caption had (``read_positions``)."""

    def __init__(self, vocab_file: str | Path, text_len: int = 32, img_vocab_size: int = 16384,
                 learnt: Collection[int] = (), pairs: Collection[tuple[int, int]] = ()):
        vocab_file = Path(vocab_file)
        if not vocab_file.is_file():
            raise CheckpointError(f"vocabulary file {vocab_file} is missing; every model directory needs its "
                                  "vocab.txt (the 21,128-line Chinese BERT vocabulary)")
        _check_vocab(vocab_file)
        self._tok = BertWordPieceTokenizer(str(vocab_file), lowercase=True)
        self.vocab_size = self._tok.get_vocab_size()
        self.text_len = text_len
        self.img_vocab_size = img_vocab_size
        self.learnt = frozenset(learnt)
        self.pairs = frozenset(pairs)

    def __call__(self, text: str) -> TokenizedPrompt:
        if not isinstance(text, str) or not text.strip():
            raise PromptError("the prompt is empty: describe the picture in a few words, e.g. 红苹果")
        if len(text) > MAX_PROMPT_CHARS:
            raise PromptError(f"the prompt has {len(text):,} characters; at most {MAX_PROMPT_CHARS:,} are taken (the "
                              f"model reads its first {self.text_len} wordpieces)")
        enc = self._tok.encode(text, add_special_tokens=False)
        if not enc.ids:
            raise PromptError(f"the prompt {text!r} has no characters the model can read")
        ids, pieces, ignored = enc.ids, enc.tokens, ()
        if self.learnt or self.pairs:
            keep = read_positions(ids, self.learnt, self.pairs)
            ignored = tuple(text[a:b] for k, (a, b) in zip(keep, enc.offsets) if not k)
            pieces = [p for k, p in zip(keep, pieces) if k]
            ids = [i for k, i in zip(keep, ids) if k]
            if not ids:
                raise PromptError(f"none of the characters of {text!r} appear in this model's training captions, "
                                  "so it cannot paint them; try the name of a thing, e.g. 红苹果")
        kept_ids, kept_pieces = ids[: self.text_len], pieces[: self.text_len]
        unknown = sum(p == UNK_TOKEN for p in kept_pieces)
        if unknown == len(kept_pieces):
            raise PromptError(f"none of the characters of {text!r} are in the model's vocabulary")
        padded = kept_ids + [PAD_ID] * (self.text_len - len(kept_ids))
        return TokenizedPrompt(
            ids=[i + self.img_vocab_size for i in padded],
            pieces=kept_pieces,
            dropped=len(ids) - len(kept_ids),
            unknown=unknown,
            ignored=ignored,
        )

    def learnt_ids(self, captions: Iterable[str]) -> list[int]:
        """The wordpiece ids these captions use within the first ``text_len``, sorted: what a model trained on
        them has learnt (a wordpiece past the cut never reached it, as in the trainer's own union)."""
        return sorted({i for ids in self._caption_ids(captions) for i in ids})

    def learnt_pairs(self, captions: Iterable[str]) -> list[tuple[int, int]]:
        """The wordpiece pairs side by side in these captions within the first ``text_len`` (``adjacent_pairs``),
        sorted: the word order a model trained on them has learnt."""
        return sorted(adjacent_pairs(self._caption_ids(captions)))

    def _caption_ids(self, captions: Iterable[str]) -> list[list[int]]:
        return [self._tok.encode(c, add_special_tokens=False).ids[: self.text_len] for c in captions]

    def reading_all(self) -> "TextTokenizer":
        """This tokenizer without its ``learnt`` list: for checks that need some text whatever the model
        learnt (the fast modes' numerics), not for prompts."""
        unfiltered = copy.copy(self)
        unfiltered.learnt = unfiltered.pairs = frozenset()
        return unfiltered

    def offset_ids(self, text: str) -> list[int]:
        """The wordpieces of ``text`` as the GPT reads them (past the image codes), neither cut nor padded."""
        return [i + self.img_vocab_size for i in self._tok.encode(text, add_special_tokens=False).ids]

    def unconditional(self) -> list[int]:
        """The all-[PAD] caption that caption dropout trains and guidance samples against."""
        return [PAD_ID + self.img_vocab_size] * self.text_len
