"""Generation: the carried state gives what rerunning the whole text would, seeds repeat, bad input is refused."""
import pytest
import torch

from zoo import create_model
from zoo.generate import MAX_LENGTH, PREFIX_IN_LOOP, generate, generate_ids


@pytest.fixture(scope="module", params=["lstm", "gru-scratch", "deep-lstm"])
def model(request):
    torch.manual_seed(0)
    return create_model(request.param, vocab_size=28, num_hiddens=48).eval()


def rerun_greedy(model, prefix_ids: torch.Tensor, length: int) -> torch.Tensor:
    """Greedy decoding the quadratic way: the whole text through the model again for every new token."""
    ids = prefix_ids.clone()
    with torch.no_grad():
        for _ in range(length):
            logits, _ = model(ids[None])
            ids = torch.cat([ids, logits[0, -1].argmax()[None]])
    return ids


@pytest.mark.parametrize("prefix_length", [1, 5, PREFIX_IN_LOOP + 40])  # read in the loop; a pass first
def test_greedy_carries_the_state_exactly(model, prefix_length):
    prefix = torch.randint(28, (prefix_length,), generator=torch.Generator().manual_seed(prefix_length))
    out = generate_ids(model, prefix, 25)
    assert out.shape == (1, prefix_length + 25)
    assert torch.equal(out[0], rerun_greedy(model, prefix, 25))


def test_same_seed_same_text_and_rows_differ(model, corpus):
    sample = lambda seed: generate(model, corpus.tokenizer, "time traveller", 40, temperature=1.0, top_k=10,
                                   top_p=0.9, num_samples=3, seed=seed).texts
    first = sample(1)
    assert first == sample(1) and first != sample(2)
    assert len(set(first)) == 3 and all(t.startswith("time traveller") for t in first)


def test_length_zero_returns_the_prefix(model, corpus):
    assert generate(model, corpus.tokenizer, "the time", 0).texts == ["the time"]


def test_characters_outside_the_vocabulary_are_reported(model):
    from zoo.data import Tokenizer
    tokenizer = Tokenizer.fit("abcdefghijklmnopqrstuvwxyz .", "chars")   # 28 tokens with <unk>
    result = generate(model, tokenizer, "abZ!", 5)
    assert result.unknown == ["Z", "!"] and result.prefix == "ab<unk><unk>"


@pytest.mark.parametrize("kwargs, message", [
    (dict(prefix_ids=torch.tensor([], dtype=torch.long), length=5), "prefix is empty"),
    (dict(prefix_ids=torch.tensor([1]), length=-1), "length must be"),
    (dict(prefix_ids=torch.tensor([1]), length=MAX_LENGTH + 1), "length must be"),
    (dict(prefix_ids=torch.tensor([1]), length=5, temperature=-1.0), "temperature"),
    (dict(prefix_ids=torch.tensor([1]), length=5, top_p=0.0), "top_p"),
])
def test_bad_arguments_get_a_clear_message(model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate_ids(model, **kwargs)
