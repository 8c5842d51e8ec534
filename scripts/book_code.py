"""The book's own code, for the speed benchmark to race against: `d2l` 0.17.6 and the notebook cells it lacks.

`d2l.torch` (pip install --no-deps d2l==0.17.6) holds what the book marks `#@save`: `RNNModelScratch`,
`RNNModel`, `train_epoch_ch8`, `predict_ch8`, `load_data_time_machine`. The scratch cells (`get_params`,
`init_*_state` and the step functions) live only in the notebooks, so they are transcribed below as the
book writes them (D2L 8.5, 9.1, 9.2), and the deep LSTM from scratch is the book's LSTM cell stacked twice
(its exercise 9.3.1), written in the same style. Nothing here is ours except the import shim, the pointer
to the local corpus and `book_model` / `copy_weights`, which build these models and give them our weights.
"""
from __future__ import annotations

import functools
import importlib.util
import sys
import types
from pathlib import Path

import torch
from torch import nn

D2L_VERSION = "0.17.6"


def import_d2l() -> types.ModuleType:
    """`from d2l import torch as d2l`, with an empty stand-in for torchvision while it imports.

    d2l imports torchvision at module level for its image chapters; the PyPI torchvision build does not
    import beside this project's torch, and nothing the RNN chapters use touches it.
    """
    if importlib.util.find_spec("d2l") is None:
        raise ImportError(f"the book's code is not installed: pip install --no-deps d2l=={D2L_VERSION}")
    added = []
    for name in ("torchvision", "torchvision.transforms"):
        if name not in sys.modules:
            sys.modules[name] = types.ModuleType(name)
            added.append(name)
    if "torchvision.transforms" in added:
        sys.modules["torchvision"].transforms = sys.modules["torchvision.transforms"]
    try:
        from d2l import torch as d2l_torch
    finally:
        for name in added:
            del sys.modules[name]
    return d2l_torch


d2l = import_d2l()


def use_local_corpus(path: str | Path, sha1: str) -> None:
    """Make `d2l.download('time_machine')` return `path` (already checksummed): it never downloads.

    The book reads `../data/timemachine.txt` relative to the working directory and downloads it if absent;
    here its cache directory becomes the corpus' folder and its URL the corpus' own name, so the book's
    own checksum test finds the file and returns it.
    """
    path = Path(path).resolve()
    d2l.DATA_HUB["time_machine"] = (path.as_uri(), sha1)
    if not hasattr(d2l, "_book_download"):
        d2l._book_download = d2l.download
    d2l.download = functools.partial(d2l._book_download, cache_dir=str(path.parent))


# ---------------------------------------------------------------------------- D2L 8.5: RNN from scratch

def get_params(vocab_size, num_hiddens, device):
    num_inputs = num_outputs = vocab_size

    def normal(shape):
        return torch.randn(size=shape, device=device) * 0.01

    # Hidden layer parameters
    W_xh = normal((num_inputs, num_hiddens))
    W_hh = normal((num_hiddens, num_hiddens))
    b_h = torch.zeros(num_hiddens, device=device)
    # Output layer parameters
    W_hq = normal((num_hiddens, num_outputs))
    b_q = torch.zeros(num_outputs, device=device)
    # Attach gradients
    params = [W_xh, W_hh, b_h, W_hq, b_q]
    for param in params:
        param.requires_grad_(True)
    return params


def init_rnn_state(batch_size, num_hiddens, device):
    return (torch.zeros((batch_size, num_hiddens), device=device), )


def rnn(inputs, state, params):
    # Here `inputs` shape: (`num_steps`, `batch_size`, `vocab_size`)
    W_xh, W_hh, b_h, W_hq, b_q = params
    H, = state
    outputs = []
    # Shape of `X`: (`batch_size`, `vocab_size`)
    for X in inputs:
        H = torch.tanh(torch.mm(X, W_xh) + torch.mm(H, W_hh) + b_h)
        Y = torch.mm(H, W_hq) + b_q
        outputs.append(Y)
    return torch.cat(outputs, dim=0), (H,)


# ---------------------------------------------------------------------------- D2L 9.1: GRU from scratch

def get_gru_params(vocab_size, num_hiddens, device):   # the book's `get_params` of 9.1
    num_inputs = num_outputs = vocab_size

    def normal(shape):
        return torch.randn(size=shape, device=device)*0.01

    def three():
        return (normal((num_inputs, num_hiddens)),
                normal((num_hiddens, num_hiddens)),
                torch.zeros(num_hiddens, device=device))

    W_xz, W_hz, b_z = three()  # Update gate parameters
    W_xr, W_hr, b_r = three()  # Reset gate parameters
    W_xh, W_hh, b_h = three()  # Candidate hidden state parameters
    # Output layer parameters
    W_hq = normal((num_hiddens, num_outputs))
    b_q = torch.zeros(num_outputs, device=device)
    # Attach gradients
    params = [W_xz, W_hz, b_z, W_xr, W_hr, b_r, W_xh, W_hh, b_h, W_hq, b_q]
    for param in params:
        param.requires_grad_(True)
    return params


