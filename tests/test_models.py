"""Every registered model: shapes, initial loss, gradients, every backend == the cells' own step,
scratch <-> concise, and a reader's own cell, trained, sampled, scored and shown like the book's."""
import math

import pytest
import torch
from torch import nn

from zoo import backends, create_model, list_models, register_model
from zoo.evaluate import score
from zoo.gates import gate_activations
from zoo.generate import generate
from zoo.models import BOOK, ModelConfig, RecurrentLM, ScratchLM
from zoo.models.cells import LSTMCell
from zoo.models.convert import TWINS, convert
from zoo.recipes import recipe_for
from zoo.train import Trainer, lm_loss

NEURAL = [n for n in list_models() if isinstance(create_model(n, num_hiddens=4), RecurrentLM)]


def batch(seed=0, B=3, T=11, V=28, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, V, (B, T), generator=g).to(device), torch.randint(0, V, (B, T), generator=g).to(device)


def random_state(model, B, seed=1):
    torch.manual_seed(seed)
    state = model.init_state(B)
    return tuple(torch.randn_like(s) * 0.5 for s in state) if isinstance(state, tuple) else torch.randn_like(state) * 0.5


def states(state):
    return state if isinstance(state, tuple) else (state,)


def test_registry_has_the_books_models():
    assert set(BOOK) <= set(list_models())
    with pytest.raises(KeyError, match="unknown model"):
        create_model("transformer")


@pytest.mark.parametrize("name", NEURAL)
def test_shapes_and_state(name, device):
    model = create_model(name, num_hiddens=16).to(device)
    X, _ = batch(device=device)
    logits, state = model(X)
    assert logits.shape == (3, 11, 28)
    assert all(h.shape == (model.config.num_layers, 3, 16) for h in states(state))


@pytest.mark.parametrize("name", NEURAL)
def test_initial_loss_is_log_vocab(name, device):
    torch.manual_seed(0)
    model = create_model(name).to(device)
    X, Y = batch(B=8, T=35, device=device)
    assert lm_loss(model(X)[0], Y).item() == pytest.approx(math.log(28), abs=0.05)


@pytest.mark.parametrize("name", NEURAL)
def test_every_parameter_gets_a_gradient(name, device):
    torch.manual_seed(0)
    model = create_model(name, num_hiddens=16, init="uniform").to(device)
    X, Y = batch(device=device)
    lm_loss(model(X, random_state(model, 3))[0], Y).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", NEURAL)
def test_a_few_steps_lower_the_loss(name, corpus, device):
    torch.manual_seed(0)
    model = create_model(name, num_hiddens=64).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    ids = corpus.splits.train[:32 * 36].view(32, 36).to(device, torch.long)   # the corpus holds compact ids
    X, Y = ids[:, :-1], ids[:, 1:]
    losses = []
    for _ in range(20):
        loss = lm_loss(model(X)[0], Y)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)   # as the trainer does: the ReLU RNN needs it
        opt.step()
        losses.append(loss.item())
    assert min(losses[-5:]) < losses[0] - 0.4, losses      # the unbounded variants may spike on the way


