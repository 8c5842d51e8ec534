"""What every recurrent language model here shares: the config, the state, and the fused forward pass.

A model is an embedding-free stack of recurrent layers over one-hot characters plus a linear head. Scratch
and concise models differ only in how they store their weights (the book's `W_xi, W_hi, b_i, ...` versus
`nn.LSTM`'s `weight_ih_l0, ...`). Both expose them in one canonical fused layout, gates side by side in
PyTorch's order (LSTM: i, f, g, o; GRU: r, z, n):

    W_x (inputs, G*h)   b_x (G*h,)   W_h (h, G*h)   b_hn (h,) or None     head: W_q (h, V), b_q (V,)

and `forward` runs that layout: the input projection of all time steps at once (for the first layer a
row lookup, since one-hot times a matrix selects a row, which the kernel reads in place from
`W_x + b_x`), then one `zoo.kernels.recurrence` per layer.
Each model also keeps `forward_reference`, the book's computation step by step, which the tests hold
`forward` equal to.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from zoo import kernels
from zoo.config import JSONConfig

GATES = {"rnn": 1, "gru": 3, "lstm": 4}  # gate blocks per layer


@dataclass
class ModelConfig(JSONConfig):
    """Everything needed to rebuild a model; it round-trips through config.json."""
    arch: str                      # "rnn" | "gru" | "lstm"
    impl: str                      # "scratch" (the book's equations) | "concise" (torch.nn layers)
    vocab_size: int = 28
    num_hiddens: int = 256
    num_layers: int = 1
    dropout: float = 0.0           # on the outputs of every layer (between layers and before the head)
    weight_drop: float = 0.0       # DropConnect on the recurrent weights W_h, one mask per batch (AWD-LSTM)
    init: str = "book"             # "book": as the book initializes each impl; "uniform": U(+-1/sqrt(h)) for both
    gru_form: str = "book"         # scratch GRU only: "book" (reset before W_hh) | "pytorch" (reset after)

    def __post_init__(self):
        if self.arch not in GATES:
            raise ValueError(f"unknown arch {self.arch!r}; choose rnn, gru or lstm")
        if self.impl not in ("scratch", "concise"):
            raise ValueError(f"unknown impl {self.impl!r}; choose scratch or concise")
        if self.init not in ("book", "uniform"):
            raise ValueError(f"unknown init {self.init!r}; choose book or uniform")
        if self.gru_form not in ("book", "pytorch"):
            raise ValueError(f"unknown gru_form {self.gru_form!r}; choose book or pytorch")
        if min(self.vocab_size, self.num_hiddens, self.num_layers) < 1:
            raise ValueError("vocab_size, num_hiddens and num_layers must be positive")
        if not (0 <= self.dropout < 1 and 0 <= self.weight_drop < 1):
            raise ValueError("dropout and weight_drop must be in [0, 1)")

    @property
    def cell(self) -> str:
        """The `zoo.kernels` cell that runs this architecture."""
        if self.arch == "gru":
            return "gru-book" if self.impl == "scratch" and self.gru_form == "book" else "gru"
        return self.arch


State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]  # h (L, B, h), or (h, c) for LSTM, as torch does


class RecurrentLM(nn.Module):
    """Base class: `forward(idx (B, T), state) -> (logits (B, T, V), state)` over the fused weights."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config

    # Subclasses provide the canonical layout of their own parameters (differentiable views, no copies kept).
    def layer_weights(self, layer: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    def head_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def forward_reference(self, idx: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        raise NotImplementedError

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        """Zeros, shaped like torch's recurrent layers want them: (num_layers, B, h)."""
        c = self.config
        device = device or device_of(self)
        h = torch.zeros(c.num_layers, batch_size, c.num_hiddens, device=device)
        return (h, torch.zeros_like(h)) if c.arch == "lstm" else h

    def layer_states(self, state: State) -> list:
        """Split a (L, B, h) state into one entry per layer: h, or (h, c)."""
        if self.config.arch == "lstm":
            return list(zip(state[0].unbind(0), state[1].unbind(0)))
        return list(state.unbind(0))

    def stack_states(self, states: list) -> State:
        if self.config.arch == "lstm":
            return torch.stack([h for h, _ in states]), torch.stack([c for _, c in states])
        return torch.stack(states)

    def forward(self, idx: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """Logits (B, T, V) for token ids `idx` (B, T), and the state after the last step."""
        c = self.config
        B, T = idx.shape
        states = self.layer_states(self.init_state(B, idx.device) if state is None else state)
        X = idx.t()                                             # (T, B): time-major for the recurrence
        for layer in range(c.num_layers):
            W_x, b_x, W_h, b_hn = self.layer_weights(layer)
            if layer == 0:
                XW = kernels.Lookup(X, W_x + b_x)               # one-hot @ W_x is a row lookup, done in place
            else:
                XW = torch.addmm(b_x, H.reshape(T * B, -1), W_x).view(T, B, -1)
            if self.training and c.weight_drop:
                W_h = F.dropout(W_h, c.weight_drop)
            H, states[layer] = kernels.recurrence(c.cell, XW, W_h, states[layer], b_hn)  # H: (T, B, h)
            H = F.dropout(H, c.dropout, self.training)
        W_q, b_q = self.head_weights()
        logits = torch.addmm(b_q, H.reshape(T * B, -1), W_q).view(T, B, -1)
        return logits.transpose(0, 1), self.stack_states(states)


def device_of(model: nn.Module) -> torch.device:
    """The device of a model's first parameter or buffer (the n-gram model has only buffers)."""
    first = next(itertools.chain(model.parameters(), model.buffers()), None)
    return torch.device("cpu") if first is None else first.device


def init_uniform_(tensor: torch.Tensor, num_hiddens: int) -> None:
    """PyTorch's recurrent-layer initialisation, U(-1/sqrt(h), 1/sqrt(h))."""
    bound = num_hiddens ** -0.5
    nn.init.uniform_(tensor, -bound, bound)
