"""The kernels' maths in plain torch ops: runs on any device, and is the spec the C++ code must match."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor


class Lookup(NamedTuple):
    """Input projections given as rows of a table: XW[t, b] = table[ids[t, b]]. For a first layer over
    one-hot tokens, one-hot @ W_x + b_x is the row of the table W_x + b_x (V, G*h) at the token id."""
    ids: Tensor    # (T, B) int64
    table: Tensor  # (V, G*h)


def _rnn_step(xw: Tensor, W_h: Tensor, H: Tensor, b_hn: Tensor | None) -> Tensor:
    return torch.tanh(xw + H @ W_h)  # H_t = tanh(X_t W_xh + H_{t-1} W_hh + b_h)


def _lstm_step(xw: Tensor, W_h: Tensor, state: tuple[Tensor, Tensor], b_hn: Tensor | None):
    H, C = state
    i, f, g, o = (xw + H @ W_h).chunk(4, -1)  # (B, h) each, PyTorch's gate order
    C = torch.sigmoid(f) * C + torch.sigmoid(i) * torch.tanh(g)  # C_t = F * C_{t-1} + I * C~
    return torch.sigmoid(o) * torch.tanh(C), C  # H_t = O * tanh(C_t)


def _gru_step(xw: Tensor, W_h: Tensor, H: Tensor, b_hn: Tensor | None) -> Tensor:
    """PyTorch's reset-after GRU: R gates the candidate's recurrent term after the matmul."""
    x_r, x_z, x_n = xw.chunk(3, -1)
    a_r, a_z, a_n = (H @ W_h).chunk(3, -1)
    R = torch.sigmoid(x_r + a_r)  # R = sigma(X W_xr + H W_hr + b_r)
    Z = torch.sigmoid(x_z + a_z)  # Z = sigma(X W_xz + H W_hz + b_z)
    N = torch.tanh(x_n + R * (a_n if b_hn is None else a_n + b_hn))  # N = tanh(X W_xn + R * (H W_hn + b_hn))
    return Z * H + (1 - Z) * N  # H_t = Z * H_{t-1} + (1 - Z) * N


def _gru_book_step(xw: Tensor, W_h: Tensor, H: Tensor, b_hn: Tensor | None) -> Tensor:
    """The book's reset-before GRU (eq. 9.1.1-9.1.3): R gates H_{t-1} before the candidate's matmul."""
    h = H.shape[-1]
    R, Z = torch.sigmoid(xw[:, : 2 * h] + H @ W_h[:, : 2 * h]).chunk(2, -1)
    N = torch.tanh(xw[:, 2 * h :] + (R * H) @ W_h[:, 2 * h :])  # H~ = tanh(X W_xh + (R * H) W_hh + b_h)
    return Z * H + (1 - Z) * N  # H_t = Z * H_{t-1} + (1 - Z) * H~


STEPS = {"rnn": _rnn_step, "lstm": _lstm_step, "gru": _gru_step, "gru-book": _gru_book_step}
GATES = {"rnn": 1, "lstm": 4, "gru": 3, "gru-book": 3}


def _top(state) -> Tensor:
    """The hidden state H of a layer's state (H, or (H, C) for lstm)."""
    return state[0] if isinstance(state, (tuple, list)) else state


def reference_recurrence(cell: str, XW: Tensor | Lookup, W_h: Tensor, state, b_hn: Tensor | None = None):
    """Run one recurrent layer over all T steps with autograd: XW (T, B, G*h) -> (Hs (T, B, h), state)."""
    step = STEPS[cell]
    if isinstance(XW, Lookup):
        XW = F.embedding(XW.ids, XW.table)  # (T, B, G*h)
    outputs = []
    for xw in XW.unbind(0):  # (B, G*h)
        state = step(xw, W_h, state, b_hn)
        outputs.append(_top(state))
    return (torch.stack(outputs) if outputs else XW.new_empty(0, *_top(state).shape)), state


def pick(logits: Tensor, temperature: float, top_k: int, top_p: float, u: Tensor | None) -> Tensor:
    """Next token per row of logits (B, V): greedy argmax at temperature 0, else one draw by inverse CDF
    with the uniform numbers u (B,) from the top-k / top-p restricted softmax(logits / temperature)."""
    if temperature == 0:
        return logits.argmax(-1)
    z = logits / temperature
    if 0 < top_k < z.shape[-1]:
        kth = z.topk(top_k, -1).values[:, -1:]  # (B, 1) the k-th largest
        z = z.masked_fill(z < kth, float("-inf"))
    p = torch.softmax(z, -1)
    if top_p < 1:  # the smallest set of most probable tokens whose mass reaches top_p
        sorted_p, order = p.sort(dim=-1, descending=True, stable=True)
        drop = sorted_p.cumsum(-1) - sorted_p >= top_p  # the more probable ones already reach top_p
        p = p.scatter(-1, order, sorted_p.masked_fill(drop, 0.0))
    c = p.cumsum(-1)  # (B, V)
    return (c <= u[:, None] * c[:, -1:]).sum(-1).clamp_max(z.shape[-1] - 1)


def check_sampling(cells, temperature: float, top_k: int, top_p: float) -> None:
    """Reject arguments that the samplers would otherwise treat inconsistently."""
    if unknown := set(cells) - set(STEPS):
        raise ValueError(f"unknown cells {sorted(unknown)}; expected some of {sorted(STEPS)}")
    if temperature < 0 or top_k < 0 or not 0 < top_p <= 1:
        raise ValueError(f"need temperature >= 0, top_k >= 0 and 0 < top_p <= 1; got {temperature}, {top_k}, "
                         f"{top_p}")


@torch.no_grad()
def reference_sample_loop(cells, layers, head, state, prompt, steps, temperature=0.0, top_k=0,
                          top_p=1.0, generator=None):
    """Autoregressive generation in plain torch ops; see zoo.kernels.sample_loop."""
    check_sampling(cells, temperature, top_k, top_p)
    W_q, b_q = head
    state = list(state)
    B, P = prompt.shape
    U = None  # one uniform number per row and step, drawn up front as the C++ loop does
    if temperature > 0:
        U = torch.rand(steps, B, generator=generator, device=W_q.device, dtype=W_q.dtype)
    tokens = []
    for t in range(P - 1 + steps):  # the prompt, then each chosen token
        token = prompt[:, t] if t < P else tokens[-1]
        for l, (cell, (W_x, b_x, W_h, b_hn)) in enumerate(zip(cells, layers)):
            xw = W_x[token] + b_x if l == 0 else x @ W_x + b_x  # one-hot times W_x is a row lookup
            state[l] = STEPS[cell](xw, W_h, state[l], b_hn)
            x = _top(state[l])
        if t >= P - 1:
            tokens.append(pick(x @ W_q + b_q, temperature, top_k, top_p, None if U is None else U[len(tokens)]))
    return (torch.stack(tokens, 1) if tokens else prompt.new_empty(B, 0, dtype=torch.long)), state
