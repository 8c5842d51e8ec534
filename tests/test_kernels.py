"""zoo.kernels: the C++ kernels against the plain-torch reference, and the reference against torch.nn."""
import warnings

import pytest
import torch
from torch import nn

from zoo import kernels
from zoo.kernels.reference import GATES, pick

CELLS = list(GATES)
needs_kernels = pytest.mark.skipif(not kernels.available(), reason="the C++ extension cannot be built here")


def make_inputs(cell, T, B, h, dtype=torch.float32, seed=0):
    """Random XW (T, B, G*h), W_h (h, G*h), a non-zero initial state and, for gru, b_hn."""
    g = torch.Generator().manual_seed(seed)
    rand = lambda *shape, scale=1.0: (torch.randn(*shape, generator=g, dtype=dtype) * scale).requires_grad_()
    G = GATES[cell]
    XW, W_h, H0 = rand(T, B, G * h), rand(h, G * h, scale=h**-0.5), rand(B, h, scale=0.5)
    state = (H0, rand(B, h, scale=0.5)) if cell == "lstm" else H0
    return XW, W_h, state, rand(h, scale=0.1) if cell == "gru" else None


def leaves(XW, W_h, state, b_hn):
    return [t for t in (XW, W_h, *(state if isinstance(state, tuple) else (state,)), b_hn)
            if isinstance(t, torch.Tensor) and t.is_leaf and t.requires_grad]


def outputs_and_grads(run, cell, inputs, also=()):
    """The outputs (Hs, final state) of `run`, and the gradients of a fixed random mix of them with respect
    to the tensors `also` and then the leaves of the inputs."""
    Hs, state = run(cell, *inputs)
    outs = [Hs, *(state if isinstance(state, tuple) else (state,))]
    g = torch.Generator().manual_seed(1)
    loss = sum((o * torch.randn(o.shape, generator=g, dtype=o.dtype)).sum() for o in outs)
    return outs, torch.autograd.grad(loss, [*also, *leaves(*inputs)])


# ---- recurrence: C++ against the reference

@needs_kernels
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("T,B,h", [(7, 3, 5), (9, 5, 40), (6, 32, 256)])
def test_kernel_matches_reference(cell, T, B, h):
    inputs = make_inputs(cell, T, B, h)
    outs, grads = outputs_and_grads(kernels.recurrence, cell, inputs)
    ref_outs, ref_grads = outputs_and_grads(kernels.reference_recurrence, cell, inputs)
    assert outs[0].grad_fn.name() != ref_outs[0].grad_fn.name()  # two different code paths
    for out, ref in zip(outs, ref_outs):
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    for grad, ref in zip(grads, ref_grads):  # relative to the gradient's scale
        torch.testing.assert_close(grad, ref, rtol=1e-4, atol=1e-4 * max(ref.abs().max().item(), 1e-3))


@needs_kernels
@pytest.mark.parametrize("cell", CELLS)
def test_kernel_float64_matches_reference_and_gradcheck(cell):
    inputs = make_inputs(cell, 5, 3, 40, dtype=torch.float64)
    outs, grads = outputs_and_grads(kernels.recurrence, cell, inputs)
    ref_outs, ref_grads = outputs_and_grads(kernels.reference_recurrence, cell, inputs)
    for got, ref in zip([*outs, *grads], [*ref_outs, *ref_grads]):
        torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)

    run = flat_inputs(kernels.recurrence, cell)
    assert torch.autograd.gradcheck(run, leaves(*make_inputs(cell, 4, 2, 3, torch.float64)))


@pytest.mark.parametrize("cell", CELLS)
def test_reference_gradcheck(cell):
    run = flat_inputs(kernels.reference_recurrence, cell)
    assert torch.autograd.gradcheck(run, leaves(*make_inputs(cell, 3, 2, 3, torch.float64)))


