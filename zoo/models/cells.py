"""The recurrent cells, each written once: the book's equations over fused weights (D2L 8.4-9.2).

A cell holds one layer's weights with its gate blocks side by side, in PyTorch's order, so that one
matmul computes every gate:

    W_x (inputs, G*h)    W_h (h, G*h)    b (G*h,)        G gate blocks of h units each

`step(XW, state)` is one time step, one line per equation of the book. Its input XW = X_t W_x + b is the
input's part of every gate: it does not depend on the state, so `project` computes it for all time steps
at once, before the loop. `forward` runs `step` over the time steps, and that is what trains, samples,
scores and shows its gates, autograd deriving the backward. A faster backend (zoo/backends.py) runs a cell
only if it was proven equal to that exact class's unchanged `step`.

Your own cell is a subclass with its own `step` (and, if it needs them, more parameters), registered
as a model in a few lines: see "Write your own cell" in the README.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.functional import embedding

State = Tensor | tuple[Tensor, Tensor]   # H (B, h), or (H, C) for a cell with a memory


class Cell(nn.Module):
    """One recurrent layer: the fused weights, the state's form, and the loop over time steps."""

    gates: int = 1                      # gate blocks G in W_x, W_h and b
    memory: bool = False                # True: the state is (H, C), as an LSTM's; False: H alone
    equations: tuple[str, ...] = ()     # the book's equations in LaTeX, for the model card

    def __init__(self, num_inputs: int, num_hiddens: int, init: str = "book"):
        super().__init__()
        width = self.gates * num_hiddens
        self.num_hiddens = num_hiddens
        self.W_x = nn.Parameter(torch.empty(num_inputs, width))
        self.W_h = nn.Parameter(torch.empty(num_hiddens, width))
        self.b = nn.Parameter(torch.zeros(width))
        for name, p in self.named_parameters():
            if init == "uniform":           # PyTorch's recurrent layers: U(-1/sqrt(h), 1/sqrt(h)) for all
                bound = num_hiddens ** -0.5
                nn.init.uniform_(p, -bound, bound)
            elif name.startswith("W"):      # the book: torch.randn(shape) * 0.01, biases zero
                nn.init.normal_(p, std=0.01)

    def init_state(self, batch_size: int, device=None, dtype=None) -> State:
        """Zeros: H (B, h), or (H, C)."""
        H = torch.zeros(batch_size, self.num_hiddens, device=device, dtype=dtype)
        return (H, torch.zeros_like(H)) if self.memory else H

    def project(self, X: Tensor) -> Tensor:
        """X_t W_x + b for all steps at once: (T, B, G*h). X is token ids (T, B), read as one-hot
        vectors (so X_t W_x is a row of W_x), or vectors (T, B, inputs)."""
        if not X.is_floating_point():
            return embedding(X, self.W_x) + self.b
        return X @ self.W_x + self.b

    def step(self, XW: Tensor, state: State) -> tuple[State, dict[str, Tensor]]:
        """One time step: (X_t W_x + b (B, G*h), state) -> (new state, {gate name: (B, h) values})."""
        raise NotImplementedError

    def forward(self, X: Tensor, state: State, gates: list | None = None) -> tuple[Tensor, State]:
        """Run `step` over all time steps of X: -> (H of every step (T, B, h), the final state).

        With a list `gates`, every step's gate values are appended to it.
        """
        outputs = []
        for XW in self.project(X):                                  # XW: (B, G*h), one time step
            state, step_gates = self.step(XW, state)
            outputs.append(state[0] if self.memory else state)
            if gates is not None:
                gates.append(step_gates)
        if not outputs:
            return X.new_empty(0, *hidden(state).shape, dtype=self.W_h.dtype), state
        return torch.stack(outputs), state


def hidden(state: State) -> Tensor:
    """The hidden state H of a cell's state (H, or (H, C))."""
    return state[0] if isinstance(state, tuple) else state


# ---------------------------------------------------------------------------- the book's cells

class RNNCell(Cell):
    """D2L 8.4-8.5: a vanilla RNN. The new state is a tanh of the input's and the old state's affine maps."""

    gates = 1
    equations = (r"\mathbf{H}_t &= \tanh(\mathbf{X}_t \mathbf{W}_{xh} + \mathbf{H}_{t-1} \mathbf{W}_{hh} "
                 r"+ \mathbf{b}_h)",)

    def step(self, XW, H):
        H = torch.tanh(XW + H @ self.W_h)                     # (8.4.5) H_t = tanh(X_t W_xh + H_{t-1} W_hh + b_h)
        return H, {}