def init_gru_state(batch_size, num_hiddens, device):
    return (torch.zeros((batch_size, num_hiddens), device=device), )


def gru(inputs, state, params):
    W_xz, W_hz, b_z, W_xr, W_hr, b_r, W_xh, W_hh, b_h, W_hq, b_q = params
    H, = state
    outputs = []
    for X in inputs:
        Z = torch.sigmoid((X @ W_xz) + (H @ W_hz) + b_z)
        R = torch.sigmoid((X @ W_xr) + (H @ W_hr) + b_r)
        H_tilda = torch.tanh((X @ W_xh) + ((R * H) @ W_hh) + b_h)
        H = Z * H + (1 - Z) * H_tilda
        Y = H @ W_hq + b_q
        outputs.append(Y)
    return torch.cat(outputs, dim=0), (H,)


# ---------------------------------------------------------------------------- D2L 9.2: LSTM from scratch

def get_lstm_params(vocab_size, num_hiddens, device):
    num_inputs = num_outputs = vocab_size

    def normal(shape):
        return torch.randn(size=shape, device=device)*0.01

    def three():
        return (normal((num_inputs, num_hiddens)),
                normal((num_hiddens, num_hiddens)),
                torch.zeros(num_hiddens, device=device))

    W_xi, W_hi, b_i = three()  # Input gate parameters
    W_xf, W_hf, b_f = three()  # Forget gate parameters
    W_xo, W_ho, b_o = three()  # Output gate parameters
    W_xc, W_hc, b_c = three()  # Candidate memory cell parameters
    # Output layer parameters
    W_hq = normal((num_hiddens, num_outputs))
    b_q = torch.zeros(num_outputs, device=device)
    # Attach gradients
    params = [W_xi, W_hi, b_i, W_xf, W_hf, b_f, W_xo, W_ho, b_o, W_xc, W_hc,
              b_c, W_hq, b_q]
    for param in params:
        param.requires_grad_(True)
    return params


def init_lstm_state(batch_size, num_hiddens, device):
    return (torch.zeros((batch_size, num_hiddens), device=device),
            torch.zeros((batch_size, num_hiddens), device=device))


def lstm(inputs, state, params):
    [W_xi, W_hi, b_i, W_xf, W_hf, b_f, W_xo, W_ho, b_o, W_xc, W_hc, b_c,
     W_hq, b_q] = params
    (H, C) = state
    outputs = []
    for X in inputs:
        I = torch.sigmoid((X @ W_xi) + (H @ W_hi) + b_i)
        F = torch.sigmoid((X @ W_xf) + (H @ W_hf) + b_f)
        O = torch.sigmoid((X @ W_xo) + (H @ W_ho) + b_o)
        C_tilda = torch.tanh((X @ W_xc) + (H @ W_hc) + b_c)
        C = F * C + I * C_tilda
        H = O * torch.tanh(C)
        Y = (H @ W_hq) + b_q
        outputs.append(Y)
    return torch.cat(outputs, dim=0), (H, C)


# ---------------------------------------------------------------------------- D2L 9.3, exercise 1: deep LSTM from scratch
# The book gives no solution: this is 9.2's LSTM cell stacked twice in 9.2's style. Layer 2 reads layer 1's
# hidden state; the state is (H_1, C_1, H_2, C_2), a flat tuple as `train_epoch_ch8` detaches it.

def get_deep_lstm_params(vocab_size, num_hiddens, device, num_layers=2):
    num_inputs = num_outputs = vocab_size

    def normal(shape):
        return torch.randn(size=shape, device=device)*0.01

    def three(num_inputs):
        return (normal((num_inputs, num_hiddens)),
                normal((num_hiddens, num_hiddens)),
                torch.zeros(num_hiddens, device=device))

    params = []
    for layer in range(num_layers):
        layer_inputs = num_inputs if layer == 0 else num_hiddens
        W_xi, W_hi, b_i = three(layer_inputs)  # Input gate parameters
        W_xf, W_hf, b_f = three(layer_inputs)  # Forget gate parameters
        W_xo, W_ho, b_o = three(layer_inputs)  # Output gate parameters
        W_xc, W_hc, b_c = three(layer_inputs)  # Candidate memory cell parameters
        params += [W_xi, W_hi, b_i, W_xf, W_hf, b_f, W_xo, W_ho, b_o, W_xc, W_hc, b_c]
    # Output layer parameters
    W_hq = normal((num_hiddens, num_outputs))
    b_q = torch.zeros(num_outputs, device=device)
    params += [W_hq, b_q]
    # Attach gradients
    for param in params:
        param.requires_grad_(True)
    return params


def init_deep_lstm_state(batch_size, num_hiddens, device, num_layers=2):
    return tuple(torch.zeros((batch_size, num_hiddens), device=device)
                 for _ in range(2 * num_layers))


