"""zoo.kernels, the C++ accelerator: what tests/test_backends.py does not already hold equal to the cells'
own step (layouts, buffers, edge cases, float64 gradients), the sampler, and how it is built and loaded."""
import threading

import pytest
import torch

from test_backends import make_inputs, make_layer
from zoo import backends, kernels
from zoo.backends import KERNEL, Layer, run_kernel, run_step

needs_kernels = pytest.mark.skipif(not kernels.available(wait=True), reason="the C++ kernels cannot be built here")
CELLS = list(KERNEL)


def grads_of(run, layer, X, state, wrt):
    Hs, final = run(layer, X, state)
    return torch.autograd.grad((Hs ** 2).sum(), wrt)


@needs_kernels
@pytest.mark.parametrize("cell", CELLS)
def test_kernel_gradcheck_in_float64(cell):
    layer = make_layer(cell, 3, 3, torch.float64)
    X, state = make_inputs(layer, 4, 2, ids=False)
    leaves = [*layer.params.values(), X, *(state if isinstance(state, tuple) else (state,))]

    def run(*tensors):
        params = dict(zip(layer.params, tensors))
        X, *s = tensors[len(params):]
        Hs, final = run_kernel(Layer(cell, params), X, tuple(s) if cell.memory else s[0])
        return Hs, *(final if isinstance(final, tuple) else (final,))
    assert torch.autograd.gradcheck(run, leaves)


@needs_kernels
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])  # MKL's packed GEMM, and at::mm
def test_transposed_W_h_is_read_in_place_and_its_gradient_keeps_that_layout(cell, dtype):
    """torch.nn stores W_h transposed (weight_hh (G*h, h)); the kernel reads it, and writes its gradient,
    in that layout, so weight_hh's gradient is contiguous with no copy."""
    layer = make_layer(cell, 40, 40, dtype)
    weight_hh = layer.params["W_h"].detach().t().contiguous().requires_grad_()
    transposed = layer.replace(W_h=weight_hh.t())
    X, state = make_inputs(layer, 9, 5, ids=False)
    got = grads_of(run_kernel, transposed, X, state, [weight_hh])[0]
    ref = grads_of(run_step, transposed, X, state, [weight_hh])[0]
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())
    assert got.is_contiguous()


@needs_kernels
@pytest.mark.parametrize("cell", CELLS)
def test_gradients_when_only_the_outputs_are_used(cell):
    """The loss ignores the final state (as when it is detached for the next batch): no gradient arrives
    for it, and the kernel must treat that as zero."""
    layer = make_layer(cell, 24, 24)
    X, state = make_inputs(layer, 6, 4, ids=False)
    wrt = list(layer.params.values())
    for got, ref in zip(grads_of(run_kernel, layer, X, state, wrt), grads_of(run_step, layer, X, state, wrt)):
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4 * max(ref.abs().max().item(), 1e-3))


@needs_kernels
def test_outputs_and_gradients_survive_later_calls():
    """The kernels recycle their buffers between calls; one still referenced must never be reused."""
    layer = make_layer(backends.LSTMCell, 32, 32, seed=1)
    X, state = make_inputs(layer, 6, 4, ids=False)
    Hs, (H, C) = run_kernel(layer, X, state)
    Hs.sum().backward()
    kept = [t.detach().clone() for t in (Hs, H, C, X.grad, layer.params["W_h"].grad)]
    for seed in (2, 3):
        other = make_layer(backends.LSTMCell, 32, 32, seed=seed)
        run_kernel(other, *make_inputs(other, 6, 4, ids=False, seed=seed))[0].sum().backward()
    for t, copy in zip((Hs, H, C, X.grad, layer.params["W_h"].grad), kept):
        assert torch.equal(t, copy)


@needs_kernels
def test_changing_the_outputs_in_place_is_refused():
    """Hs shares memory with the [H_0; Hs] buffer saved for backward: autograd must refuse to change it."""
    layer = make_layer(backends.LSTMCell, 4, 4)
    Hs, _ = run_kernel(layer, *make_inputs(layer, 3, 2, ids=False))
    with pytest.raises(RuntimeError, match="modified inplace"):
        Hs.mul_(2)


@needs_kernels
def test_kernel_rejects_inconsistent_shapes_and_ids_outside_the_table():
    layer = make_layer(backends.LSTMCell, 5, 4)
    X, (H0, C0) = make_inputs(layer, 3, 2, ids=False)
    XW = X @ layer.params["W_x"]
    with pytest.raises(RuntimeError, match="H0 must be"):
        kernels.recurrence("lstm", XW, layer.params["W_h"], (H0[:1], C0))
    with pytest.raises(RuntimeError, match="XW must be"):
        kernels.recurrence("lstm", XW[..., :-1], layer.params["W_h"], (H0, C0))
    with pytest.raises(RuntimeError, match="ids outside"):
        kernels.recurrence("lstm", kernels.Lookup(torch.tensor([[0, 5]] * 3), layer.params["W_x"]),
                           layer.params["W_h"], (H0, C0))
    with pytest.raises(RuntimeError, match="state of layer 0"):
        kernels.sample_loop(["lstm"], [(layer.params["W_x"], layer.params["b"], layer.params["W_h"], None)],
                            (torch.randn(4, 5), torch.zeros(5)), [(H0[:1], C0)], torch.zeros(2, 1, dtype=torch.long), 3)


# ---- how the extension is built and loaded

def test_zoo_kernels_0_turns_them_off(monkeypatch):
    monkeypatch.setenv("ZOO_KERNELS", "0")
    assert not kernels.available()
    layer = make_layer(backends.LSTMCell, 5, 8)
    assert "kernel" not in backends.candidates(layer, make_inputs(layer, 2, 2, ids=True)[0])


def test_a_failed_build_runs_in_the_background_says_so_once_and_the_rest_works(monkeypatch, tmp_path, caplog):
    """No compiler (or no OpenMP): the build fails in its background thread, once, with one line."""
    from torch.utils import cpp_extension
    started = threading.Event()

    def no_compiler(*args, **kwargs):
        started.wait(5)
        raise RuntimeError("Error building extension: c++: not found")

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))      # no build from before to load
    monkeypatch.setattr(cpp_extension, "load", no_compiler)
    extension = kernels._Extension()
    monkeypatch.setattr(kernels, "_extension", extension)
    assert not kernels.available()                               # answers at once: the build has begun
    started.set()
    assert not kernels.available(wait=True) and not kernels.available(wait=True)
    assert [r.getMessage() for r in caplog.records] == [
        "zoo: building the C++ kernels in the background (about a minute); the other backends run meanwhile",
        "zoo: the C++ kernels cannot be built here, so the other backends run (RuntimeError: Error building "
        "extension: c++: not found)"]
    layer = make_layer(backends.GRUCell, 5, 8)
    X, state = make_inputs(layer, 3, 2, ids=True)
    assert backends.choose(layer, X) == "step" and backends.run(layer, X, state)[0].shape == (3, 2, 8)


@needs_kernels
def test_a_previous_build_loads_at_once():
    extension = kernels._Extension()
    assert extension.load(wait=False) and extension.thread is None
