"""Perplexity is exact: independent of chunking, equal to the mean surprisal, uniform at ln(V)."""
import json
import math

import pytest
import torch

from zoo import create_model
from zoo.evaluate import Score, score, surprisal


@pytest.fixture(scope="module")
def model(device):
    torch.manual_seed(0)
    return create_model("gru", num_hiddens=32, init="uniform").to(device)


def test_chunking_does_not_change_the_numbers(model, corpus):
    ids = corpus.splits.valid[:1000].long()
    whole = surprisal(model, ids, chunk=4096)
    assert len(whole) == 999
    torch.testing.assert_close(surprisal(model, ids, chunk=37), whole, atol=1e-5, rtol=0)


def test_score_is_the_mean_surprisal(model, corpus):
    ids = corpus.splits.valid[:500].long()
    s = score(model, ids)
    assert s.tokens == 499
    assert s.loss == pytest.approx(surprisal(model, ids).mean().item(), rel=1e-6)
    assert s.perplexity == pytest.approx(math.exp(s.loss)) and s.bits_per_token == pytest.approx(s.loss / math.log(2))


def test_a_uniform_model_has_perplexity_vocab_size():
    model = create_model("rnn-scratch", num_hiddens=8)
    with torch.no_grad():
        model.W_hq.zero_()
    assert score(model, torch.randint(0, 28, (300,))).perplexity == pytest.approx(28, rel=1e-5)


def test_scoring_restores_training_mode(model):
    model.train()
    score(model, torch.arange(20) % 28)
    assert model.training


def test_too_short_a_text():
    with pytest.raises(ValueError, match="at least two tokens"):
        score(create_model("rnn", num_hiddens=4), torch.tensor([3]))


def test_parallel_streams_stay_within_a_tenth_of_a_percent_of_one(corpus):
    """A trained model over 150k characters: 36 warmed-up streams give one stream's perplexity, to 0.1%."""
    from conftest import ROOT
    from zoo.checkpoint import load_model
    from zoo.evaluate import streams_for
    model = load_model(ROOT / "weights" / "gru").model
    ids = corpus.splits.train[:150_001]
    assert streams_for(150_000) == 36 and streams_for(65_536) == 1
    one, many = score(model, ids, streams=1), score(model, ids)
    assert many.tokens == one.tokens == 150_000
    assert many.perplexity == pytest.approx(one.perplexity, rel=1e-3)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int32])
def test_compact_ids_and_a_tail_of_left_over_tokens(model, dtype):
    """Any integer dtype is read chunk by chunk; 3 streams over 5,000 predictions leave 2 for the last one."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 28, (5_001,), generator=g)
    reference = score(model, ids, streams=1)
    got = score(model, ids.to(dtype), streams=3)
    assert got.tokens == reference.tokens == 5_000
    assert got.loss == pytest.approx(reference.loss, rel=1e-2)


def test_too_many_streams_for_the_text_is_refused(model):
    with pytest.raises(ValueError, match="each needs at least"):
        score(model, torch.randint(0, 28, (3_000,)), streams=16)


def test_the_ngram_reads_streams_too(corpus):
    from zoo.models import fit_ngram
    model, _ = fit_ngram(corpus.splits.train, corpus.splits.valid, 28, [4], tune=False)
    ids = corpus.splits.train[:40_001]
    assert score(model, ids, streams=2).perplexity == pytest.approx(score(model, ids, streams=1).perplexity, rel=1e-4)


@pytest.mark.parametrize("loss, note", [(1000.0, "overflows a float"), (math.inf, "probability 0"),
                                        (math.nan, "not numbers")])
def test_a_score_that_is_not_finite_is_strict_json_with_a_reason(loss, note):
    s = Score(loss, 5)
    assert s.perplexity == (math.inf if loss == 1000.0 else s.perplexity)
    out = json.loads(json.dumps(s.to_dict(), allow_nan=False))
    assert out["perplexity"] is None and note in out["note"] and out["tokens"] == 5
    assert "note" not in Score(2.0, 5).to_dict()