def flat_inputs(recurrence, cell):
    """recurrence as a function of the flat leaves(...), returning a flat tuple, as gradcheck wants."""
    def run(XW, W_h, H0, *rest):
        state = (H0, rest[0]) if cell == "lstm" else H0
        Hs, final = recurrence(cell, XW, W_h, state, rest[0] if cell == "gru" else None)
        return Hs, *(final if cell == "lstm" else (final,))
    return run


def compare(got, ref, grads_got, grads_ref):
    """Outputs within 1e-5; gradients within 1e-4 relative to each gradient's scale."""
    for out, r in zip(got, ref):
        torch.testing.assert_close(out, r, rtol=0, atol=1e-5)
    for grad, r in zip(grads_got, grads_ref):
        torch.testing.assert_close(grad, r, rtol=1e-4, atol=1e-4 * max(r.abs().max().item(), 1e-3))


@needs_kernels
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("T,B,h,V", [(7, 3, 5, 4), (35, 32, 256, 28)])
def test_lookup_matches_embedding_then_reference(cell, T, B, h, V):
    """Lookup(ids, table) reads table[ids[t, b]] in place; the table's gradient is accumulated per row."""
    XW, W_h, state, b_hn = make_inputs(cell, T, B, h)
    g = torch.Generator().manual_seed(2)
    table = (torch.randn(V + 1, XW.shape[-1], generator=g)).requires_grad_()  # row V is never used
    ids = torch.randint(V, (B, T), generator=g).t()  # (T, B), a transposed view as the models pass it
    inputs = (kernels.Lookup(ids, table), W_h, state, b_hn)
    outs, grads = outputs_and_grads(kernels.recurrence, cell, inputs, [table])
    dense = (torch.nn.functional.embedding(ids, table), W_h, state, b_hn)
    ref_outs, ref_grads = outputs_and_grads(kernels.reference_recurrence, cell, dense, [table])
    assert outs[0].grad_fn.name() != ref_outs[0].grad_fn.name()
    compare(outs, ref_outs, grads, ref_grads)
    assert not grads[0][V].any()


@pytest.mark.parametrize("cell", CELLS)
def test_lookup_in_the_reference_is_embedding(cell):
    XW, W_h, state, b_hn = make_inputs(cell, 4, 3, 6, dtype=torch.float64)
    table = torch.randn(5, XW.shape[-1], dtype=torch.float64)
    ids = torch.randint(5, (4, 3))
    Hs, _ = kernels.reference_recurrence(cell, kernels.Lookup(ids, table), W_h, state, b_hn)
    ref, _ = kernels.reference_recurrence(cell, table[ids], W_h, state, b_hn)
    torch.testing.assert_close(Hs, ref, rtol=0, atol=0)


@needs_kernels
@pytest.mark.parametrize("cell", CELLS)
def test_lookup_gradcheck(cell):
    _, W_h, state, b_hn = make_inputs(cell, 4, 2, 3, torch.float64)
    table = torch.randn(3, W_h.shape[1], dtype=torch.float64, requires_grad=True)
    ids = torch.tensor([[0, 2], [2, 2], [1, 0], [2, 1]])

    def run(table, *rest):
        return flat_inputs(kernels.recurrence, cell)(kernels.Lookup(ids, table), *rest)
    assert torch.autograd.gradcheck(run, [table, *leaves(None, W_h, state, b_hn)])


@needs_kernels
def test_lookup_rejects_ids_outside_the_table():
    _, W_h, state, _ = make_inputs("lstm", 3, 2, 4)
    table = torch.randn(5, W_h.shape[1])
    with pytest.raises(RuntimeError, match="ids outside"):
        kernels.recurrence("lstm", kernels.Lookup(torch.tensor([[0, 5]] * 3), table), W_h, state)


@needs_kernels
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])  # MKL's packed GEMM, and at::mm
def test_transposed_W_h_matches_and_keeps_its_layout(cell, dtype):
    """torch.nn stores W_h transposed (weight_hh (G*h, h)); the kernels read it, and write its gradient, in
    that layout, so weight_hh's gradient is contiguous with no copy."""
    XW, W_h, state, b_hn = make_inputs(cell, 9, 5, 40, dtype)
    weight_hh = W_h.detach().t().contiguous().requires_grad_()  # (G*h, h)
    inputs = (XW, weight_hh.t(), state, b_hn)
    outs, grads = outputs_and_grads(kernels.recurrence, cell, inputs, [weight_hh])
    ref_outs, ref_grads = outputs_and_grads(kernels.reference_recurrence, cell, inputs, [weight_hh])
    compare(outs, ref_outs, grads, ref_grads)
    assert grads[0].is_contiguous()


