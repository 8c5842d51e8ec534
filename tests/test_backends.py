"""zoo.backends: every accelerator equals the cell it runs (outputs, state, gradients), runs nothing else,
and is chosen by measurement or by name."""
import json

import pytest
import torch

from zoo import backends, kernels
from zoo.backends import KERNEL, PROVEN, TORCH, Layer
from zoo.models.cells import Cell, LSTMCell

needs_kernels = pytest.mark.skipif(not kernels.available(wait=True), reason="the C++ kernels cannot be built here")
ACCELERATED = [("torch", cell) for cell in TORCH] + [pytest.param("kernel", cell, marks=needs_kernels)
                                                      for cell in KERNEL]


def make_layer(cell: type[Cell], inputs: int, h: int, dtype=torch.float32, seed=0, device="cpu") -> Layer:
    """A cell with every parameter random (biases too), as a Layer whose parameters are leaves."""
    torch.manual_seed(seed)
    module = cell(inputs, h, init="uniform").to(device, dtype)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, h ** -0.5)
    return Layer(cell, dict(module.named_parameters()), module)


def make_inputs(layer: Layer, T: int, B: int, ids: bool, seed=1):
    """X: token ids (T, B) or vectors (T, B, inputs) that need a gradient; a random non-zero state."""
    g = torch.Generator().manual_seed(seed)
    W_x = layer.params["W_x"]
    to = dict(device=W_x.device)
    if ids:
        X = torch.randint(W_x.shape[0], (T, B), generator=g).to(**to)
    else:
        X = torch.randn(T, B, W_x.shape[0], generator=g, dtype=W_x.dtype).to(**to).requires_grad_()
    shape = (B, layer.params["W_h"].shape[0])
    H = (torch.randn(*shape, generator=g, dtype=W_x.dtype) * 0.5).to(**to).requires_grad_()
    C = (torch.randn(*shape, generator=g, dtype=W_x.dtype) * 0.5).to(**to).requires_grad_()
    return X, ((H, C) if layer.cell.memory else H)


def outputs_and_grads(backend: str, layer: Layer, X, state):
    """Hs and the final state on `backend`, and the gradients of a fixed random mix of them with respect to
    every parameter, the inputs (when vectors) and the initial state."""
    Hs, final = backends.RUNNERS[backend](layer, X, state)
    outs = [Hs, *(final if isinstance(final, tuple) else (final,))]
    g = torch.Generator().manual_seed(2)
    loss = sum((o * torch.randn(o.shape, generator=g, dtype=o.dtype).to(o.device)).sum() for o in outs)
    wrt = [*layer.params.values(), *(state if isinstance(state, tuple) else (state,))]
    wrt += [X] if X.is_floating_point() else []
    return outs, torch.autograd.grad(loss, wrt)


@pytest.mark.parametrize("backend, cell", ACCELERATED)
@pytest.mark.parametrize("ids", [True, False], ids=["tokens", "vectors"])
@pytest.mark.parametrize("threads", [1, 2])
def test_accelerator_equals_the_cells_step(backend, cell, ids, threads, device):
    """float32 at the book's sizes: outputs within 1e-5, gradients within 1e-4 of their scale."""
    if backend == "kernel" and device.type != "cpu":
        pytest.skip("the C++ kernels run on the CPU")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        layer = make_layer(cell, 28 if ids else 40, 256, device=device)
        X, state = make_inputs(layer, 35, 32, ids)
        outs, grads = outputs_and_grads(backend, layer, X, state)
        ref_outs, ref_grads = outputs_and_grads("step", layer, X, state)
    finally:
        torch.set_num_threads(before)
    for out, ref in zip(outs, ref_outs):
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    for grad, ref in zip(grads, ref_grads):
        torch.testing.assert_close(grad, ref, rtol=1e-4, atol=1e-4 * max(ref.abs().max().item(), 1e-3))


@pytest.mark.parametrize("backend, cell", ACCELERATED)
@pytest.mark.parametrize("ids", [True, False], ids=["tokens", "vectors"])
def test_accelerator_equals_the_cells_step_in_float64(backend, cell, ids, device):
    if backend == "kernel" and device.type != "cpu":
        pytest.skip("the C++ kernels run on the CPU")
    layer = make_layer(cell, 6, 9, torch.float64, device=device)
    X, state = make_inputs(layer, 7, 3, ids)
    (outs, grads), (ref_outs, ref_grads) = (outputs_and_grads(name, layer, X, state) for name in (backend, "step"))
    for got, ref in zip([*outs, *grads], [*ref_outs, *ref_grads]):
        torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("cell", list(PROVEN))
def test_the_proven_fingerprints_are_the_cells_code(cell):
    """When this fails, a cell's project or step changed: check the tests above still pass for it, then
    put its new fingerprint where it is registered (zoo.backends.PROVEN, or its `accelerate` call)."""
    assert PROVEN[cell] == backends.fingerprint(cell), (cell.__name__, backends.fingerprint(cell))