class GRUCell(Cell):
    """D2L 9.1: the book's GRU. The reset gate R scales H_{t-1} *before* the candidate's recurrent product.

    Blocks of W_x, W_h and b: reset r, update z, candidate h~ (PyTorch's order r, z, n).
    """

    gates = 3
    equations = (
        r"\mathbf{R}_t &= \sigma(\mathbf{X}_t \mathbf{W}_{xr} + \mathbf{H}_{t-1} \mathbf{W}_{hr} + \mathbf{b}_r)",
        r"\mathbf{Z}_t &= \sigma(\mathbf{X}_t \mathbf{W}_{xz} + \mathbf{H}_{t-1} \mathbf{W}_{hz} + \mathbf{b}_z)",
        r"\tilde{\mathbf{H}}_t &= \tanh(\mathbf{X}_t \mathbf{W}_{xh} + (\mathbf{R}_t \odot \mathbf{H}_{t-1}) "
        r"\mathbf{W}_{hh} + \mathbf{b}_h)",
        r"\mathbf{H}_t &= \mathbf{Z}_t \odot \mathbf{H}_{t-1} + (1 - \mathbf{Z}_t) \odot \tilde{\mathbf{H}}_t")

    def step(self, XW, H):
        h = H.shape[-1]
        # reset and update gates  R_t, Z_t = sigma(X_t W_x{r,z} + H_{t-1} W_h{r,z} + b_{r,z}), one matmul for both
        R, Z = torch.sigmoid(XW[:, :2 * h] + H @ self.W_h[:, :2 * h]).chunk(2, -1)
        # candidate hidden state  H~_t = tanh(X_t W_xh + (R_t * H_{t-1}) W_hh + b_h)
        H_tilde = torch.tanh(XW[:, 2 * h:] + (R * H) @ self.W_h[:, 2 * h:])
        H = Z * H + (1 - Z) * H_tilde                         # hidden state H_t = Z_t * H_{t-1} + (1 - Z_t) * H~_t
        return H, {"reset": R, "update": Z}


class TorchGRUCell(Cell):
    """PyTorch's GRU (`nn.GRU`): the reset gate scales the candidate's recurrent term *after* the product,
    which has a bias of its own, b_hn. Not the book's GRU, but a model of the same quality, and the one
    that `nn.GRU` (so the concise `gru`, and cuDNN) computes."""

    gates = 3
    equations = (
        GRUCell.equations[0], GRUCell.equations[1],
        r"\tilde{\mathbf{H}}_t &= \tanh(\mathbf{X}_t \mathbf{W}_{xh} + \mathbf{b}_{h} + \mathbf{R}_t \odot "
        r"(\mathbf{H}_{t-1} \mathbf{W}_{hh} + \mathbf{b}_{hn}))",
        GRUCell.equations[3])

    def __init__(self, num_inputs: int, num_hiddens: int, init: str = "book"):
        super().__init__(num_inputs, num_hiddens, init)
        self.b_hn = nn.Parameter(torch.zeros(num_hiddens))
        if init == "uniform":
            nn.init.uniform_(self.b_hn, -num_hiddens ** -0.5, num_hiddens ** -0.5)

    def step(self, XW, H):
        x_r, x_z, x_h = XW.chunk(3, -1)
        h_r, h_z, h_h = (H @ self.W_h).chunk(3, -1)           # all three recurrent products, one matmul
        R = torch.sigmoid(x_r + h_r)                          # reset gate
        Z = torch.sigmoid(x_z + h_z)                          # update gate
        H_tilde = torch.tanh(x_h + R * (h_h + self.b_hn))     # candidate: reset after the product
        H = Z * H + (1 - Z) * H_tilde                         # hidden state
        return H, {"reset": R, "update": Z}


class LSTMCell(Cell):
    """D2L 9.2: input, forget and output gates, a candidate memory C~, the memory cell C and the hidden state H.

    Blocks of W_x, W_h and b: input i, forget f, candidate c, output o (PyTorch's order i, f, g, o).
    """

    gates = 4
    memory = True
    equations = (
        r"\mathbf{I}_t &= \sigma(\mathbf{X}_t \mathbf{W}_{xi} + \mathbf{H}_{t-1} \mathbf{W}_{hi} + \mathbf{b}_i)",
        r"\mathbf{F}_t &= \sigma(\mathbf{X}_t \mathbf{W}_{xf} + \mathbf{H}_{t-1} \mathbf{W}_{hf} + \mathbf{b}_f)",
        r"\mathbf{O}_t &= \sigma(\mathbf{X}_t \mathbf{W}_{xo} + \mathbf{H}_{t-1} \mathbf{W}_{ho} + \mathbf{b}_o)",
        r"\tilde{\mathbf{C}}_t &= \tanh(\mathbf{X}_t \mathbf{W}_{xc} + \mathbf{H}_{t-1} \mathbf{W}_{hc} "
        r"+ \mathbf{b}_c)",
        r"\mathbf{C}_t &= \mathbf{F}_t \odot \mathbf{C}_{t-1} + \mathbf{I}_t \odot \tilde{\mathbf{C}}_t",
        r"\mathbf{H}_t &= \mathbf{O}_t \odot \tanh(\mathbf{C}_t)")

    def step(self, XW, state):
        H, C = state
        i, f, c, o = (XW + H @ self.W_h).chunk(4, -1)         # every gate's affine map, one matmul
        I = torch.sigmoid(i)                                  # input gate   I_t = sigma(X_t W_xi + H_{t-1} W_hi + b_i)
        F = torch.sigmoid(f)                                  # forget gate  F_t = sigma(X_t W_xf + H_{t-1} W_hf + b_f)
        O = torch.sigmoid(o)                                  # output gate  O_t = sigma(X_t W_xo + H_{t-1} W_ho + b_o)
        C_tilde = torch.tanh(c)                               # candidate    C~_t = tanh(X_t W_xc + H_{t-1} W_hc + b_c)
        C = F * C + I * C_tilde                               # memory cell  C_t = F_t * C_{t-1} + I_t * C~_t
        H = O * torch.tanh(C)                                 # hidden state H_t = O_t * tanh(C_t)
        return (H, C), {"input": I, "forget": F, "output": O}
