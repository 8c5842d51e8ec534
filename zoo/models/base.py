"""What every recurrent language model here shares: the config, the state, and the forward pass.

A model reads tokens as one-hot vectors (the book's way; or through a learned embedding), runs a stack of
recurrent layers, each one cell (zoo/models/cells.py) over all time steps, and ends in a linear output
layer. Scratch and concise models differ only in where the weights live: in the book's cells, or in
`torch.nn.RNN/GRU/LSTM`. Each layer runs on the backend that zoo/backends.py chooses for its cell: the
cell's own `step`, or an accelerator proven equal to it.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from zoo import backends
from zoo.config import JSONConfig
from zoo.models.cells import Cell

INITS = ("book", "uniform")


@dataclass
class ModelConfig(JSONConfig):
    """Everything needed to rebuild a model; it round-trips through config.json."""
    name: str                      # the registered model that builds it (zoo.list_models())
    vocab_size: int = 28
    num_hiddens: int = 256
    num_layers: int = 1
    embedding: int = 0             # 0: one-hot inputs, as the book; E > 0: a learned embedding of E dimensions
    dropout: float = 0.0           # on the outputs of every layer (between layers and before the head)
    weight_drop: float = 0.0       # DropConnect on the recurrent weights W_h, one mask per batch (AWD-LSTM)
    init: str = "book"             # "book": as the book initializes each impl; "uniform": U(+-1/sqrt(h)) for all

    def __post_init__(self):
        if self.init not in INITS:
            raise ValueError(f"unknown init {self.init!r}; choose book or uniform")
        if min(self.vocab_size, self.num_hiddens, self.num_layers) < 1 or self.embedding < 0:
            raise ValueError("vocab_size, num_hiddens and num_layers must be positive, embedding at least 0")
        if not (0 <= self.dropout < 1 and 0 <= self.weight_drop < 1):
            raise ValueError("dropout and weight_drop must be in [0, 1)")

    @property
    def num_inputs(self) -> int:
        """What the first layer reads per step: a one-hot vector of the vocabulary, or an embedding."""
        return self.embedding or self.vocab_size


State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]  # h (L, B, h), or (h, c) for LSTM, as torch does


class RecurrentLM(nn.Module):
    """Base class: `forward(idx (B, T), state) -> (logits (B, T, V), state)`.

    Subclasses give each layer (`layer`), the output layer (`head_weights`) and the cell whose maths every layer
    computes (`cell`). `backend` names the backend to run the layers on ("auto": chosen by measurement).
    """

    cell: type[Cell]

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.backend = "auto"
        if config.embedding:
            self.embedding = nn.Embedding(config.vocab_size, config.embedding)

    def layer(self, index: int) -> backends.Layer:
        raise NotImplementedError

    def head_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The output layer as (W_q (h, V), b_q (V,))."""
        raise NotImplementedError

    def head(self, H: torch.Tensor) -> torch.Tensor:
        """Logits H W_q + b_q, every step at once."""
        W_q, b_q = self.head_weights()
        return H @ W_q + b_q

    def use_backend(self, name: str) -> "RecurrentLM":
        """Run every layer on backend `name` where it can ("auto", "step", "torch" or "kernel")."""
        self.backend = backends.check_name(name)
        return self

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        """Zeros, shaped like torch's recurrent layers want them: (num_layers, B, h), or two such for (h, c)."""
        c = self.config
        h = torch.zeros(c.num_layers, batch_size, c.num_hiddens, device=device or device_of(self))
        return (h, torch.zeros_like(h)) if self.cell.memory else h

    def layer_states(self, state: State) -> list:
        """Split a (L, B, h) state into one entry per layer: h, or (h, c)."""
        if isinstance(state, tuple):
            return list(zip(*(s.unbind(0) for s in state)))
        return list(state.unbind(0))

    def stack_states(self, states: list) -> State:
        if isinstance(states[0], tuple):
            return tuple(torch.stack(s) for s in zip(*states))
        return torch.stack(states)

    def inputs(self, ids: torch.Tensor) -> torch.Tensor:
        """What the first layer reads: the ids themselves (one-hot, which the cells read as rows of W_x), as
        int64 whatever their compact dtype, or their embeddings."""
        ids = ids.long()
        return self.embedding(ids) if self.config.embedding else ids

    def forward(self, idx: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """Logits (B, T, V) for token ids `idx` (B, T), and the state after the last step."""
        c = self.config
        states = self.layer_states(self.init_state(idx.shape[0], idx.device) if state is None else state)
        X = self.inputs(idx.t())                                  # (T, B) ids or (T, B, E): time-major
        for index in range(c.num_layers):
            layer = self.layer(index)
            if self.training and c.weight_drop:
                layer = layer.replace(W_h=F.dropout(layer.params["W_h"], c.weight_drop))
            X, states[index] = backends.run(layer, X, states[index], self.backend)   # X: (T, B, h)
            X = F.dropout(X, c.dropout, self.training)
        return self.head(X).transpose(0, 1), self.stack_states(states)


def device_of(model: nn.Module) -> torch.device:
    """The device of a model's first parameter or buffer (the n-gram model has only buffers)."""
    first = next(itertools.chain(model.parameters(), model.buffers()), None)
    return torch.device("cpu") if first is None else first.device


def init_uniform_(tensor: torch.Tensor, num_hiddens: int) -> None:
    """PyTorch's recurrent-layer initialisation, U(-1/sqrt(h), 1/sqrt(h))."""
    bound = num_hiddens ** -0.5
    nn.init.uniform_(tensor, -bound, bound)