@needs_kernels
@pytest.mark.parametrize("cell", CELLS)
def test_gradients_when_only_the_outputs_are_used(cell):
    """The loss ignores the final state (as when it is detached for the next batch): no gradient arrives
    for it, and the kernel must treat that as zero."""
    inputs = make_inputs(cell, 6, 4, 24)
    grads = [torch.autograd.grad((run(cell, *inputs)[0] ** 2).sum(), leaves(*inputs))
             for run in (kernels.recurrence, kernels.reference_recurrence)]
    compare([], [], *grads)


@needs_kernels
def test_outputs_and_gradients_survive_later_calls():
    """The kernels recycle their buffers between calls; one still referenced must never be reused."""
    first = make_inputs("lstm", 6, 4, 32, seed=1)
    Hs, (H, C) = kernels.recurrence("lstm", *first)
    Hs.sum().backward()
    kept = [t.detach().clone() for t in (Hs, H, C, first[0].grad, first[1].grad)]
    for seed in (2, 3):
        Hs2, _ = kernels.recurrence("lstm", *make_inputs("lstm", 6, 4, 32, seed=seed))
        Hs2.sum().backward()
    for t, copy in zip((Hs, H, C, first[0].grad, first[1].grad), kept):
        assert torch.equal(t, copy)


@needs_kernels
def test_changing_the_outputs_in_place_is_refused():
    """Hs shares memory with the [H_0; Hs] buffer saved for backward: autograd must refuse to change it."""
    Hs, _ = kernels.recurrence("lstm", *make_inputs("lstm", 3, 2, 4))
    with pytest.raises(RuntimeError, match="modified inplace"):
        Hs.mul_(2)


@needs_kernels
def test_kernel_rejects_inconsistent_shapes():
    XW, W_h, (H0, C0), _ = make_inputs("lstm", 3, 2, 4)
    with pytest.raises(RuntimeError, match="H0 must be"):
        kernels.recurrence("lstm", XW, W_h, (H0[:1], C0))
    with pytest.raises(RuntimeError, match="XW must be"):
        kernels.recurrence("lstm", XW[..., :-1], W_h, (H0, C0))
    layers, head, state, first = make_sampler_inputs(["gru"])
    with pytest.raises(RuntimeError, match="state of layer 0"):
        kernels.sample_loop(["gru"], layers, head, [state[0][:1]], first, 3)


# ---- the reference against torch.nn

@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_reference_matches_torch_nn(cell):
    torch.manual_seed(0)
    T, B, inputs, h = 6, 3, 4, 5
    layer = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}[cell](inputs, h).double()
    x = torch.randn(T, B, inputs, dtype=torch.float64)
    H0, C0 = torch.randn(2, 1, B, h, dtype=torch.float64)
    out, final = layer(x, (H0, C0) if cell == "lstm" else H0)

    # map nn's weights: W_h = weight_hh^T; biases folded into XW, except gru's b_hn (inside R * (...))
    b_ih, b_hh = layer.bias_ih_l0, layer.bias_hh_l0
    b_hn = b_hh[2 * h:] if cell == "gru" else None
    b_hh_folded = torch.cat([b_hh[: 2 * h], torch.zeros_like(b_hn)]) if cell == "gru" else b_hh
    XW = x @ layer.weight_ih_l0.T + b_ih + b_hh_folded
    initial = (H0[0], C0[0]) if cell == "lstm" else H0[0]
    Hs, state = kernels.reference_recurrence(cell, XW, layer.weight_hh_l0.T, initial, b_hn)
    torch.testing.assert_close(Hs, out)
    if cell == "lstm":
        torch.testing.assert_close(torch.stack(state)[:, None], torch.stack(final))
    else:
        torch.testing.assert_close(state[None], final)

    weights = torch.randn(T, B, h, dtype=torch.float64)
    grads_nn = torch.autograd.grad((out * weights).sum(), list(layer.parameters()), retain_graph=True)
    grads_ref = torch.autograd.grad((Hs * weights).sum(), list(layer.parameters()))
    for got, ref in zip(grads_ref, grads_nn):
        torch.testing.assert_close(got, ref)


