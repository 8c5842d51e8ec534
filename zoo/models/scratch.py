"""Models from scratch (D2L 8.5, 9.1, 9.2, 9.3): a stack of the book's cells under its output layer.

Layer l reads the hidden states of layer l-1 (the deep form of 9.3), the first layer the one-hot tokens.
The cells (zoo/models/cells.py) hold the weights and the equations; every layer runs its cell's `step`,
or an accelerator proven equal to it (zoo/backends.py).
"""
from __future__ import annotations

import torch
from torch import nn

from zoo.backends import Layer
from zoo.models.base import ModelConfig, RecurrentLM, init_uniform_
from zoo.models.cells import Cell


class ScratchLM(RecurrentLM):
    """Cells `cells.0`, `cells.1`, ... of one class, and the book's output layer `W_hq` (h, V), `b_q` (V,)."""

    def __init__(self, config: ModelConfig, cell: type[Cell]):
        super().__init__(config)
        c = config
        self.cell = cell
        self.cells = nn.ModuleList(cell(c.num_inputs if layer == 0 else c.num_hiddens, c.num_hiddens, c.init)
                                   for layer in range(c.num_layers))
        self.W_hq = nn.Parameter(torch.empty(c.num_hiddens, c.vocab_size))
        self.b_q = nn.Parameter(torch.zeros(c.vocab_size))
        if c.init == "uniform":
            init_uniform_(self.W_hq, c.num_hiddens)
            init_uniform_(self.b_q, c.num_hiddens)
        else:
            nn.init.normal_(self.W_hq, std=0.01)

    def layer(self, index: int) -> Layer:
        cell = self.cells[index]
        return Layer(self.cell, dict(cell.named_parameters()), cell)

    def head_weights(self):
        return self.W_hq, self.b_q
