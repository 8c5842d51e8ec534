"""Generation: the carried state gives what rerunning the whole text would, on both samplers; seeds repeat;
bad input is refused."""
import pytest
import torch

from zoo import create_model, kernels
from zoo.generate import MAX_LENGTH, PREFIX_IN_LOOP, generate, generate_ids, pick, sampler_for

needs_kernels = pytest.mark.skipif(not kernels.available(wait=True), reason="the C++ kernels cannot be built here")


@pytest.fixture(scope="module", params=["lstm", "gru-scratch", "deep-lstm"])
def model(request, device):
    torch.manual_seed(0)
    return create_model(request.param, vocab_size=28, num_hiddens=48).to(device).eval()


def rerun_greedy(model, prefix_ids: torch.Tensor, length: int) -> torch.Tensor:
    """Greedy decoding the quadratic way: the whole text through the model again for every new token."""
    ids = prefix_ids.to(next(model.parameters()).device)
    with torch.no_grad():
        for _ in range(length):
            logits, _ = model(ids[None])
            ids = torch.cat([ids, logits[0, -1].argmax()[None]])
    return ids


@pytest.mark.parametrize("prefix_length", [1, 5, PREFIX_IN_LOOP + 40])  # read in the loop; a pass first
@pytest.mark.parametrize("backend", ["step", pytest.param("kernel", marks=needs_kernels)])
def test_greedy_carries_the_state_exactly(model, prefix_length, backend):
    prefix = torch.randint(28, (prefix_length,), generator=torch.Generator().manual_seed(prefix_length))
    model.use_backend(backend)
    on_cpu = next(model.parameters()).device.type == "cpu"
    assert sampler_for(model, 1, None) in ((["kernel"] if backend == "kernel" else ["loop"]) if on_cpu
                                           else ["loop", "graph"])
    out = generate_ids(model, prefix, 25)
    assert out.shape == (1, prefix_length + 25)
    assert torch.equal(out[0], rerun_greedy(model.use_backend("step"), prefix, 25))
    model.use_backend("auto")


@needs_kernels
@pytest.mark.parametrize("name", ["rnn-scratch", "gru-scratch", "gru", "deep-lstm"])
@pytest.mark.parametrize("options", [
    dict(temperature=0.0), dict(temperature=1.0), dict(temperature=0.8, top_k=5),
    dict(temperature=1.2, top_p=0.7), dict(temperature=0.9, top_k=8, top_p=0.5)])
def test_the_kernel_sampler_gives_the_loops_tokens(name, options):
    """The C++ loop follows pick() op for op and draws the same uniform numbers: the same tokens."""
    torch.manual_seed(1)
    model = create_model(name, num_hiddens=64, init="uniform")
    prefix = torch.randint(28, (4,), generator=torch.Generator().manual_seed(2))
    runs = [generate_ids(model.use_backend(backend), prefix, 120, num_samples=3,
                         generator=torch.Generator().manual_seed(7), **options) for backend in ("kernel", "step")]
    assert torch.equal(*runs)


@needs_kernels
def test_the_kernel_sampler_matches_the_loop_at_the_books_sizes():
    torch.manual_seed(3)
    model = create_model("deep-lstm-scratch", init="uniform")
    runs = [generate_ids(model.use_backend(backend), torch.tensor([3, 1, 4]), 60, temperature=1.0, num_samples=2,
                         generator=torch.Generator().manual_seed(3)) for backend in ("kernel", "step")]
    assert torch.equal(*runs)


def test_auto_chooses_a_sampler_that_can_run_the_model():
    model = create_model("lstm", num_hiddens=16, embedding=4)      # an embedding: the kernel sampler cannot
    assert sampler_for(model, 2, None) == "loop"
    assert sampler_for(create_model("lstm", num_hiddens=16).double(), 2, None) == "loop"   # float32 only


def test_pick_rules():
    logits = torch.tensor([[0.1, 2.0, -1.0, 1.9], [3.0, 0.0, 0.0, 2.99]])
    u = torch.tensor([0.999, 0.999])
    assert pick(logits, 0.0, 0, 1.0, None).tolist() == [1, 0]
    assert pick(logits, 1.0, 1, 1.0, u).tolist() == [1, 0]  # top-1 is greedy, whatever u
    assert pick(logits, 1.0, 0, 1e-6, u).tolist() == [1, 0]  # so is the smallest nucleus
    assert pick(logits, 1.0, 2, 1.0, u).tolist() == [3, 3]  # u near 1: the last of the top two
    assert pick(logits, 1.0, 0, 1.0, torch.zeros(2)).tolist() == [0, 0]  # u = 0: the first token


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
    (dict(prefix_ids=torch.tensor([1]), length=5, temperature=float("nan")), "temperature"),
    (dict(prefix_ids=torch.tensor([1]), length=5, top_p=0.0), "top_p"),
])
def test_bad_arguments_get_a_clear_message(model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate_ids(model, **kwargs)
