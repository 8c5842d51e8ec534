"""Every registered model: shapes, initial loss, gradients, fused == the book's loop, scratch <-> concise."""
import math

import pytest
import torch
from torch import nn

from zoo import create_model, list_models
from zoo.models import RecurrentLM
from zoo.models.convert import convert
from zoo.train import lm_loss

NAMES = ["rnn-scratch", "rnn", "gru-scratch", "gru", "lstm-scratch", "lstm", "deep-lstm-scratch", "deep-lstm"]
NEURAL = [n for n in list_models() if isinstance(create_model(n, num_hiddens=4), RecurrentLM)]


def batch(seed=0, B=3, T=11, V=28):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, V, (B, T), generator=g), torch.randint(0, V, (B, T), generator=g)


def random_state(model, B, seed=1):
    torch.manual_seed(seed)
    state = model.init_state(B)
    return tuple(torch.randn_like(s) * 0.5 for s in state) if isinstance(state, tuple) else torch.randn_like(state) * 0.5


def test_registry_has_the_books_models():
    assert set(NAMES) <= set(list_models())
    with pytest.raises(KeyError, match="unknown model"):
        create_model("transformer")


@pytest.mark.parametrize("name", NEURAL)
def test_shapes_and_state(name):
    model = create_model(name, num_hiddens=16)
    X, _ = batch()
    logits, state = model(X)
    assert logits.shape == (3, 11, 28)
    hs = state if isinstance(state, tuple) else (state,)
    assert all(h.shape == (model.config.num_layers, 3, 16) for h in hs)


@pytest.mark.parametrize("name", NEURAL)
def test_initial_loss_is_log_vocab(name):
    torch.manual_seed(0)
    model = create_model(name)
    X, Y = batch(B=8, T=35)
    assert lm_loss(model(X)[0], Y).item() == pytest.approx(math.log(28), abs=0.05)


@pytest.mark.parametrize("name", NEURAL)
def test_every_parameter_gets_a_gradient(name):
    torch.manual_seed(0)
    model = create_model(name, num_hiddens=16, init="uniform")
    X, Y = batch()
    lm_loss(model(X, random_state(model, 3))[0], Y).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", NEURAL)
