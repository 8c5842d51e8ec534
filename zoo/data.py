"""Text in, token ids out: the Time Machine corpus, text files of any size, splits and the book's two batchings.

Data flows one way: a text file -> `Tokenizer` (zoo.tokenizer) -> a 1-D tensor of compact ids -> `split` ->
batches of (B, T) ids. A file is read in chunks and its ids are uint8 when the vocabulary fits, held in a
memory-mapped temporary file when the text is large: a 100 MB text costs about 100 MB of ids, not 800.
"""
from __future__ import annotations

import codecs
import hashlib
import os
import stat
import tempfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from zoo.tokenizer import Encoder, Tokenizer

# The book's own download location and checksum (d2l.DATA_HUB['time_machine']).
BOOK_URL = "http://d2l-data.s3-accelerate.amazonaws.com/timemachine.txt"
BOOK_SHA1 = "090b5e7e70c295757f55df93cb0a180b9691891a"
DATA_ENV = "ZOO_DATA"  # path to a local copy of the book's timemachine.txt (checksum verified)
CHUNK_BYTES = 1 << 20           # a text file is read 1 MB at a time (~30 MB of numpy arrays while tokenizing)
MMAP_BYTES = 64 << 20           # texts larger than this keep their ids in a memory-mapped temporary file


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


def read_chunks(path: str | os.PathLike, chunk_bytes: int = CHUNK_BYTES) -> Iterator[str]:
    """A UTF-8 text file in pieces of about `chunk_bytes`, line ends translated as Python's text mode does
    (\\r\\n and \\r become \\n); one DataError line for a file that is missing, not a regular file (a
    device such as /dev/zero, a pipe), not UTF-8, or empty."""
    path = Path(path).expanduser()
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise DataError(f"no such file: {path}") from None
    except IsADirectoryError:
        raise DataError(f"{path} is a directory, not a text file") from None
    except OSError as e:
        raise DataError(f"cannot read {path} ({e.strerror})") from None
    with f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise DataError(f"{path} is not a regular file; give a text file")
        decoder, offset, held, blank = codecs.getincrementaldecoder("utf-8")(), 0, "", True
        while True:
            data = f.read(chunk_bytes)
            try:
                text = held + decoder.decode(data, final=not data)
            except UnicodeDecodeError as e:
                at = offset - len(decoder.getstate()[0]) + e.start
                raise DataError(f"{path} is not UTF-8 text (byte {at}); convert it first") from None
            offset += len(data)
            held = "\r" if data and text.endswith("\r") else ""    # it may be the first half of \r\n
            text = (text[:-1] if held else text).replace("\r\n", "\n").replace("\r", "\n")
            blank = blank and (not text or text.isspace())
            if text:
                yield text
            if not data:
                break
    if blank:
        raise DataError(f"{path} is empty")


def read_text(path: str | os.PathLike | None = None) -> str:
    """Any UTF-8 text file, or the Time Machine when `path` is None, as one string."""
    return "".join(read_chunks(timemachine_path() if path is None else path))


@dataclass
class Encoded:
    """A text file's ids, and what the vocabulary lacked in it."""
    ids: torch.Tensor               # 1-D, the tokenizer's compact dtype, memory-mapped for a large text
    unknown: list[str]              # tokens read as <unk>, in order of first appearance
    replaced: list[str]             # characters read as a space (book and words modes), likewise
    characters: int
    sha1: str                       # of the text as read (UTF-8, line ends translated)


def encode_file(path: str | os.PathLike, tokenizer: Tokenizer, mmap_bytes: int | None = None) -> Encoded:
    """Tokenize a text file chunk by chunk; a file larger than `mmap_bytes` (default MMAP_BYTES) keeps its ids in
    an unlinked temporary file that is memory-mapped (the pages are the OS's to keep or drop; nothing is left on
    disk, even after a kill)."""
    path = Path(path).expanduser()
    encoder, digest, characters = Encoder(tokenizer), hashlib.sha1(), 0
    large = path.is_file() and path.stat().st_size > (MMAP_BYTES if mmap_bytes is None else mmap_bytes)
    sink = tempfile.TemporaryFile() if large else None
    parts, count = [], 0

    def keep(ids: np.ndarray) -> None:
        nonlocal count
        count += len(ids)
        if sink:
            sink.write(ids.tobytes())
        else:
            parts.append(ids)

    try:
        for text in read_chunks(path):
            digest.update(text.encode("utf-8"))
            characters += len(text)
            keep(encoder.feed(text))
        keep(encoder.finish())
        if sink and count:
            sink.flush()
            ids = np.memmap(sink, dtype=encoder.dtype, mode="r+", shape=(count,))
        else:
            ids = np.concatenate(parts) if parts else np.empty(0, dtype=encoder.dtype)
    finally:
        if sink:
            sink.close()   # the mapping keeps the unlinked file alive until the ids are freed
    return Encoded(torch.from_numpy(ids), list(encoder.unknown), list(encoder.replaced), characters,
                   digest.hexdigest())


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
    """Read, tokenize and split a corpus (the Time Machine when `path` is None): two passes over the file,
    one to fit the vocabulary (unless `tokenizer` is given) and one to encode it into compact ids."""
    path = timemachine_path() if path is None else Path(path)
    tokenizer = tokenizer or Tokenizer.fit_chunks(read_chunks(path), mode)
    encoded = encode_file(path, tokenizer)
    source = {"name": Path(path).name, "sha1": encoded.sha1, "characters": encoded.characters}
    return Corpus(tokenizer, split(encoded.ids), source)


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


def max_batches(ids_len: int, batch_size: int, num_steps: int) -> int:
    """An upper bound on batches per epoch (both batchings): what an offset of 0 gives."""
    return max(0, (ids_len - 1) // (batch_size * num_steps))
