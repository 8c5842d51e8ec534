"""Text to token ids and back, in three modes, vectorised: a text of any size is read chunk by chunk.

`split` and `book_clean` say what each mode does, one Python string at a time; `Encoder` does the same
over numpy arrays of code points (a lookup table maps each code point to its id), and keeps the state a
token or a run of non-letters needs when it crosses from one chunk to the next. The tests hold the two
equal on any text cut anywhere. Ids come out compact: uint8 when the vocabulary has at most 256 tokens.
"""
from __future__ import annotations

import collections
import re
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import torch

UNK = "<unk>"
MODES = ("book", "chars", "words")
LETTERS = "abcdefghijklmnopqrstuvwxyz"
SPACE = ord(" ")
CODE_POINTS = 0x110000          # every Unicode code point: the size of a lookup table


def book_clean(text: str) -> str:
    """The book's preprocessing: every run of non-letters becomes one space, lowercase.

    The book applies this per line and concatenates the lines with no separator ("speak of himwas");
    we apply it to the whole text, so a line break is a space like any other non-letter.
    """
    return re.sub("[^A-Za-z]+", " ", text).strip().lower()


def code_points(text: str) -> np.ndarray:
    """The code points of `text` as uint32 (a lone surrogate, which only a pasted string can hold, kept)."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")


def ids_dtype(vocab_size: int) -> np.dtype:
    """The smallest integer dtype that holds every id and that torch indexes and converts everywhere
    (torch's uint16 and uint32 do not)."""
    return np.dtype(np.uint8 if vocab_size <= 256 else np.int16 if vocab_size <= 32768 else np.int32)


@dataclass
class Tokenizer:
    """Maps text to ids and back. `tokens[0]` is always `<unk>`; the rest in the book's frequency order.

    Modes: "book" (28 tokens: `<unk>`, space, a-z after `book_clean`), "chars" (every character
    kept, case and punctuation included), "words" (`book_clean`, then split on spaces).
    """
    mode: str
    tokens: list[str]

    def __post_init__(self):
        check_tokens(self.mode, self.tokens)
        self.index = {token: i for i, token in enumerate(self.tokens)}
        self._table = None

    @classmethod
    def fit(cls, text: str, mode: str = "book", min_freq: int = 1) -> "Tokenizer":
        """Build the vocabulary of `text` like the book's `Vocab`: by frequency, ties by first occurrence."""
        return cls.fit_chunks([text], mode, min_freq)

    @classmethod
    def fit_chunks(cls, chunks: Iterable[str], mode: str = "book", min_freq: int = 1) -> "Tokenizer":
        """`fit` over a text given in pieces (a file read chunk by chunk), in memory bounded by the vocabulary."""
        normalizer = Normalizer(mode)
        if mode == "words":
            counts = collections.Counter()   # keeps first occurrences in order, which the stable sort keeps
            for chunk in chunks:
                counts.update(normalizer.words(chunk))
            counts.update(normalizer.words("", final=True))
        else:
            total, seen = np.zeros(CODE_POINTS, dtype=np.int64), {}   # seen: code point -> (chunk, position)
            for n, chunk in enumerate(chunks):
                symbols = normalizer.symbols(code_points(chunk))
                chunk_counts = np.bincount(symbols, minlength=CODE_POINTS)
                if ((chunk_counts > 0) & (total == 0)).any():          # a symbol first seen in this chunk
                    distinct, position = np.unique(symbols, return_index=True)
                    seen.update({int(cp): (n, int(i)) for cp, i in zip(distinct, position) if total[cp] == 0})
                total += chunk_counts
            first = sorted(seen, key=seen.get)
            counts = collections.Counter({chr(cp): int(total[cp]) for cp in first})
        if mode == "book":  # every letter has a slot, so any English text encodes with 28 tokens
            counts.update({c: 0 for c in " " + LETTERS if c not in counts})
        ranked = sorted(counts.items(), key=lambda kv: kv[1], reverse=True)
        return cls(mode, [UNK] + [t for t, n in ranked if n >= min_freq or mode == "book"])

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def dtype(self) -> np.dtype:
        """What its ids are stored as (numpy's; `torch.from_numpy` keeps it)."""
        return ids_dtype(len(self))

    def normalize(self, text: str) -> str:
        """The text as the model sees it (book and words modes lowercase and squash non-letters)."""
        return text if self.mode == "chars" else book_clean(text)

    def split(self, text: str) -> list[str]:
        """The tokens of `text`, as strings: the readable definition that `Encoder` computes fast."""
        text = self.normalize(text)
        return text.split() if self.mode == "words" else list(text)

    def table(self) -> np.ndarray:
        """Code point -> id (0 for `<unk>`), for the character modes."""
        if self._table is None:
            table = np.zeros(CODE_POINTS, dtype=self.dtype)
            for i, token in enumerate(self.tokens[1:], start=1):
                table[ord(token)] = i
            self._table = table
        return self._table

    def ids(self, text: str) -> torch.Tensor:
        """Ids of `text` as a compact 1-D tensor; anything outside the vocabulary becomes `<unk>` (0)."""
        encoder = Encoder(self)
        return torch.from_numpy(np.concatenate([encoder.feed(text), encoder.finish()]))

    def encode(self, text: str) -> list[int]:
        """Ids of `text`; anything outside the vocabulary becomes `<unk>` (0); see `unknown`."""
        return self.ids(text).tolist()

    def unknown(self, text: str) -> list[str]:
        """The distinct tokens of `text` that are not in the vocabulary, in order of first appearance."""
        encoder = Encoder(self)
        encoder.feed(text)
        encoder.finish()
        return list(encoder.unknown)

    def replaced(self, text: str) -> list[str]:
        """The distinct characters of `text` that book and words modes read as a space (whitespace aside)."""
        encoder = Encoder(self)
        encoder.feed(text)
        return list(encoder.replaced)

    def decode(self, ids) -> str:
        sep = " " if self.mode == "words" else ""
        return sep.join(self.tokens[i] for i in (ids.tolist() if torch.is_tensor(ids) else ids))

    def to_dict(self) -> dict:
        return {"mode": self.mode, "tokens": self.tokens}

    @classmethod
    def from_dict(cls, d: dict) -> "Tokenizer":
        if not isinstance(d, dict) or set(d) != {"mode", "tokens"}:
            raise ValueError("a tokenizer is {\"mode\": ..., \"tokens\": [...]}")
        if not isinstance(d["tokens"], list):
            raise ValueError("the tokenizer's tokens must be a list of strings")
        return cls(d["mode"], list(d["tokens"]))


def check_tokens(mode, tokens) -> None:
    """A vocabulary that every mode can encode and decode: distinct strings, `<unk>` first, and in the
    character modes one character per token (a-z and space in book mode); else a ValueError saying which."""
    if mode not in MODES:
        raise ValueError(f"unknown tokenizer mode {mode!r}; choose one of {', '.join(MODES)}")
    if not tokens or tokens[0] != UNK:
        raise ValueError(f"the first token must be {UNK!r}")
    for i, token in enumerate(tokens[1:], start=1):
        if not isinstance(token, str):
            raise ValueError(f"token {i} is {token!r}, not a string")
        if mode == "words" and (not token or any(c.isspace() for c in token)):
            raise ValueError(f"token {i} ({token!r}) is not a word")
        if mode != "words" and len(token) != 1:
            raise ValueError(f"token {i} ({token!r}) is not one character, as {mode} mode needs")
        if mode == "book" and token not in " " + LETTERS:
            raise ValueError(f"token {i} ({token!r}) is not a-z or space, as book mode needs")
    if len(set(tokens)) != len(tokens):
        raise ValueError("the tokens are not distinct")


# ---------------------------------------------------------------------------- chunk by chunk

class Normalizer:
    """`Tokenizer.normalize` over a text that arrives in chunks: each chunk's symbols as if the text were whole.

    In book and words modes a run of non-letters may span chunks: it becomes one space, and only once a
    letter follows it (`book_clean` strips the text's ends). In words mode a word may span chunks too.
    """

    def __init__(self, mode: str):
        self.mode = mode
        self.after_letter = False     # the last character seen was a letter
        self.pending_space = False    # a run of non-letters followed a letter, and no letter has come since
        self.partial_word = ""        # words mode: the letters at the end of the last chunk

    def symbols(self, cps: np.ndarray) -> np.ndarray:
        """Code points (uint32) as the model reads them: unchanged in chars mode; else a-z and single spaces."""
        if self.mode == "chars" or len(cps) == 0:
            return cps
        lower = cps | 0x20
        letter = (lower >= ord("a")) & (lower <= ord("z"))
        previous_letter = np.empty_like(letter)
        previous_letter[0], previous_letter[1:] = self.after_letter, letter[:-1]
        keep = letter | previous_letter                       # a non-letter survives only right after a letter
        out = np.where(letter, lower, SPACE).astype(np.uint32)[keep]
        self.after_letter = bool(letter[-1])
        if len(out) == 0:
            return out
        if self.pending_space:                                # out starts with a letter: the space goes before it
            out = np.concatenate([np.array([SPACE], dtype=np.uint32), out])
        self.pending_space = bool(out[-1] == SPACE)           # held back: the text may end here
        return out[:-1] if self.pending_space else out

    def words(self, chunk: str, final: bool = False) -> list[str]:
        """The words completed by this chunk (and, when `final`, the last one)."""
        text = self.partial_word + symbols_text(self.symbols(code_points(chunk)))
        words = text.split(" ")
        self.partial_word = "" if final or self.pending_space else words.pop()
        return [w for w in words if w]


def symbols_text(cps: np.ndarray) -> str:
    """The inverse of `code_points`."""
    return cps.astype("<u4").tobytes().decode("utf-32-le", "surrogatepass")


class Encoder:
    """Encodes a text chunk by chunk exactly as `Tokenizer.ids` encodes it whole, and collects what the
    vocabulary lacks: `unknown` (tokens read as `<unk>`) and `replaced` (characters read as a space)."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self.normalizer = Normalizer(tokenizer.mode)
        self.unknown: dict[str, None] = {}
        self.replaced: dict[str, None] = {}
        self.dtype = tokenizer.dtype

    def feed(self, chunk: str) -> np.ndarray:
        """The ids of the tokens this chunk completes."""
        t = self.tokenizer
        cps = code_points(chunk)
        if t.mode != "chars":
            lower = cps | 0x20
            other = (lower < ord("a")) | (lower > ord("z"))
            self._note(self.replaced, cps[other], skip=str.isspace)
        if t.mode == "words":
            return self._words(self.normalizer.words(chunk))
        symbols = self.normalizer.symbols(cps)
        ids = t.table()[symbols]
        self._note(self.unknown, symbols[ids == 0])
        return ids

    def finish(self) -> np.ndarray:
        """The ids of a word the last chunk left open (words mode); nothing in the other modes."""
        if self.tokenizer.mode == "words":
            return self._words(self.normalizer.words("", final=True))
        return np.empty(0, dtype=self.dtype)

    def _words(self, words: list[str]) -> np.ndarray:
        index = self.tokenizer.index
        ids = np.fromiter((index.get(w, 0) for w in words), dtype=self.dtype, count=len(words))
        self.unknown.update((w, None) for w in words if w not in index)
        return ids

    def _note(self, found: dict, cps: np.ndarray, skip=None) -> None:
        """Add the distinct characters of `cps` to `found`, in order of first appearance."""
        if len(cps) == 0:
            return
        distinct, first = np.unique(cps, return_index=True)
        for cp in distinct[np.argsort(first)]:
            c = chr(cp)
            if not (skip and skip(c)):
                found.setdefault(c, None)
