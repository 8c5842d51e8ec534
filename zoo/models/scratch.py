"""RNN, GRU and LSTM from scratch: the book's parameters, names and equations (D2L 8.5, 9.1, 9.2, 9.3).

Each cell keeps the book's parameters one gate at a time (`W_xi, W_hi, b_i`, ...) and writes out its
equations in `step`, which maps `(X_t, state) -> (state, gates)`. `ScratchLM` stacks cells (the deep form
of 9.3: layer l reads the hidden states of layer l-1) under the book's output layer `W_hq, b_q`.

Training does not call `step`: `fused` lays the same parameters side by side so that `RecurrentLM.forward`
needs one matmul per step for all gates (see base.py). `forward_reference` runs `step` and is what the
tests hold the fused path equal to.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.functional import dropout, one_hot

from zoo.models.base import ModelConfig, RecurrentLM, State, init_uniform_


class ScratchCell(nn.Module):
    """Creates the book's parameters: `W_x*` (inputs, h), `W_h*` (h, h), `b_*` (h,) for each gate name."""

    gate_names: tuple[str, ...]   # parameter suffixes in the fused order (PyTorch's gate order)

    def __init__(self, num_inputs: int, num_hiddens: int, init: str = "book"):
        super().__init__()
        for g in self.gate_names:
            self.register_parameter(f"W_x{g}", nn.Parameter(torch.empty(num_inputs, num_hiddens)))
            self.register_parameter(f"W_h{g}", nn.Parameter(torch.empty(num_hiddens, num_hiddens)))
            self.register_parameter(f"b_{g}", nn.Parameter(torch.empty(num_hiddens)))
        for name, p in self.named_parameters():
            if init == "uniform":
                init_uniform_(p, num_hiddens)
            elif name.startswith("W"):
                nn.init.normal_(p, std=0.01)   # the book: torch.randn(shape) * 0.01
            else:
                nn.init.zeros_(p)

    def fused(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(W_x, b_x, W_h, b_hn): the gates' parameters concatenated along the output dimension.

        Without autograd (sampling, scoring) the concatenation is kept until a parameter changes, which
        its version counter (bumped by every in-place update: an optimizer step, load_state_dict) or its
        storage (`.to()`) shows: sampling then starts ~0.2 ms sooner for a deep LSTM.
        """
        if torch.is_grad_enabled():
            return self._concatenated()
        key = tuple((p._version, p.data_ptr()) for p in self.parameters())
        if getattr(self, "_fused_key", None) != key:
            self._fused, self._fused_key = self._concatenated(), key
        return self._fused

    def _concatenated(self):
        p = lambda kind: torch.cat([getattr(self, f"{kind}{g}") for g in self.gate_names], dim=-1)
        return p("W_x"), p("b_"), p("W_h"), None


class RNNCell(ScratchCell):
    """D2L 8.5: H_t = tanh(X_t W_xh + H_{t-1} W_hh + b_h)."""
    gate_names = ("h",)

    def step(self, X, H):
        H = torch.tanh(X @ self.W_xh + H @ self.W_hh + self.b_h)
        return H, {}


class GRUCell(ScratchCell):
    """D2L 9.1: reset gate R, update gate Z, candidate H~, and the convex update of H.

    The book resets before the recurrent product, (R * H) W_hh; PyTorch's nn.GRU after it,
    R * (H W_hh + b_hh), with one more bias. `form="pytorch"` computes the latter, so that weights convert
    exactly to and from nn.GRU; the two forms are different models, equally good in practice.
    """
    gate_names = ("r", "z", "h")

    def __init__(self, num_inputs: int, num_hiddens: int, init: str = "book", form: str = "book"):
        self.form = form
        super().__init__(num_inputs, num_hiddens, init)
        if form == "pytorch":
            self.b_hh = nn.Parameter(torch.zeros(num_hiddens))
            if init == "uniform":
                init_uniform_(self.b_hh, num_hiddens)

    def step(self, X, H):
        Z = torch.sigmoid(X @ self.W_xz + H @ self.W_hz + self.b_z)                 # update gate
        R = torch.sigmoid(X @ self.W_xr + H @ self.W_hr + self.b_r)                 # reset gate
        if self.form == "book":
            H_tilde = torch.tanh(X @ self.W_xh + (R * H) @ self.W_hh + self.b_h)    # candidate state
        else:
            H_tilde = torch.tanh(X @ self.W_xh + self.b_h + R * (H @ self.W_hh + self.b_hh))
        H = Z * H + (1 - Z) * H_tilde                                               # convex update
        return H, {"reset": R, "update": Z}

    def fused(self):
        W_x, b_x, W_h, _ = super().fused()
        return W_x, b_x, W_h, self.b_hh if self.form == "pytorch" else None


class LSTMCell(ScratchCell):
    """D2L 9.2: input, forget and output gates, candidate memory C~, memory cell C, hidden state H."""
    gate_names = ("i", "f", "c", "o")   # PyTorch's order i, f, g, o; the book calls g the candidate C~

    def step(self, X, state):
        H, C = state
        I = torch.sigmoid(X @ self.W_xi + H @ self.W_hi + self.b_i)        # input gate
        F = torch.sigmoid(X @ self.W_xf + H @ self.W_hf + self.b_f)        # forget gate
        O = torch.sigmoid(X @ self.W_xo + H @ self.W_ho + self.b_o)        # output gate
        C_tilde = torch.tanh(X @ self.W_xc + H @ self.W_hc + self.b_c)     # candidate memory cell
        C = F * C + I * C_tilde                                            # memory cell
        H = O * torch.tanh(C)                                              # hidden state
        return (H, C), {"input": I, "forget": F, "output": O}


CELLS = {"rnn": RNNCell, "gru": GRUCell, "lstm": LSTMCell}


class ScratchLM(RecurrentLM):
    """A stack of scratch cells (`cells.0`, `cells.1`, ...) and the book's output layer `W_hq`, `b_q`."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        c = config
        extra = {"form": c.gru_form} if c.arch == "gru" else {}
        self.cells = nn.ModuleList(
            CELLS[c.arch](c.vocab_size if layer == 0 else c.num_hiddens, c.num_hiddens, c.init, **extra)
            for layer in range(c.num_layers))
        self.W_hq = nn.Parameter(torch.empty(c.num_hiddens, c.vocab_size))
        self.b_q = nn.Parameter(torch.zeros(c.vocab_size))
        if c.init == "uniform":
            init_uniform_(self.W_hq, c.num_hiddens)
            init_uniform_(self.b_q, c.num_hiddens)
        else:
            nn.init.normal_(self.W_hq, std=0.01)

    def layer_weights(self, layer):
        return self.cells[layer].fused()

    def head_weights(self):
        return self.W_hq, self.b_q

    def forward_reference(self, idx: torch.Tensor, state: State | None = None, record: bool = False):
        """The book's loop: one-hot inputs, one `step` per time step and layer, the output layer per step.

        With `record=True` also returns the gates of every layer: {name: (L, B, T, h)}.
        """
        c = self.config
        states = self.layer_states(self.init_state(idx.shape[0], idx.device) if state is None else state)
        outputs, gates = [], []
        for X in one_hot(idx.t(), c.vocab_size).float():              # X: (B, V), one time step
            step_gates = []
            for layer, cell in enumerate(self.cells):
                states[layer], g = cell.step(X, states[layer])
                X = states[layer][0] if c.arch == "lstm" else states[layer]
                step_gates.append(g)
                if layer < c.num_layers - 1:
                    X = dropout(X, c.dropout, self.training)
            X = dropout(X, c.dropout, self.training)
            outputs.append(X @ self.W_hq + self.b_q)                     # (B, V)
            gates.append(step_gates)
        logits = torch.stack(outputs, dim=1)                              # (B, T, V)
        if not record:
            return logits, self.stack_states(states)
        names = gates[0][0].keys()
        recorded = {n: torch.stack([torch.stack([g[l][n] for g in gates], 1) for l in range(c.num_layers)])
                    for n in names}
        return logits, self.stack_states(states), recorded
