"""Corpus download and cache, text files read in chunks into compact (and for large texts memory-mapped) ids,
splits and the book's two batchings."""
import hashlib
import http.server
import tempfile
import threading

import pytest
import torch

from zoo import data
from zoo.data import DataError, encode_file, load_corpus, random_batches, read_chunks, sequential_batches, split
from zoo.tokenizer import Tokenizer

def test_splits_are_contiguous_90_5_5(corpus):
    s = corpus.splits
    n = len(s.train) + len(s.valid) + len(s.test)
    assert abs(len(s.valid) / n - 0.05) < 1e-3 and abs(len(s.test) / n - 0.05) < 1e-3
    whole = torch.cat([s.train, s.valid, s.test])
    assert torch.equal(whole[:len(s.train)], s.train)


def test_split_refuses_a_tiny_corpus():
    with pytest.raises(DataError, match="too short"):
        split(torch.arange(10))


def test_sequential_batches_continue_row_by_row():
    ids = torch.arange(1000)
    batches = list(sequential_batches(ids, 4, 5, torch.Generator().manual_seed(1)))
    assert all(X.shape == (4, 5) and torch.equal(Y, X + 1) for X, Y in batches)
    for (X0, _), (X1, _) in zip(batches, batches[1:]):
        assert torch.equal(X1[:, 0], X0[:, -1] + 1)        # row b of the next batch follows row b


def test_random_batches_are_disjoint_subsequences():
    ids = torch.arange(1000)
    batches = list(random_batches(ids, 4, 5, torch.Generator().manual_seed(1)))
    X = torch.cat([x for x, _ in batches])
    assert all(torch.equal(Y, X_ + 1) for X_, Y in batches)
    assert torch.equal(X[:, 1:] - X[:, :-1], torch.ones(len(X), 4, dtype=torch.long))
    starts = X[:, 0]
    assert len(set(starts.tolist())) == len(starts)          # no subsequence twice
    assert len(starts) >= (1000 - 5 - 1) // 5 // 4 * 4        # and all full batches are used
    assert (starts % 5 == starts[0] % 5).all()              # one offset per epoch, then steps of T


def test_batchings_are_seeded():
    ids = torch.arange(500)
    for batching in (sequential_batches, random_batches):
        a = [x for x, _ in batching(ids, 2, 7, torch.Generator().manual_seed(3))]
        b = [x for x, _ in batching(ids, 2, 7, torch.Generator().manual_seed(3))]
        assert all(torch.equal(x, y) for x, y in zip(a, b))


# ---------------------------------------------------------------------------- files and download

