"""Variants of the book's cells that its exercises ask about, each a few lines over the cell it changes.

They are registered models like the book's, so everything (training, sampling, scoring, the gates, the
tests parametrized over the registry) works for them; zoo/exercises.py trains them against the book's.
Each runs its own `step`, except the ReLU RNN, whose maths torch's `rnn_relu` computes: it is registered
here as that cell's accelerator, and tests/test_backends.py proves the two equal like the book's.
"""
from __future__ import annotations

import torch
from torch import nn

from zoo import backends
from zoo.models.base import ModelConfig
from zoo.models.cells import Cell, GRUCell, LSTMCell, RNNCell
from zoo.models.registry import register_model
from zoo.models.scratch import ScratchLM

# ---------------------------------------------------------------------------- 8.5: the activation


class ReLURNNCell(RNNCell):
    """D2L 8.5 exercise 7: the vanilla RNN with ReLU instead of tanh (unbounded: it needs the clipping)."""

    equations = (r"\mathbf{H}_t &= \max(0, \mathbf{X}_t \mathbf{W}_{xh} + \mathbf{H}_{t-1} \mathbf{W}_{hh} "
                 r"+ \mathbf{b}_h)",)

    def step(self, XW, H):
        H = torch.relu(XW + H @ self.W_h)                     # H_t = max(0, X_t W_xh + H_{t-1} W_hh + b_h)
        return H, {}


backends.accelerate(ReLURNNCell, torch=torch.rnn_relu, proven="82e568f16f65ba98")


# ---------------------------------------------------------------------------- 9.1: parts of a GRU


class ResetOnlyGRUCell(Cell):
    """D2L 9.1 exercise 4: a GRU with only its reset gate; the candidate is the new state (Z = 0).

    Blocks of W_x, W_h and b: reset r, candidate h~.
    """

    gates = 2
    equations = (GRUCell.equations[0], GRUCell.equations[2], r"\mathbf{H}_t &= \tilde{\mathbf{H}}_t")

    def step(self, XW, H):
        h = H.shape[-1]
        R = torch.sigmoid(XW[:, :h] + H @ self.W_h[:, :h])                    # reset gate
        H = torch.tanh(XW[:, h:] + (R * H) @ self.W_h[:, h:])                # candidate, taken whole
        return H, {"reset": R}


class UpdateOnlyGRUCell(Cell):
    """D2L 9.1 exercise 4: a GRU with only its update gate; the candidate sees all of H_{t-1} (R = 1).

    Blocks of W_x, W_h and b: update z, candidate h~.
    """

    gates = 2
    equations = (GRUCell.equations[1],
                 r"\tilde{\mathbf{H}}_t &= \tanh(\mathbf{X}_t \mathbf{W}_{xh} + \mathbf{H}_{t-1} \mathbf{W}_{hh} "
                 r"+ \mathbf{b}_h)", GRUCell.equations[3])

    def step(self, XW, H):
        z, h_tilde = (XW + H @ self.W_h).chunk(2, -1)         # both affine maps, one matmul
        Z = torch.sigmoid(z)                                  # update gate
        H = Z * H + (1 - Z) * torch.tanh(h_tilde)             # convex update with the candidate
        return H, {"update": Z}


# ---------------------------------------------------------------------------- 9.2: classic LSTM variants

_I, _F, _O, _C_TILDE, _C, _H = LSTMCell.equations


class NoForgetLSTMCell(LSTMCell):
    """The LSTM of 1997, before the forget gate (F = 1): the memory only adds.

    Blocks of W_x, W_h and b: input i, candidate c, output o.
    """

    gates = 3
    equations = (_I, _O, _C_TILDE, r"\mathbf{C}_t &= \mathbf{C}_{t-1} + \mathbf{I}_t \odot \tilde{\mathbf{C}}_t", _H)

    def step(self, XW, state):
        H, C = state
        i, c, o = (XW + H @ self.W_h).chunk(3, -1)
        I = torch.sigmoid(i)                                  # input gate
        C = C + I * torch.tanh(c)                             # memory cell: nothing is forgotten
        O = torch.sigmoid(o)                                  # output gate
        H = O * torch.tanh(C)                                 # hidden state
        return (H, C), {"input": I, "output": O}


class CoupledLSTMCell(LSTMCell):
    """An LSTM whose forget gate is one minus its input gate (CIFG; Greff et al., 2017): F = 1 - I.

    Blocks of W_x, W_h and b: input i, candidate c, output o.
    """

    gates = 3
    equations = (_I, _O, _C_TILDE,
                 r"\mathbf{C}_t &= (1 - \mathbf{I}_t) \odot \mathbf{C}_{t-1} + \mathbf{I}_t \odot \tilde{\mathbf{C}}_t",
                 _H)

    def step(self, XW, state):
        H, C = state
        i, c, o = (XW + H @ self.W_h).chunk(3, -1)
        I = torch.sigmoid(i)                                  # input gate, and 1 - I forgets
        C = (1 - I) * C + I * torch.tanh(c)                   # memory cell
        O = torch.sigmoid(o)                                  # output gate
        H = O * torch.tanh(C)                                 # hidden state
        return (H, C), {"input": I, "forget": 1 - I, "output": O}


