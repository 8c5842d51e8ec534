"""Text in, token ids out: the Time Machine corpus, three tokenizers, splits and the book's two batchings.

Data flows one way: a text file -> `Tokenizer` -> a 1-D tensor of ids -> `split` -> batches of (B, T) ids.
"""
from __future__ import annotations

import collections
import hashlib
import os
import re
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch

# The book's own download location and checksum (d2l.DATA_HUB['time_machine']).
BOOK_URL = "http://d2l-data.s3-accelerate.amazonaws.com/timemachine.txt"
BOOK_SHA1 = "090b5e7e70c295757f55df93cb0a180b9691891a"
DATA_ENV = "ZOO_DATA"  # path to a local copy of the book's timemachine.txt (checksum verified)
UNK = "<unk>"
MODES = ("book", "chars", "words")
LETTERS = "abcdefghijklmnopqrstuvwxyz"


class DataError(RuntimeError):
    """A corpus that cannot be found, read or verified; the message says what to do."""


# ---------------------------------------------------------------------------- corpus files

def cache_dir() -> Path:
    """Where downloads are kept: $XDG_CACHE_HOME/rnn-zoo (default ~/.cache/rnn-zoo)."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "rnn-zoo"


def sha1_of(path: Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def timemachine_path(download: bool = True) -> Path:
    """The verified Time Machine file: $ZOO_DATA, else the cache, else the book's URL into the cache."""
    if os.environ.get(DATA_ENV):
        path = Path(os.environ[DATA_ENV]).expanduser()
        if not path.is_file():
            raise DataError(f"{DATA_ENV}={path} does not exist; point it at a copy of timemachine.txt")
        if sha1_of(path) != BOOK_SHA1:
            raise DataError(f"{path} is not the book's timemachine.txt (sha1 mismatch); "
                            f"unset {DATA_ENV} or use --data for other corpora")
        return path
    path = cache_dir() / "timemachine.txt"
    if path.is_file() and sha1_of(path) == BOOK_SHA1:
        return path
    if not download:
        raise DataError(f"no verified timemachine.txt in {path.parent}; pass --data PATH or set {DATA_ENV}")
    return _download(BOOK_URL, path, BOOK_SHA1)


def _download(url: str, path: Path, sha1: str) -> Path:
    """The book's d2l.download, with an atomic write and a checksum that is enforced, not just compared."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".part")
    try:
        with urllib.request.urlopen(url, timeout=30) as response, open(partial, "wb") as f:
            f.write(response.read())
    except OSError as e:
        partial.unlink(missing_ok=True)
        raise DataError(f"cannot download {url} ({e}); pass --data PATH or set {DATA_ENV} "
                        f"to a local copy of timemachine.txt") from None
    if sha1_of(partial) != sha1:
        partial.unlink()
        raise DataError(f"{url} did not match sha1 {sha1}; pass --data PATH to a good copy")
    os.replace(partial, path)
    return path


def read_text(path: str | os.PathLike | None = None) -> str:
    """Any UTF-8 text file, or the Time Machine when `path` is None."""
    path = timemachine_path() if path is None else Path(path).expanduser()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"no such file: {path}") from None
    except IsADirectoryError:
        raise DataError(f"{path} is a directory, not a text file") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text (byte {e.start}); convert it first") from None
    if not text.strip():
        raise DataError(f"{path} is empty")
    return text


# ---------------------------------------------------------------------------- tokenizers

def book_clean(text: str) -> str:
    """The book's preprocessing: every run of non-letters becomes one space, lowercase.

    The book applies this per line and concatenates the lines with no separator ("speak of himwas");
    we apply it to the whole text, so a line break is a space like any other non-letter.
    """
    return re.sub("[^A-Za-z]+", " ", text).strip().lower()


@dataclass
class Tokenizer:
    """Maps text to ids and back. `tokens[0]` is always `<unk>`; the rest in the book's frequency order.

    Modes: "book" (28 tokens: `<unk>`, space, a-z after `book_clean`), "chars" (every character
    kept, case and punctuation included), "words" (`book_clean`, then split on spaces).
    """
    mode: str
    tokens: list[str]

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"unknown tokenizer mode {self.mode!r}; choose one of {', '.join(MODES)}")
        self.index = {token: i for i, token in enumerate(self.tokens)}

    @classmethod
    def fit(cls, text: str, mode: str = "book", min_freq: int = 1) -> "Tokenizer":
        """Build the vocabulary of `text` like the book's `Vocab`: by frequency, ties by first occurrence."""
        counts = collections.Counter(cls(mode, [UNK]).split(text))
        if mode == "book":  # every letter has a slot, so any English text encodes with 28 tokens
            counts.update({c: 0 for c in " " + LETTERS if c not in counts})
        ranked = sorted(counts.items(), key=lambda kv: kv[1], reverse=True)
        return cls(mode, [UNK] + [t for t, n in ranked if n >= min_freq or mode == "book"])

    def __len__(self) -> int:
        return len(self.tokens)

    def normalize(self, text: str) -> str:
        """The text as the model sees it (book and words modes lowercase and squash non-letters)."""
        return text if self.mode == "chars" else book_clean(text)

    def split(self, text: str) -> list[str]:
        text = self.normalize(text)
        return text.split() if self.mode == "words" else list(text)

    def encode(self, text: str) -> list[int]:
        """Ids of `text`; anything outside the vocabulary becomes `<unk>` (0); see `unknown`."""
        return [self.index.get(token, 0) for token in self.split(text)]

    def unknown(self, text: str) -> list[str]:
        """The distinct tokens of `text` that are not in the vocabulary, in order of first appearance."""
        return list(dict.fromkeys(t for t in self.split(text) if t not in self.index))

    def decode(self, ids) -> str:
        sep = " " if self.mode == "words" else ""
        return sep.join(self.tokens[i] for i in (ids.tolist() if torch.is_tensor(ids) else ids))

    def to_dict(self) -> dict:
        return {"mode": self.mode, "tokens": self.tokens}

    @classmethod
    def from_dict(cls, d: dict) -> "Tokenizer":
        return cls(d["mode"], list(d["tokens"]))