# ---- sampling

def make_sampler_inputs(cells, B=3, h=40, V=28, seed=0, P=1):
    g = torch.Generator().manual_seed(seed)
    rand = lambda *shape, scale: torch.randn(*shape, generator=g) * scale
    layers, state = [], []
    for l, cell in enumerate(cells):
        G = GATES[cell]
        W_x = rand(V if l == 0 else h, G * h, scale=0.5)
        W_h = rand(h, G * h, scale=1.5 / h**0.5)
        layers.append((W_x, rand(G * h, scale=0.1), W_h, rand(h, scale=0.1) if cell == "gru" else None))
        H = rand(B, h, scale=0.5)
        state.append((H, rand(B, h, scale=0.5)) if cell == "lstm" else H)
    head = (rand(h, V, scale=0.5), rand(V, scale=0.1))
    return layers, head, state, torch.randint(V, (B, P), generator=g)


def flatten(state):
    return [t for s in state for t in (s if isinstance(s, tuple) else (s,))]


@needs_kernels
@pytest.mark.parametrize("cells", [["lstm", "gru"], ["rnn", "gru-book"]])
@pytest.mark.parametrize("options", [
    dict(temperature=0.0), dict(temperature=1.0), dict(temperature=0.8, top_k=5),
    dict(temperature=1.2, top_p=0.7), dict(temperature=0.9, top_k=8, top_p=0.5)])
def test_sample_loop_matches_reference(cells, options):
    layers, head, state, prompt = make_sampler_inputs(cells, P=4)
    before = [t.clone() for t in flatten(state)]
    results = []
    for run in (kernels.sample_loop, kernels.reference_sample_loop):
        generator = torch.Generator().manual_seed(7)
        tokens, final = run(cells, layers, head, state, prompt, 120, generator=generator, **options)
        results.append((tokens, final, generator.get_state()))
    (tokens, final, gen_state), (ref_tokens, ref_final, ref_gen_state) = results
    assert tokens.shape == (3, 120) and tokens.dtype == torch.long
    assert torch.equal(tokens, ref_tokens)
    assert torch.equal(gen_state, ref_gen_state)  # both drew the same random numbers
    for got, ref in zip(flatten(final), flatten(ref_final)):
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-4)
    assert all(torch.equal(t, b) for t, b in zip(flatten(state), before))  # the caller's state is untouched


@needs_kernels
@pytest.mark.parametrize("h,V", [(256, 28), (160, 300)])  # full 128-column blocks; a head the team splits
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_sample_loop_matches_reference_at_larger_sizes(h, V, temperature):
    layers, head, state, prompt = make_sampler_inputs(["lstm", "lstm"], B=2, h=h, V=V)
    runs = [run(["lstm", "lstm"], layers, head, state, prompt, 60, temperature=temperature,
                generator=torch.Generator().manual_seed(3))
            for run in (kernels.sample_loop, kernels.reference_sample_loop)]
    assert torch.equal(runs[0][0], runs[1][0])


def test_sample_loop_continues_the_recurrence():
    """Greedy sampling feeds each argmax back in: the same as running `recurrence` on the generated text."""
    layers, head, state, prompt = make_sampler_inputs(["gru"], B=2)
    tokens, final = kernels.sample_loop(["gru"], layers, head, state, prompt, 10)
    inputs = torch.cat([prompt, tokens[:, :-1]], 1)  # (B, T): what was fed at each step
    W_x, b_x, W_h, b_hn = layers[0]
    Hs, H = kernels.reference_recurrence("gru", (W_x[inputs] + b_x).transpose(0, 1), W_h, state[0], b_hn)
    torch.testing.assert_close(H, final[0], rtol=0, atol=1e-5)
    assert torch.equal((Hs @ head[0] + head[1]).argmax(-1).T, tokens)