class NoOutputTanhLSTMCell(LSTMCell):
    """D2L 9.2 exercise 4: H = O * C, without the tanh (C~ is in (-1, 1), but C is a sum of them: unbounded)."""

    equations = (*LSTMCell.equations[:5], r"\mathbf{H}_t &= \mathbf{O}_t \odot \mathbf{C}_t")

    def step(self, XW, state):
        H, C = state
        i, f, c, o = (XW + H @ self.W_h).chunk(4, -1)
        I, F, O = torch.sigmoid(i), torch.sigmoid(f), torch.sigmoid(o)   # input, forget and output gates
        C = F * C + I * torch.tanh(c)                         # memory cell
        H = O * C                                             # hidden state, no tanh
        return (H, C), {"input": I, "forget": F, "output": O}


class PeepholeLSTMCell(LSTMCell):
    """An LSTM whose gates also read the memory cell (Gers & Schmidhuber, 2000): "peephole connections"."""

    equations = (
        r"\mathbf{I}_t &= \sigma(\mathbf{X}_t \mathbf{W}_{xi} + \mathbf{H}_{t-1} \mathbf{W}_{hi} + "
        r"\mathbf{w}_{ci} \odot \mathbf{C}_{t-1} + \mathbf{b}_i)",
        r"\mathbf{F}_t &= \sigma(\mathbf{X}_t \mathbf{W}_{xf} + \mathbf{H}_{t-1} \mathbf{W}_{hf} + "
        r"\mathbf{w}_{cf} \odot \mathbf{C}_{t-1} + \mathbf{b}_f)",
        _C_TILDE, _C,
        r"\mathbf{O}_t &= \sigma(\mathbf{X}_t \mathbf{W}_{xo} + \mathbf{H}_{t-1} \mathbf{W}_{ho} + "
        r"\mathbf{w}_{co} \odot \mathbf{C}_t + \mathbf{b}_o)",
        _H)

    def __init__(self, num_inputs: int, num_hiddens: int, init: str = "book"):
        super().__init__(num_inputs, num_hiddens, init)
        self.w_c = nn.Parameter(torch.zeros(3, num_hiddens))    # the peepholes of I, F and O (diagonal)

    def step(self, XW, state):
        H, C = state
        i, f, c, o = (XW + H @ self.W_h).chunk(4, -1)
        I = torch.sigmoid(i + self.w_c[0] * C)                   # input gate, looking at C_{t-1}
        F = torch.sigmoid(f + self.w_c[1] * C)                   # forget gate, looking at C_{t-1}
        C = F * C + I * torch.tanh(c)                            # memory cell
        O = torch.sigmoid(o + self.w_c[2] * C)                   # output gate, looking at the new C_t
        H = O * torch.tanh(C)                                    # hidden state
        return (H, C), {"input": I, "forget": F, "output": O}


# ---------------------------------------------------------------------------- the registered models

def _model(cell, config: dict, **defaults) -> ScratchLM:
    return ScratchLM(ModelConfig(**{**defaults, **config}), cell)


@register_model
def rnn_relu(**config):
    """D2L 8.5 exercise: the RNN from scratch with ReLU instead of tanh."""
    return _model(ReLURNNCell, config)


@register_model
def deep_rnn_scratch(**config):
    """D2L 9.3 exercise 1: two stacked RNN cells from scratch."""
    return _model(RNNCell, config, num_layers=2)


@register_model
def gru_reset_only(**config):
    """D2L 9.1 exercise: a GRU with only a reset gate."""
    return _model(ResetOnlyGRUCell, config)


@register_model
def gru_update_only(**config):
    """D2L 9.1 exercise: a GRU with only an update gate."""
    return _model(UpdateOnlyGRUCell, config)


@register_model
def deep_gru_scratch(**config):
    """D2L 9.3 exercise 2: two stacked GRU cells (the book's) from scratch."""
    return _model(GRUCell, config, num_layers=2)


@register_model
def lstm_no_forget(**config):
    """D2L 9.2 variant: an LSTM without a forget gate (F = 1), as in 1997."""
    return _model(NoForgetLSTMCell, config)


@register_model
def lstm_coupled(**config):
    """D2L 9.2 variant: an LSTM with coupled input and forget gates (F = 1 - I)."""
    return _model(CoupledLSTMCell, config)


@register_model
def lstm_peephole(**config):
    """D2L 9.2 variant: an LSTM with peephole connections (its gates also read the memory cell)."""
    return _model(PeepholeLSTMCell, config)


@register_model
def lstm_no_output_tanh(**config):
    """D2L 9.2 exercise 4: an LSTM with H = O * C, no tanh on the memory cell."""
    return _model(NoOutputTanhLSTMCell, config)