def forward_and_grads(model, backend, X, Y, state):
    model.use_backend(backend).zero_grad()
    logits, new_state = model(X, state)
    lm_loss(logits, Y).backward()
    return logits.detach(), new_state, [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("name", NEURAL)
@pytest.mark.parametrize("embedding", [0, 5])
def test_every_backend_computes_the_cells_own_step(name, embedding, device):
    """The whole model, forced onto each backend that may run it, against its cells' own step."""
    torch.manual_seed(0)
    model = create_model(name, num_hiddens=12, init="uniform", embedding=embedding).to(device)
    X, Y = batch(device=device)
    state = random_state(model, 3)
    layer = model.layer(0)
    names = backends.candidates(layer, model.inputs(X.t()))
    assert names[0] == "step" and ("torch" in names) == (model.cell in backends.TORCH)
    l1, s1, g1 = forward_and_grads(model, "step", X, Y, state)
    for backend in names[1:]:
        l2, s2, g2 = forward_and_grads(model, backend, X, Y, state)
        torch.testing.assert_close(l2, l1, atol=1e-5, rtol=1e-5)
        for a, b in zip(states(s2), states(s1)):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
        for a, b in zip(g2, g1):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", sorted(TWINS))
def test_scratch_and_concise_convert_exactly(name, device):
    torch.manual_seed(0)
    model = create_model(name, num_hiddens=32, init="uniform").to(device).eval()
    other = convert(model)
    back = convert(other)
    X, _ = batch(device=device)
    for m in (other, back):
        torch.testing.assert_close(m.use_backend("step")(X)[0], model.use_backend("step")(X)[0], atol=1e-5, rtol=0)
    assert type(back) is type(model) and back.config == model.config


def test_the_books_gru_does_not_convert():
    with pytest.raises(ValueError, match="gru-torch-scratch"):
        convert(create_model("gru-scratch", num_hiddens=4))


@pytest.mark.parametrize("name", ["rnn-scratch", "rnn", "gru-scratch", "gru"])
def test_num_layers_works_for_every_architecture(name, device):
    model = create_model(name, num_hiddens=8, num_layers=3).to(device)
    X, _ = batch(device=device)
    assert model(X)[0].shape == (3, 11, 28)


def test_concise_parameters_are_the_books_rnnmodel():
    """Same names and shapes as d2l.RNNModel(nn.LSTM(28, 256, 2), 28): `rnn.*` and `linear.*`."""
    book = nn.Module()
    book.rnn, book.linear = nn.LSTM(28, 256, 2), nn.Linear(256, 28)
    ours = create_model("deep-lstm")
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in book.state_dict().items()}
    book.load_state_dict(ours.state_dict(), strict=True)


def test_scratch_parameters_are_the_books_fused_gate_by_gate():
    """W_x (V, 4h) is [W_xi | W_xf | W_xc | W_xo]: PyTorch's gate order, one matmul for all gates."""
    shapes = {k: tuple(v.shape) for k, v in create_model("lstm-scratch", num_hiddens=8).state_dict().items()}
    assert shapes == {"cells.0.W_x": (28, 32), "cells.0.W_h": (8, 32), "cells.0.b": (32,), "W_hq": (8, 28),
                      "b_q": (28,)}


def test_book_init_for_scratch_models():
    torch.manual_seed(0)
    cell = create_model("lstm-scratch").cells[0]
    assert cell.W_x.std().item() == pytest.approx(0.01, rel=0.05) and cell.b.abs().sum() == 0


@pytest.mark.parametrize("name", ["gru", "gru-scratch", "lstm", "deep-lstm-scratch"])
def test_gate_activations_per_character(name, device):
    model = create_model(name, num_hiddens=8).to(device)
    gates = gate_activations(model, torch.arange(13) % 28)
    assert set(gates) == ({"reset", "update"} if "gru" in name else {"input", "forget", "output"})
    assert all(g.shape == (model.config.num_layers, 13, 8) for g in gates.values())
    assert all(((g > 0) & (g < 1)).all() for g in gates.values())
    with pytest.raises(ValueError, match="no gates"):
        gate_activations(create_model("rnn", num_hiddens=4), torch.arange(3))


def test_gates_of_a_concise_model_are_those_of_its_scratch_twin(device):
    torch.manual_seed(0)
    model = create_model("deep-lstm", num_hiddens=8, init="uniform").to(device)
    ids = torch.arange(9) % 28
    for name, values in gate_activations(model, ids).items():
        torch.testing.assert_close(values, gate_activations(convert(model), ids)[name])


# ---- a reader's own cell: a few lines, and everything works through its own step