@needs_kernels
@pytest.mark.parametrize("steps", [0, 1, 7])
def test_reading_the_prompt_in_the_loop_equals_a_pass_over_it_first(steps):
    """prompt (B, P) gives what feeding prompt[:, :-1] through the recurrence, then prompt[:, -1:], gives."""
    layers, head, state, prompt = make_sampler_inputs(["lstm"], B=2, P=6)
    W_x, b_x, W_h, _ = layers[0]
    _, after = kernels.reference_recurrence("lstm", (W_x[prompt[:, :-1]] + b_x).transpose(0, 1), W_h, state[0])
    tokens, final = kernels.sample_loop(["lstm"], layers, head, state, prompt, steps)
    ref_tokens, ref_final = kernels.sample_loop(["lstm"], layers, head, [after], prompt[:, -1:], steps)
    assert tokens.shape == (2, steps) and torch.equal(tokens, ref_tokens)
    for got, ref in zip(flatten(final), flatten(ref_final)):
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)


def test_pick_rules():
    logits = torch.tensor([[0.1, 2.0, -1.0, 1.9], [3.0, 0.0, 0.0, 2.99]])
    u = torch.tensor([0.999, 0.999])
    assert pick(logits, 0.0, 0, 1.0, None).tolist() == [1, 0]
    assert pick(logits, 1.0, 1, 1.0, u).tolist() == [1, 0]  # top-1 is greedy, whatever u
    assert pick(logits, 1.0, 0, 1e-6, u).tolist() == [1, 0]  # so is the smallest nucleus
    assert pick(logits, 1.0, 2, 1.0, u).tolist() == [3, 3]  # u near 1: the last of the top two
    assert pick(logits, 1.0, 0, 1.0, torch.zeros(2)).tolist() == [0, 0]  # u = 0: the first token


# ---- choosing the path

def test_zoo_kernels_0_uses_torch_ops(monkeypatch):
    monkeypatch.setenv("ZOO_KERNELS", "0")
    assert not kernels.available()
    inputs = make_inputs("lstm", 4, 2, 8)
    Hs, _ = kernels.recurrence("lstm", *inputs)
    assert Hs.grad_fn.name() == "StackBackward0"  # the reference's torch.stack, not the C++ node
    layers, head, state, first = make_sampler_inputs(["rnn"])
    called = []
    monkeypatch.setattr(kernels, "reference_sample_loop", lambda *a, **k: called.append(1) or (None, None))
    kernels.sample_loop(["rnn"], layers, head, state, first, 3)
    assert called


@needs_kernels
def test_unsupported_dtype_falls_back():
    XW, W_h, state, b_hn = (t.detach().to(torch.bfloat16) if t is not None else None
                            for t in make_inputs("gru", 3, 2, 4))
    Hs, _ = kernels.recurrence("gru", XW.requires_grad_(), W_h, state, b_hn)
    assert Hs.dtype == torch.bfloat16 and Hs.grad_fn.name() == "StackBackward0"


def test_failed_build_warns_once_and_falls_back(monkeypatch):
    from torch.utils import cpp_extension

    def no_compiler(*args, **kwargs):
        raise RuntimeError("Error building extension: c++: not found")

    monkeypatch.setattr(cpp_extension, "load", no_compiler)
    kernels._ops.cache_clear()
    try:
        with pytest.warns(UserWarning, match="C\\+\\+ extension unavailable") as record:
            assert not kernels.available()
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # a second warning would raise here
                assert not kernels.available()
                Hs, _ = kernels.recurrence("rnn", *make_inputs("rnn", 3, 2, 4))
        assert len(record) == 1 and Hs.grad_fn.name() == "StackBackward0"
    finally:
        kernels._ops.cache_clear()  # the next caller loads the real extension again (already built)
