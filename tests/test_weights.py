"""The bundled weights: every model loads offline, scores what its card says, and meets the quality targets."""
import pytest
from huggingface_hub import ModelCard

from conftest import ROOT
from zoo.models import BOOK
from zoo.checkpoint import load_model
from zoo.evaluate import score

WEIGHTS = ROOT / "weights"
# Test perplexity at most, at the book's sizes (hidden 256; deep = 2 layers); the n-gram is the line to beat.
TARGETS = {"rnn": 4.20, "rnn-scratch": 4.20, "gru": 3.95, "gru-scratch": 3.95, "lstm": 3.85, "lstm-scratch": 3.85,
           "deep-lstm": 3.72, "deep-lstm-scratch": 3.72, "ngram": 3.72}


def test_every_registered_model_is_bundled():
    assert sorted(p.name for p in WEIGHTS.iterdir() if p.is_dir()) == sorted(BOOK)
    assert (WEIGHTS / "REPORT.md").is_file()


@pytest.mark.parametrize("name", BOOK)
def test_bundled_model_scores_what_its_card_says(name, corpus):
    folder = WEIGHTS / name
    pretrained = load_model(folder)
    assert pretrained.tokenizer.tokens == corpus.tokenizer.tokens
    test = score(pretrained.model, corpus.splits.test.long()).perplexity
    assert test == pytest.approx(pretrained.info["metrics"]["test_perplexity"], rel=1e-4)
    card = ModelCard.load(folder / "README.md")
    [card_test] = [r.metric_value for r in card.data.eval_results
                   if r.dataset_split == "test" and r.metric_type == "perplexity"]
    assert test == pytest.approx(card_test, abs=1e-4)
    assert test <= TARGETS[name]


@pytest.mark.parametrize("name", BOOK)
def test_bundled_folders_are_small(name):
    assert sum(p.stat().st_size for p in (WEIGHTS / name).iterdir()) < 5_000_000