def test_fingerprints_ignore_comments_and_layout_but_not_code():
    def step_a(self, XW, H):
        """A docstring."""
        H = torch.tanh(XW + H @ self.W_h)   # a comment
        return H, {}

    def step_b(self, XW, H):
        H = torch.tanh(XW +
                       H @ self.W_h)
        return H, {}

    def step_c(self, XW, H):
        H = torch.relu(XW + H @ self.W_h)
        return H, {}
    prints = [backends._fingerprint(Cell.project, f) for f in (step_a, step_b, step_c)]
    assert prints[0] == prints[1] != prints[2] and None not in prints


# ---- what may run a cell

def test_a_subclass_never_runs_its_parents_accelerators():
    class Peephole(LSTMCell):
        pass
    layer = make_layer(Peephole, 5, 8)
    X, _ = make_inputs(layer, 3, 2, ids=True)
    assert backends.candidates(layer, X) == ["step"]
    for forced in ("torch", "kernel"):
        assert backends.choose(layer, X, forced) == "step"


def test_an_edited_step_refuses_the_accelerators_and_says_so(monkeypatch, caplog):
    def step(self, XW, state):   # no forget gate
        H, C = state
        i, f, c, o = (XW + H @ self.W_h).chunk(4, -1)
        C = C + torch.sigmoid(i) * torch.tanh(c)
        return (torch.sigmoid(o) * torch.tanh(C), C), {}
    layer = make_layer(LSTMCell, 5, 8)
    X, state = make_inputs(layer, 3, 2, ids=True)
    assert "torch" in backends.candidates(layer, X)
    monkeypatch.setattr(LSTMCell, "step", step)
    backends._say_once.cache_clear()
    assert backends.candidates(layer, X) == ["step"]
    assert [r.getMessage() for r in caplog.records] == [
        "zoo: LSTMCell.step is not the code its accelerators were proven equal to, so LSTMCell runs its own step "
        "(update PROVEN in zoo/backends.py once the tests pass)"]
    Hs, _ = backends.run(layer, X, state, "torch")
    torch.testing.assert_close(Hs, backends.run_step(layer, X, state)[0])
    assert len(caplog.records) == 1                                   # said once


def test_the_kernel_runs_only_on_the_cpu_in_float32_or_float64():
    layer = make_layer(LSTMCell, 5, 8, torch.bfloat16)
    X, _ = make_inputs(layer, 3, 2, ids=True)
    assert "kernel" not in backends.candidates(layer, X)


def test_unknown_backend_names_are_refused():
    with pytest.raises(ValueError, match="unknown backend 'fast'"):
        backends.check_name("fast")


# ---- choosing by measurement

def test_auto_measures_once_and_remembers_on_disk(monkeypatch, tmp_path):
    path = tmp_path / "backends.json"
    monkeypatch.setenv(backends.CACHE_ENV, str(path))
    monkeypatch.setattr(backends, "_memory", {})
    monkeypatch.setattr(backends, "busy", lambda: False)
    calls = []

    def run(name, seconds):
        return lambda: calls.append(name) or seconds
    assert backends.fastest("k", {"step": run("step", 2.0), "torch": run("torch", 1.0)}) == "torch"
    assert backends.fastest("k", {"step": run("step", 0.1), "torch": run("torch", 1.0)}) == "torch"
    assert calls == ["step", "torch"]
    monkeypatch.setattr(backends, "_memory", {})           # a new process reads the file
    assert backends.fastest("k", {"step": run("step", 0.1), "torch": run("torch", 1.0)}) == "torch"
    assert calls == ["step", "torch"] and "k" in backends.choices()


def test_auto_picks_a_backend_that_may_run_the_layer(monkeypatch, tmp_path):
    monkeypatch.setenv(backends.CACHE_ENV, str(tmp_path / "backends.json"))
    monkeypatch.setattr(backends, "_memory", {})
    layer = make_layer(LSTMCell, 28, 32)
    X, state = make_inputs(layer, 10, 4, ids=True)
    assert backends.choose(layer, X) in backends.candidates(layer, X)
    [entry] = backends.choices().values()
    assert set(entry["seconds"]) == set(backends.candidates(layer, X)) and all(entry["seconds"].values())


def test_a_timing_taken_on_a_busy_machine_is_not_kept(monkeypatch, tmp_path):
    path = tmp_path / "backends.json"
    monkeypatch.setenv(backends.CACHE_ENV, str(path))
    monkeypatch.setattr(backends, "_memory", {})
    monkeypatch.setattr(backends, "busy", lambda: True)
    assert backends.fastest("busy", {"step": lambda: 1.0}) == "step"
    monkeypatch.setattr(backends, "busy", lambda: False)
    assert backends.fastest("quiet", {"step": lambda: 1.0}) == "step"
    assert set(json.loads(path.read_text())) == {"quiet"}


def test_an_unreadable_cache_only_costs_a_measurement(monkeypatch, tmp_path):
    path = tmp_path / "backends.json"
    path.write_text("{not json")
    monkeypatch.setenv(backends.CACHE_ENV, str(path))
    monkeypatch.setattr(backends, "_memory", {})
    assert backends.fastest("k", {"step": lambda: 1.0}) == "step"