# ---------------------------------------------------------------------------- splits and batches

@dataclass
class Splits:
    """Contiguous train / validation / test ids: the held-out text comes after the training text."""
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor


def split(ids: torch.Tensor, valid: float = 0.05, test: float = 0.05) -> Splits:
    """Cut `ids` into contiguous train / validation / test parts (90 / 5 / 5 by default)."""
    n = len(ids)
    n_valid, n_test = int(n * valid), int(n * test)
    n_train = n - n_valid - n_test
    if min(n_train, n_valid if valid else 2, n_test if test else 2) < 2:
        raise DataError(f"a corpus of {n} tokens is too short to split")
    return Splits(ids[:n_train], ids[n_train:n_train + n_valid], ids[n_train + n_valid:])


@dataclass
class Corpus:
    """A tokenized text with its splits, and where it came from (recorded in every model folder)."""
    tokenizer: Tokenizer
    splits: Splits
    source: dict = field(default_factory=dict)   # {"name", "sha1", "characters"}


def load_corpus(path: str | os.PathLike | None = None, mode: str = "book",
                tokenizer: Tokenizer | None = None) -> Corpus:
    """Read, tokenize and split a corpus (the Time Machine when `path` is None)."""
    path = timemachine_path() if path is None else Path(path)
    text = read_text(path)
    tokenizer = tokenizer or Tokenizer.fit(text, mode)
    ids = torch.tensor(tokenizer.encode(text), dtype=torch.long)
    source = {"name": Path(path).name, "sha1": hashlib.sha1(text.encode("utf-8")).hexdigest(),
              "characters": len(text)}
    return Corpus(tokenizer, split(ids), source)


def sequential_batches(ids: torch.Tensor, batch_size: int, num_steps: int,
                       generator: torch.Generator | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The book's sequential partitioning: row b of batch i+1 continues row b of batch i.

    So the hidden state can be carried (and detached) across batches. A random offset in
    [0, num_steps] starts each epoch, as in `d2l.seq_data_iter_sequential`. Yields (X, Y) of (B, T).
    """
    offset = int(torch.randint(0, num_steps + 1, (1,), generator=generator))
    n = (len(ids) - offset - 1) // batch_size * batch_size
    Xs = ids[offset:offset + n].view(batch_size, -1)
    Ys = ids[offset + 1:offset + 1 + n].view(batch_size, -1)
    for i in range(0, Xs.shape[1] // num_steps * num_steps, num_steps):
        yield Xs[:, i:i + num_steps], Ys[:, i:i + num_steps]


def random_batches(ids: torch.Tensor, batch_size: int, num_steps: int,
                   generator: torch.Generator | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The book's random sampling: disjoint subsequences in random order; the state starts fresh each batch.

    One gather builds every batch of the epoch at once (`d2l.seq_data_iter_random` loops in Python).
    """
    offset = int(torch.randint(0, num_steps, (1,), generator=generator))
    num_subseqs = (len(ids) - offset - 1) // num_steps
    num_batches = num_subseqs // batch_size
    starts = offset + torch.randperm(num_subseqs, generator=generator)[:num_batches * batch_size] * num_steps
    positions = starts.view(num_batches, batch_size, 1) + torch.arange(num_steps)  # (N, B, T)
    Xs, Ys = ids[positions], ids[positions + 1]
    yield from zip(Xs, Ys)


BATCHINGS = {"sequential": sequential_batches, "random": random_batches}


def num_batches(ids_len: int, batch_size: int, num_steps: int) -> int:
    """A lower bound on batches per epoch (both batchings), for progress bars and sanity checks."""
    return max(0, (ids_len - num_steps - 1) // batch_size // num_steps)
