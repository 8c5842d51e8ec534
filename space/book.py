"""The book's text as the models read it: the training split (to spot memorised spans) and a held-out passage.

The Time Machine comes from `zoo.data` ($ZOO_DATA, the local cache, or the book's URL). A start-up with no
local copy and no network goes on without it: the page then says that it cannot mark memorised spans.
"""
from __future__ import annotations

import os

from zoo.data import (
    BOOK_URL,
    DATA_ENV,
    Corpus,
    DataError,
    Tokenizer,
    load_corpus,
    timemachine_path,
)
from zoo.hub import hub_reachable

SPAN = 20   # a copy of at least this many characters counts as memorised


def load_book(tokenizer: Tokenizer) -> tuple[Corpus | None, str]:
    """The corpus in `tokenizer`'s vocabulary, or None and why; downloads only when the URL answers at once."""
    try:
        try:
            path = timemachine_path(download=False)
        except DataError:
            if os.environ.get(DATA_ENV) or not hub_reachable(BOOK_URL):
                raise
            path = timemachine_path(download=True)
        return load_corpus(path, tokenizer=tokenizer), ""
    except DataError as e:
        return None, str(e)


def held_out_passage(corpus: Corpus, tokenizer: Tokenizer, chars: int = 700) -> str:
    """The start of the test split (text no model trained or validated on), cut at a word boundary."""
    text = tokenizer.decode(corpus.splits.test[:chars + 50])
    return text[:text.rfind(" ", 0, chars)].strip()


class Memorised:
    """Every `span`-character substring of a training text, to find where a sample copies it verbatim."""

    def __init__(self, text: str, span: int = SPAN):
        self.span = span
        self.seen = {text[i:i + span] for i in range(len(text) - span + 1)}

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Maximal [start, end) ranges of `text` covered by substrings seen in training, in order."""
        out: list[tuple[int, int]] = []
        for i in range(len(text) - self.span + 1):
            if text[i:i + self.span] in self.seen:
                if out and i <= out[-1][1]:
                    out[-1] = (out[-1][0], i + self.span)
                else:
                    out.append((i, i + self.span))
        return out