def test_a_few_steps_lower_the_loss(name, corpus):
    torch.manual_seed(0)
    model = create_model(name, num_hiddens=64)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    ids = corpus.splits.train[:32 * 36].view(32, 36).long()   # the corpus holds compact (uint8) ids
    X, Y = ids[:, :-1], ids[:, 1:]
    losses = []
    for _ in range(15):
        loss = lm_loss(model(X)[0], Y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.4, losses


@pytest.mark.parametrize("name, gru_form", [(n, "book") for n in NEURAL] + [("gru-scratch", "pytorch")])
def test_fused_forward_equals_the_books_loop(name, gru_form):
    """The fast path (zoo.kernels over the fused weights) against the step-by-step reference."""
    torch.manual_seed(0)
    extra = {"gru_form": gru_form} if name == "gru-scratch" else {}
    model = create_model(name, num_hiddens=12, init="uniform", **extra)
    X, Y = batch()
    state = random_state(model, 3)
    grads = []
    for forward in (RecurrentLM.forward, type(model).forward_reference):
        model.zero_grad()
        logits, new_state = forward(model, X, state)
        lm_loss(logits, Y).backward()
        grads.append((logits.detach(), new_state, [p.grad.clone() for p in model.parameters()]))
    (l1, s1, g1), (l2, s2, g2) = grads
    torch.testing.assert_close(l1, l2, atol=1e-5, rtol=1e-5)
    for a, b in zip(s1 if isinstance(s1, tuple) else (s1,), s2 if isinstance(s2, tuple) else (s2,)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_kept_fused_weights_follow_every_change():
    """Without autograd a scratch model keeps its concatenated weights; a step, a load or a move renews them."""
    model = create_model("deep-lstm-scratch", num_hiddens=8)
    X, _ = batch()

    def outputs():
        with torch.no_grad():
            return model(X)[0], model.forward_reference(X)[0]

    torch.testing.assert_close(*outputs())
    with torch.no_grad():
        assert model.layer_weights(1)[0] is model.layer_weights(1)[0]
    assert model.layer_weights(1)[0].requires_grad        # with autograd: a fresh, differentiable one
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    lm_loss(model(X)[0], batch(1)[1]).backward()
    opt.step()                                            # in place: the version counters move
    torch.testing.assert_close(*outputs())
    model.load_state_dict({k: torch.randn_like(v) for k, v in model.state_dict().items()})
    torch.testing.assert_close(*outputs())
    for p in model.parameters():                          # new storage, same version counters
        p.data = torch.randn_like(p)
    torch.testing.assert_close(*outputs())


@pytest.mark.parametrize("name", ["rnn-scratch", "rnn", "gru-scratch", "gru", "lstm-scratch", "lstm",
                                  "deep-lstm-scratch", "deep-lstm"])
def test_scratch_and_concise_convert_exactly(name):
    torch.manual_seed(0)
    extra = {"gru_form": "pytorch"} if name == "gru-scratch" else {}
    model = create_model(name, num_hiddens=32, init="uniform", **extra).eval()
    other = convert(model, "concise" if model.config.impl == "scratch" else "scratch")
    back = convert(other, model.config.impl)
    X, _ = batch()
    for m in (other, back):
        torch.testing.assert_close(m.forward_reference(X)[0], model.forward_reference(X)[0], atol=1e-5, rtol=0)
    assert type(back) is type(model)


def test_the_books_gru_form_does_not_convert():
    with pytest.raises(ValueError, match="gru_form='pytorch'"):
        convert(create_model("gru-scratch", num_hiddens=4), "concise")


@pytest.mark.parametrize("name", ["rnn-scratch", "rnn", "gru-scratch", "gru"])
def test_num_layers_works_for_every_architecture(name):
    model = create_model(name, num_hiddens=8, num_layers=3)
    X, _ = batch()
    assert model(X)[0].shape == (3, 11, 28)


def test_concise_parameters_are_the_books_rnnmodel():
    """Same names and shapes as d2l.RNNModel(nn.LSTM(28, 256, 2), 28): `rnn.*` and `linear.*`."""
    book = nn.Module()
    book.rnn, book.linear = nn.LSTM(28, 256, 2), nn.Linear(256, 28)
    ours = create_model("deep-lstm")
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in book.state_dict().items()}
    book.load_state_dict(ours.state_dict(), strict=True)


def test_scratch_parameters_use_the_books_names():
    names = set(create_model("lstm-scratch").state_dict())
    assert {"cells.0.W_xi", "cells.0.W_hf", "cells.0.b_o", "cells.0.W_xc", "W_hq", "b_q"} <= names
    assert {"cells.0.W_xz", "cells.0.W_hr", "cells.0.W_hh", "cells.0.b_h"} <= set(create_model("gru-scratch").state_dict())


def test_book_init_for_scratch_models():
    torch.manual_seed(0)
    cell = create_model("lstm-scratch").cells[0]
    assert cell.W_xi.std().item() == pytest.approx(0.01, rel=0.05) and cell.b_i.abs().sum() == 0


def test_gates_are_recorded_per_layer():
    model = create_model("deep-lstm-scratch", num_hiddens=8)
    X, _ = batch()
    _, _, gates = model.forward_reference(X, record=True)
    assert set(gates) == {"input", "forget", "output"}
    assert gates["forget"].shape == (2, 3, 11, 8) and ((gates["forget"] > 0) & (gates["forget"] < 1)).all()


@pytest.mark.parametrize("name", ["gru", "gru-scratch", "lstm", "deep-lstm"])
def test_gate_activations_per_character(name):
    from zoo.gates import gate_activations
    model = create_model(name, num_hiddens=8)
    gates = gate_activations(model, torch.arange(13) % 28)
    assert set(gates) == ({"reset", "update"} if "gru" in name else {"input", "forget", "output"})
    assert all(g.shape == (model.config.num_layers, 13, 8) for g in gates.values())
    with pytest.raises(ValueError, match="no gates"):
        gate_activations(create_model("rnn", num_hiddens=4), torch.arange(3))
