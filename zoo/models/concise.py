"""RNN, GRU and LSTM the concise way (D2L 8.6, 9.x): `nn.RNN` / `nn.GRU` / `nn.LSTM` over one-hot inputs.

`ConciseLM` has exactly the parameters of the book's `d2l.RNNModel` (`rnn.*`, `linear.*`), so its
state dict loads into the book's class with `load_state_dict(strict=True)`; with the vocabulary in the
book's order (our default tokenizer) it predicts the same characters there.

Each torch layer computes the maths of one cell of zoo/models/cells.py (`CELLS`); its weights are that
cell's fused weights, transposed (W_x = weight_ih^T, W_h = weight_hh^T, b = bias_ih + bias_hh, except
the GRU's candidate part of bias_hh, which is b_hn), which is how every backend reads them.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from zoo.backends import Layer
from zoo.models.base import ModelConfig, RecurrentLM, init_uniform_
from zoo.models.cells import LSTMCell, RNNCell, TorchGRUCell

LAYERS = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}
CELLS = {"rnn": RNNCell, "gru": TorchGRUCell, "lstm": LSTMCell}   # the cell each torch layer computes


class ConciseLM(RecurrentLM):
    """The book's `RNNModel`: `rnn` (a torch recurrent layer, time-major) and `linear` (the output layer)."""

    def __init__(self, config: ModelConfig, arch: str):
        super().__init__(config)
        c = config
        self.arch, self.cell = arch, CELLS[arch]
        self.rnn = LAYERS[arch](c.num_inputs, c.num_hiddens, c.num_layers)
        self.linear = nn.Linear(c.num_hiddens, c.vocab_size)
        if c.init == "uniform":       # "book" keeps torch's defaults, as the book's concise models do
            for p in self.linear.parameters():
                init_uniform_(p, c.num_hiddens)

    def layer(self, index: int) -> Layer:
        weight = lambda name: getattr(self.rnn, f"{name}_l{index}")
        b_ih, b_hh = weight("bias_ih"), weight("bias_hh")
        params = {"W_x": weight("weight_ih").t(), "W_h": weight("weight_hh").t()}
        if self.arch == "gru":   # b_hn stays inside the reset gate: tanh(x_h + r * (W_hn h + b_hn))
            h = self.config.num_hiddens
            params.update(b=b_ih + F.pad(b_hh[:2 * h], (0, h)), b_hn=b_hh[2 * h:])
        else:
            params.update(b=b_ih + b_hh)
        return Layer(self.cell, params)

    def head_weights(self):
        return self.linear.weight.t(), self.linear.bias
