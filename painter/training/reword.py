"""Captions reworded at each training step (``painter train --reword P``): with probability P a row's caption is
wrapped in everyday words (``REWORD_PREFIXES`` / ``REWORD_SUFFIXES``) drawn afresh each time it is read.

A small GPT that memorises its captions keys on their first wordpieces; people's prompts put other words
first (我想要一只猫, 生成一幅熊猫). Rewording shows the same picture behind many wordings, so the subject, not its
position, is what the model learns to read. It works on token ids (Chinese wordpieces are characters), so
encoded data (``.codes.pt``) is reworded as a TSV is, and it draws from torch's generator, whose state a
checkpoint keeps: a resumed run rewords exactly as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from painter.data.captions import REWORD_PREFIXES, REWORD_SUFFIXES
from painter.errors import PainterError
from painter.text import TextTokenizer


def reworded(ids: list[int], prefix: list[int], suffix: list[int], text_len: int, pad: int) -> list[int]:
    """A caption's ids (padded to ``text_len``) inside ``prefix`` and ``suffix``, padded again; when the
    result is too long the suffix goes first, then the caption's end, never the prefix's choice of start."""
    words = [i for i in ids if i != pad]
    out = prefix + words + suffix
    if len(out) > text_len:
        out = (prefix + words)[:text_len]
    return out + [pad] * (text_len - len(out))


@dataclass(frozen=True)
class Rewording:
    probability: float
    prefixes: tuple[tuple[int, ...], ...]  # offset ids, as the GPT reads them
    suffixes: tuple[tuple[int, ...], ...]
    text_len: int
    pad: int  # the offset [PAD] id

    @classmethod
    def from_tokenizer(cls, tokenizer: TextTokenizer, probability: float) -> "Rewording":
        if not 0.0 <= probability <= 1.0:
            raise PainterError(f"--reword must be a probability in [0, 1], got {probability}")
        encode = tokenizer.offset_ids
        return cls(probability, tuple(tuple(encode(w)) for w in REWORD_PREFIXES),
                   tuple(tuple(encode(w)) for w in REWORD_SUFFIXES), tokenizer.text_len, tokenizer.img_vocab_size)

    def __call__(self, text: torch.Tensor) -> torch.Tensor:
        """``text`` [B, text_len] with each row reworded with ``probability`` (an all-[PAD] row, the
        unconditional caption, stays empty). Prefix and suffix are each drawn from their list or left out."""
        if self.probability <= 0:
            return text
        chosen = torch.rand(len(text)) < self.probability
        pre = torch.randint(len(self.prefixes) + 1, (len(text),))
        suf = torch.randint(len(self.suffixes) + 1, (len(text),))
        out = text.clone()
        for row in chosen.nonzero().flatten().tolist():
            ids = text[row].tolist()
            if all(i == self.pad for i in ids):
                continue
            prefix = list(self.prefixes[pre[row] - 1]) if pre[row] else []
            suffix = list(self.suffixes[suf[row] - 1]) if suf[row] else []
            out[row] = torch.tensor(reworded(ids, prefix, suffix, self.text_len, self.pad))
        return out
