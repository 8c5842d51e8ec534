"""RNN, GRU and LSTM the concise way (D2L 8.6, 9.x): `nn.RNN` / `nn.GRU` / `nn.LSTM` over one-hot inputs.

`ConciseLM` has exactly the parameters of the book's `d2l.RNNModel` (`rnn.*`, `linear.*`), so its
state dict loads into the book's class with `load_state_dict(strict=True)`; with the vocabulary in the
book's order (our default tokenizer) it predicts the same characters there.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zoo import kernels
from zoo.models.base import ModelConfig, RecurrentLM, State, init_uniform_

LAYERS = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}


class ConciseLM(RecurrentLM):
    """The book's `RNNModel`: `rnn` (a torch recurrent layer, time-major) and `linear` (the output layer)."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        c = config
        between = c.dropout if c.num_layers > 1 else 0.0
        self.rnn = LAYERS[c.arch](c.vocab_size, c.num_hiddens, c.num_layers, dropout=between)
        self.linear = nn.Linear(c.num_hiddens, c.vocab_size)
        if c.init == "uniform":       # "book" keeps torch's defaults, as the book's concise models do
            for p in self.linear.parameters():
                init_uniform_(p, c.num_hiddens)

    def layer_weights(self, layer):
        c, rnn = self.config, self.rnn
        W_ih, W_hh = getattr(rnn, f"weight_ih_l{layer}"), getattr(rnn, f"weight_hh_l{layer}")
        b_ih, b_hh = getattr(rnn, f"bias_ih_l{layer}"), getattr(rnn, f"bias_hh_l{layer}")
        if c.arch == "gru":   # b_hn stays inside the reset gate: n = tanh(x_n + r * (W_hn h + b_hn))
            h = c.num_hiddens
            return W_ih.t(), b_ih + F.pad(b_hh[:2 * h], (0, h)), W_hh.t(), b_hh[2 * h:]
        return W_ih.t(), b_ih + b_hh, W_hh.t(), None

    def head_weights(self):
        return self.linear.weight.t(), self.linear.bias

    def forward_reference(self, idx: torch.Tensor, state: State | None = None):
        """The book's `RNNModel.forward`: one-hot (T, B, V) through `self.rnn`, then `self.linear`."""
        B, T = idx.shape
        if state is None:
            state = self.init_state(B, idx.device)
        X = F.one_hot(idx.t(), self.config.vocab_size).float()
        Y, state = self.rnn(X, state)                                       # (T, B, h)
        Y = F.dropout(Y, self.config.dropout, self.training)
        return self.linear(Y).transpose(0, 1), state

    def forward(self, idx: torch.Tensor, state: State | None = None):
        """The fused path where `zoo.kernels` has a compiled kernel (CPU) or DropConnect needs it, else torch's layer.

        On CUDA, cuDNN runs `self.rnn` faster than any per-step loop written in Python.
        """
        if self.config.weight_drop or (idx.device.type == "cpu" and kernels.available()):
            return super().forward(idx, state)
        return self.forward_reference(idx, state)