def test_read_text_errors_are_one_line(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        data.read_text(tmp_path / "missing.txt")
    (tmp_path / "bin").write_bytes(b"\xff\xfe\x00abc")
    with pytest.raises(DataError, match="not UTF-8"):
        data.read_text(tmp_path / "bin")
    (tmp_path / "empty").write_text("  \n")
    with pytest.raises(DataError, match="empty"):
        data.read_text(tmp_path / "empty")


def test_a_file_read_in_chunks_is_the_text_as_text_mode_reads_it(tmp_path):
    """Cuts inside a multi-byte character and between \\r and \\n change nothing."""
    raw = "caf\u00e9 \U0001f98e one\r\ntwo\rthree\r\n\r\nend\r".encode("utf-8") * 50
    path = tmp_path / "t.txt"
    path.write_bytes(raw)
    with open(path, encoding="utf-8") as f:
        expected = f.read()
    for chunk_bytes in (1, 2, 3, 7, 64, 1 << 20):
        assert "".join(read_chunks(path, chunk_bytes)) == expected


@pytest.mark.parametrize("mmap", [False, True])
def test_encode_file_equals_encoding_the_whole_text(timemachine, tmp_path, monkeypatch, mmap):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(data, "CHUNK_BYTES", 4099)             # many chunks, cut anywhere
    text = timemachine.read_text(encoding="utf-8")
    tokenizer = Tokenizer.fit(text, "chars")
    encoded = encode_file(timemachine, Tokenizer.fit("", "book"), mmap_bytes=0 if mmap else None)
    book = Tokenizer.fit("", "book")
    assert encoded.ids.dtype == torch.uint8 and encoded.ids.tolist() == book.encode(text)
    assert encoded.characters == len(text) and encoded.sha1 == data.BOOK_SHA1
    assert encoded.replaced == list(dict.fromkeys(c for c in text if not (c.isascii() and c.isalpha())
                                                  and not c.isspace())) and encoded.unknown == []
    mapped = [line for line in open("/proc/self/maps") if str(tmp_path / "tmp") in line]
    assert bool(mapped) == mmap and all("(deleted)" in line for line in mapped)   # mapped, yet nothing on disk
    assert list((tmp_path / "tmp").iterdir()) == []
    small = Tokenizer.fit(text[:500], "chars")
    assert encode_file(timemachine, small).unknown == small.unknown(text) and "z" in small.unknown(text)
    assert tokenizer.encode(text) == encode_file(timemachine, tokenizer).ids.tolist()


def test_a_corpus_held_memory_mapped_trains_like_one_in_memory(small_text, monkeypatch):
    from zoo import create_model
    from zoo.recipes import recipe_for
    from zoo.train import Trainer

    def one_epoch(corpus):
        recipe = recipe_for("book", "gru", epochs=1, train_tokens=2000, batch_size=4, num_steps=10)
        torch.manual_seed(0)
        trainer = Trainer(create_model("gru", num_hiddens=16), corpus.splits, recipe, corpus.tokenizer)
        list(trainer.run())
        return trainer.model.state_dict()
    in_memory = one_epoch(load_corpus(small_text))
    monkeypatch.setattr(data, "MMAP_BYTES", 0)
    mapped = load_corpus(small_text)
    assert mapped.splits.train.dtype == torch.uint8
    assert all(torch.equal(a, b) for a, b in zip(in_memory.values(), one_epoch(mapped).values()))


def test_devices_and_pipes_are_not_text_files():
    with pytest.raises(DataError, match="/dev/zero is not a regular file"):
        next(read_chunks("/dev/zero"))


def test_env_copy_is_checksummed(tmp_path, monkeypatch, timemachine):
    monkeypatch.setenv(data.DATA_ENV, str(timemachine))
    assert data.timemachine_path() == timemachine
    fake = tmp_path / "timemachine.txt"
    fake.write_text("not the book")
    monkeypatch.setenv(data.DATA_ENV, str(fake))
    with pytest.raises(DataError, match="sha1 mismatch"):
        data.timemachine_path()


@pytest.fixture
def file_server(tmp_path):
    """A real HTTP server standing in for the book's S3 bucket."""
    (tmp_path / "www").mkdir()
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=tmp_path / "www")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield tmp_path / "www", f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_download_verifies_and_caches(file_server, tmp_path, monkeypatch, timemachine):
    www, url = file_server
    (www / "timemachine.txt").write_bytes(timemachine.read_bytes())
    monkeypatch.delenv(data.DATA_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(data, "BOOK_URL", f"{url}/timemachine.txt")
    path = data.timemachine_path()
    assert path == tmp_path / "cache" / "rnn-zoo" / "timemachine.txt"
    assert hashlib.sha1(path.read_bytes()).hexdigest() == data.BOOK_SHA1
    (www / "timemachine.txt").unlink()                     # now served from the cache
    assert data.timemachine_path() == path


def test_download_rejects_a_wrong_checksum(file_server, tmp_path):
    www, url = file_server
    (www / "t.txt").write_text("tampered")
    with pytest.raises(DataError, match="did not match sha1"):
        data._download(f"{url}/t.txt", tmp_path / "t.txt", data.BOOK_SHA1)
    assert not (tmp_path / "t.txt").exists()


def test_download_failure_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.delenv(data.DATA_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(data, "BOOK_URL", "http://127.0.0.1:9/timemachine.txt")
    with pytest.raises(DataError, match="--data PATH"):
        data.timemachine_path()