def deep_lstm(inputs, state, params):
    W_hq, b_q = params[-2:]
    num_layers = len(state) // 2
    state = list(state)
    outputs = []
    for X in inputs:
        for layer in range(num_layers):
            [W_xi, W_hi, b_i, W_xf, W_hf, b_f, W_xo, W_ho, b_o, W_xc, W_hc,
             b_c] = params[12 * layer:12 * (layer + 1)]
            H, C = state[2 * layer], state[2 * layer + 1]
            I = torch.sigmoid((X @ W_xi) + (H @ W_hi) + b_i)
            F = torch.sigmoid((X @ W_xf) + (H @ W_hf) + b_f)
            O = torch.sigmoid((X @ W_xo) + (H @ W_ho) + b_o)
            C_tilda = torch.tanh((X @ W_xc) + (H @ W_hc) + b_c)
            C = F * C + I * C_tilda
            H = O * torch.tanh(C)
            state[2 * layer], state[2 * layer + 1] = H, C
            X = H
        Y = (H @ W_hq) + b_q
        outputs.append(Y)
    return torch.cat(outputs, dim=0), tuple(state)


# ---------------------------------------------------------------------------- the book's models by our names

# Scratch: (get_params, init_state, forward_fn) as passed to d2l.RNNModelScratch, and the names of the
# `params` list in its order (ours are the same names, `cells.<layer>.` in front, so weights can be copied).
_LSTM_NAMES = ["W_xi", "W_hi", "b_i", "W_xf", "W_hf", "b_f", "W_xo", "W_ho", "b_o", "W_xc", "W_hc", "b_c"]
SCRATCH = {
    "rnn-scratch": (get_params, init_rnn_state, rnn, [["W_xh", "W_hh", "b_h"]]),
    "gru-scratch": (get_gru_params, init_gru_state, gru,
                    [["W_xz", "W_hz", "b_z", "W_xr", "W_hr", "b_r", "W_xh", "W_hh", "b_h"]]),
    "lstm-scratch": (get_lstm_params, init_lstm_state, lstm, [_LSTM_NAMES]),
    "deep-lstm-scratch": (get_deep_lstm_params, init_deep_lstm_state, deep_lstm, [_LSTM_NAMES, _LSTM_NAMES]),
}
# Our cells' gate blocks, in the order of their fused weights (the book's letters: h~ is "h", C~ is "c").
GATE_ORDER = {"rnn-scratch": "h", "gru-scratch": "rzh", "lstm-scratch": "ifco", "deep-lstm-scratch": "ifco"}
# Concise (D2L 8.6, 9.1, 9.2, 9.3): the torch layer and its number of layers, wrapped in d2l.RNNModel.
CONCISE = {"rnn": (nn.RNN, 1), "gru": (nn.GRU, 1), "lstm": (nn.LSTM, 1), "deep-lstm": (nn.LSTM, 2)}


def book_model(name: str, vocab_size: int, num_hiddens: int, device):
    """The book's model for one of our registry names, built as the book builds it."""
    if name in SCRATCH:
        get, init_state, forward_fn, _ = SCRATCH[name]
        return d2l.RNNModelScratch(vocab_size, num_hiddens, device, get, init_state, forward_fn)
    layer, num_layers = CONCISE[name]
    return d2l.RNNModel(layer(vocab_size, num_hiddens, num_layers), vocab_size=vocab_size).to(device)


def book_updater(net, lr: float):
    """What `d2l.train_ch8` hands `train_epoch_ch8`: torch's SGD for a module, `d2l.sgd` for scratch."""
    if isinstance(net, nn.Module):
        return torch.optim.SGD(net.parameters(), lr)
    return lambda batch_size: d2l.sgd(net.params, lr, batch_size)


@torch.no_grad()
def copy_weights(ours: nn.Module, net, name: str) -> None:
    """Give the book's model `net` the weights of our model `ours` (same registry `name`).

    Concise: our state dict loads into `d2l.RNNModel` strictly (same names and shapes). Scratch: each of
    the book's parameters is its gate's block of our fused ones (`W_x` = [W_xi | W_xf | W_xc | W_xo] for an
    LSTM, PyTorch's gate order); `net.params` stays the same tensors.
    """
    if name in CONCISE:
        net.load_state_dict(ours.state_dict(), strict=True)
        return
    blocks = {"W_hq": ours.W_hq, "b_q": ours.b_q}
    for l, cell in enumerate(ours.cells):
        for fused, book in (("W_x", "W_x"), ("W_h", "W_h"), ("b", "b_")):
            for gate, block in zip(GATE_ORDER[name], getattr(cell, fused).chunk(cell.gates, -1)):
                blocks[f"cells.{l}.{book}{gate}"] = block
    names = [f"cells.{l}.{n}" for l, layer in enumerate(SCRATCH[name][3]) for n in layer] + ["W_hq", "b_q"]
    if len(names) != len(net.params) or set(names) != set(blocks):
        raise ValueError(f"{name}: our parameters {sorted(blocks)} do not match the book's")
    for param, key in zip(net.params, names):
        param.copy_(blocks[key])
