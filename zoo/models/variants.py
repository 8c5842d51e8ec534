"""Variants of the book's cells that its exercises ask about, each a few lines over the cells it changes.

They are registered models like the book's, so everything (training, sampling, scoring, the gates, the
tests parametrized over the registry) works for them; no accelerator is proven for them, so each runs
its own `step`.
"""
from __future__ import annotations

import torch
from torch import nn

from zoo.models.base import ModelConfig
from zoo.models.cells import LSTMCell
from zoo.models.registry import register_model
from zoo.models.scratch import ScratchLM


class PeepholeLSTMCell(LSTMCell):
    """An LSTM whose gates also read the memory cell (Gers & Schmidhuber, 2000): "peephole connections"."""

    equations = (
        r"\mathbf{I}_t &= \sigma(\mathbf{X}_t \mathbf{W}_{xi} + \mathbf{H}_{t-1} \mathbf{W}_{hi} + "
        r"\mathbf{w}_{ci} \odot \mathbf{C}_{t-1} + \mathbf{b}_i)",
        r"\mathbf{F}_t &= \sigma(\mathbf{X}_t \mathbf{W}_{xf} + \mathbf{H}_{t-1} \mathbf{W}_{hf} + "
        r"\mathbf{w}_{cf} \odot \mathbf{C}_{t-1} + \mathbf{b}_f)",
        LSTMCell.equations[3], LSTMCell.equations[4],
        r"\mathbf{O}_t &= \sigma(\mathbf{X}_t \mathbf{W}_{xo} + \mathbf{H}_{t-1} \mathbf{W}_{ho} + "
        r"\mathbf{w}_{co} \odot \mathbf{C}_t + \mathbf{b}_o)",
        LSTMCell.equations[5])

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


@register_model
def lstm_peephole(**config):
    """D2L 9.2 exercise: an LSTM with peephole connections (its gates also read the memory cell)."""
    return ScratchLM(ModelConfig(**config), PeepholeLSTMCell)