class PeepholeLSTMCell(LSTMCell):
    """An LSTM whose gates also read the memory cell (Gers & Schmidhuber, 2000)."""

    def __init__(self, num_inputs, num_hiddens, init="book"):
        super().__init__(num_inputs, num_hiddens, init)
        self.w_c = nn.Parameter(torch.zeros(3, num_hiddens))      # peepholes of the input, forget, output gates

    def step(self, XW, state):
        H, C = state
        i, f, c, o = (XW + H @ self.W_h).chunk(4, -1)
        I = torch.sigmoid(i + self.w_c[0] * C)
        F = torch.sigmoid(f + self.w_c[1] * C)
        C = F * C + I * torch.tanh(c)
        O = torch.sigmoid(o + self.w_c[2] * C)
        return (O * torch.tanh(C), C), {"input": I, "forget": F, "output": O}


@pytest.fixture
def registered(monkeypatch):
    """Registers models for one test only."""
    from zoo.models import registry
    monkeypatch.setattr(registry, "_MODELS", dict(registry._MODELS))
    return register_model


def test_a_readers_own_cell_trains_samples_scores_and_shows_its_gates(registered, small_corpus, tmp_path, device):
    @registered
    def my_peephole_lstm(**config):
        """An LSTM with peephole connections."""
        return ScratchLM(ModelConfig(**config), PeepholeLSTMCell)

    corpus = small_corpus
    model = create_model("my-peephole-lstm", vocab_size=len(corpus.tokenizer), num_hiddens=32)
    assert backends.candidates(model.layer(0), torch.zeros(1, 1, dtype=torch.long)) == ["step"]
    recipe = recipe_for("modern", "my-peephole-lstm", epochs=3, batch_size=8, num_steps=20, warmup_steps=2,
                        patience=0, ema=0.0)
    trainer = Trainer(model, corpus.splits, recipe, corpus.tokenizer, "my-peephole-lstm", tmp_path / "run", device)
    logs = list(trainer.run())
    assert logs[-1].train_perplexity < logs[0].train_perplexity
    assert model.cells[0].w_c.abs().sum() > 0                      # the peepholes were trained
    text = generate(model, corpus.tokenizer, "the time", 30, temperature=0.8, seed=1).texts[0]
    assert len(text) == len("the time") + 30
    assert math.isfinite(score(model, corpus.splits.valid).perplexity)
    gates = gate_activations(model, corpus.splits.valid[:20])
    assert gates["forget"].shape == (1, 20, 32)

    from zoo.checkpoint import load_model, save_model
    save_model(tmp_path / "folder", "my-peephole-lstm", model, corpus.tokenizer)
    again = load_model(tmp_path / "folder", device)
    ids = corpus.splits.valid[None, :50].to(device)
    torch.testing.assert_close(again.model(ids)[0], model.eval()(ids)[0])


def test_training_follows_an_edited_step(monkeypatch, caplog, device):
    """Edit LSTMCell.step as the book's exercise asks (no forget gate): the model computes the new step,
    on every backend setting, and the accelerators proven for the old one are refused."""
    def step_without_forget_gate(self, XW, state):
        H, C = state
        i, f, c, o = (XW + H @ self.W_h).chunk(4, -1)
        C = C + torch.sigmoid(i) * torch.tanh(c)
        return (torch.sigmoid(o) * torch.tanh(C), C), {}

    torch.manual_seed(0)
    model = create_model("lstm", num_hiddens=16, init="uniform").to(device)
    X, Y = batch(device=device)
    before = model(X)[0].detach()
    monkeypatch.setattr(LSTMCell, "step", step_without_forget_gate)
    backends._say_once.cache_clear()
    after = model(X)[0].detach()
    assert "LSTMCell.step is not the code its accelerators were proven equal to" in caplog.text
    assert not torch.allclose(before, after)
    for backend in ("auto", "torch", "kernel"):
        torch.testing.assert_close(model.use_backend(backend)(X)[0].detach(), after)
    reference = convert(model)                         # the scratch twin, running the same edited step
    torch.testing.assert_close(reference(X)[0].detach(), after)
    lm_loss(model(X)[0], Y).backward()
    assert model.rnn.weight_hh_l0.grad[16:32].abs().sum() == 0      # the forget gate's rows get no gradient
