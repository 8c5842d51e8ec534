"""Tokenizers: the book's vocabulary, the three modes, and the vectorised chunk-by-chunk encoder held equal to
the plain Python definition on any text cut anywhere; vocabularies a config.json may not hold."""
import collections
import random

import numpy as np
import pytest
import torch

from zoo.tokenizer import UNK, Encoder, Tokenizer, book_clean

# The book's vocabulary order (D2L 8.2: Vocab of the Time Machine's characters).
BOOK_TOKENS = ['<unk>', ' ', 'e', 't', 'a', 'i', 'n', 'o', 's', 'h', 'r', 'd', 'l', 'm', 'u', 'c', 'f', 'w',
               'g', 'y', 'p', 'b', 'v', 'k', 'x', 'z', 'j', 'q']
# Texts that stress the edges: runs of non-letters at the ends and across cuts, CRLF, non-ASCII, emoji.
ODD = ["", "   ", "--a--", "Hello, World!\n", "  leading and trailing  ", "x", "ÀÉÎ café 🦎 naïve",
       "a\r\nb\rc", "one--two...three   four\n\n\nfive", "ABC abc AbC", "12 34 !!", "\x00\x01a\x7fb"]


def reference_fit(text: str, mode: str) -> list[str]:
    """The vocabulary as the book's Vocab builds it: tokens by frequency, ties by first occurrence."""
    counts = collections.Counter(Tokenizer(mode, [UNK]).split(text))
    if mode == "book":
        counts.update({c: 0 for c in " abcdefghijklmnopqrstuvwxyz" if c not in counts})
    return [UNK] + [t for t, _ in sorted(counts.items(), key=lambda kv: kv[1], reverse=True)]


def reference_ids(tokenizer: Tokenizer, text: str) -> list[int]:
    return [tokenizer.index.get(t, 0) for t in tokenizer.split(text)]


def chunked(tokenizer: Tokenizer, text: str, cuts: list[int]) -> list[int]:
    """Encode `text` cut at `cuts` with one Encoder, as a file is read."""
    encoder, pieces = Encoder(tokenizer), []
    for a, b in zip([0] + cuts, cuts + [len(text)]):
        pieces.append(encoder.feed(text[a:b]))
    pieces.append(encoder.finish())
    return np.concatenate(pieces).tolist()


def test_book_tokenizer_matches_the_book(corpus):
    assert corpus.tokenizer.tokens == BOOK_TOKENS
    assert len(corpus.tokenizer) == 28 and corpus.splits.train.dtype == torch.uint8


def test_book_clean_joins_lines_with_a_space():
    assert book_clean("He spoke of him\nwas it?  Yes--'twas.") == "he spoke of him was it yes twas"


def test_book_mode_always_has_every_letter():
    tok = Tokenizer.fit("abc abc")
    assert len(tok) == 28 and tok.tokens[:4] == ["<unk>", "a", "b", "c"]   # ' ' ties go by first occurrence


def test_chars_mode_keeps_case_and_punctuation_and_reports_unknowns():
    tok = Tokenizer.fit("Hello, World!\n", "chars")
    assert tok.decode(tok.encode("Hello, World!\n")) == "Hello, World!\n"
    assert tok.unknown("Hi? é") == ["i", "?", "é"]
    assert tok.encode("?")[0] == 0


def test_words_mode_round_trips():
    tok = Tokenizer.fit("the time traveller the time", "words")
    assert tok.tokens[:3] == ["<unk>", "the", "time"]
    assert tok.decode(tok.encode("The Time--machine")) == "the time <unk>"
    assert tok.unknown("The Time--machine") == ["machine"]


def test_book_mode_names_what_it_reads_as_a_space():
    tok = Tokenizer.fit("abc")
    assert tok.replaced("Time 🦎, travel\\ler!") == ["🦎", ",", "\\", "!"]
    assert tok.unknown("Time 🦎") == [] and tok.decode(tok.encode("Time 🦎 x")) == "time x"


def test_tokenizer_round_trips_through_a_dict(corpus):
    again = Tokenizer.from_dict(corpus.tokenizer.to_dict())
    assert again.tokens == corpus.tokenizer.tokens and again.mode == "book"


@pytest.mark.parametrize("mode", ["book", "chars", "words"])
def test_fit_and_encode_equal_the_plain_definition_on_the_book(mode, timemachine):
    text = timemachine.read_text(encoding="utf-8")
    tok = Tokenizer.fit(text, mode)
    assert tok.tokens == reference_fit(text, mode)
    assert tok.encode(text) == reference_ids(tok, text)


@pytest.mark.parametrize("mode", ["book", "chars", "words"])
def test_any_cut_of_any_text_encodes_as_the_whole(mode, timemachine):
    rng = random.Random(0)
    book = timemachine.read_text(encoding="utf-8")[:3000]
    tok = Tokenizer.fit(book + "".join(ODD[:8]), mode)
    for text in ODD + [book[rng.randrange(2000):][:rng.randrange(1, 400)] + rng.choice(ODD) for _ in range(30)]:
        whole = reference_ids(tok, text)
        assert tok.encode(text) == whole, text
        for _ in range(5):
            cuts = sorted(rng.sample(range(len(text) + 1), min(len(text) + 1, rng.randrange(1, 6))))
            assert chunked(tok, text, cuts) == whole, (text, cuts)


@pytest.mark.parametrize("mode", ["book", "chars", "words"])
def test_fit_over_chunks_equals_fit_over_the_whole(mode, timemachine):
    text = timemachine.read_text(encoding="utf-8")[:20000] + "Ünïcødé 🦎 ZZZ"
    pieces = [text[i:i + 997] for i in range(0, len(text), 997)]
    assert Tokenizer.fit_chunks(pieces, mode).tokens == Tokenizer.fit(text, mode).tokens == reference_fit(text, mode)


def test_ids_are_compact():
    assert Tokenizer.fit("abc").ids("abc").dtype == torch.uint8
    words = Tokenizer("words", [UNK] + [a + b for a in "abcdefghijklm" for b in "abcdefghijklmnopqrstuvwxyz"])
    assert words.ids("aa mz zz").tolist() == [1, 338, 0] and words.ids("aa").dtype == torch.int16


@pytest.mark.parametrize("mode, tokens, message", [
    ("book", ["<unk>", " ", 5], "token 2 is 5, not a string"),
    ("book", ["<unk>", "ab"], "not one character"),
    ("book", ["<unk>", "é"], "not a-z or space"),
    ("chars", [" ", "a"], "first token must be '<unk>'"),
    ("chars", ["<unk>", "a", "a"], "not distinct"),
    ("words", ["<unk>", "two words"], "not a word"),
    ("poetry", ["<unk>"], "unknown tokenizer mode"),
])
def test_a_vocabulary_that_cannot_encode_or_decode_is_refused(mode, tokens, message):
    with pytest.raises(ValueError, match=message):
        Tokenizer.from_dict({"mode": mode, "tokens": tokens})
