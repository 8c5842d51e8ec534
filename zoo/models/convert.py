"""Scratch <-> concise: the same network in the other storage, giving the same logits.

Both layouts meet in the fused form of base.py, so conversion is "read fused weights, write them into
the other model". The book's GRU (reset before W_hh) has no nn.GRU equivalent: only a scratch GRU built
with `gru_form="pytorch"` converts, and a concise GRU converts into that form.
"""
from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F

from zoo.models import build_model
from zoo.models.base import GATES, RecurrentLM
from zoo.models.concise import ConciseLM
from zoo.models.scratch import ScratchLM


@torch.no_grad()
def convert(model: RecurrentLM, impl: str) -> RecurrentLM:
    """A new model of implementation `impl` ("scratch" or "concise") with `model`'s weights."""
    c = model.config
    if c.arch == "gru" and c.impl == "scratch" and c.gru_form == "book":
        raise ValueError("the book's GRU form has no nn.GRU equivalent; build the scratch GRU with gru_form='pytorch'")
    target = build_model(replace(c, impl=impl, gru_form="pytorch" if c.arch == "gru" else c.gru_form))
    target.train(model.training)
    layers = [tuple(None if w is None else w.detach() for w in model.layer_weights(l)) for l in range(c.num_layers)]
    head = tuple(w.detach() for w in model.head_weights())
    (_load_scratch if impl == "scratch" else _load_concise)(target, layers, head)
    return target.to(next(model.parameters()).device)


def _load_scratch(model: ScratchLM, layers, head) -> None:
    gates = GATES[model.config.arch]
    for cell, (W_x, b_x, W_h, b_hn) in zip(model.cells, layers):
        for g, w_x, b, w_h in zip(cell.gate_names, W_x.chunk(gates, -1), b_x.chunk(gates), W_h.chunk(gates, -1)):
            getattr(cell, f"W_x{g}").copy_(w_x)
            getattr(cell, f"b_{g}").copy_(b)
            getattr(cell, f"W_h{g}").copy_(w_h)
        if b_hn is not None:
            cell.b_hh.copy_(b_hn)
    model.W_hq.copy_(head[0])
    model.b_q.copy_(head[1])


def _load_concise(model: ConciseLM, layers, head) -> None:
    rnn = model.rnn
    for l, (W_x, b_x, W_h, b_hn) in enumerate(layers):
        getattr(rnn, f"weight_ih_l{l}").copy_(W_x.t())
        getattr(rnn, f"weight_hh_l{l}").copy_(W_h.t())
        getattr(rnn, f"bias_ih_l{l}").copy_(b_x)
        b_hh = torch.zeros_like(b_x) if b_hn is None else F.pad(b_hn, (len(b_x) - len(b_hn), 0))
        getattr(rnn, f"bias_hh_l{l}").copy_(b_hh)
    model.linear.weight.copy_(head[0].t())
    model.linear.bias.copy_(head[1])
