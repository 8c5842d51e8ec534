"""Scratch <-> concise: the same network in the other storage, giving the same logits.

A torch layer's weights are its cell's fused weights transposed (see concise.py), so conversion copies
each layer's `W_x`, `W_h`, `b` (and a GRU's `b_hn`) across. The book's GRU resets before the recurrent
product and has no nn.GRU equivalent: PyTorch's form from scratch (`gru-torch-scratch`) is `gru`'s twin.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from zoo.models.base import RecurrentLM, device_of
from zoo.models.registry import create_model
from zoo.models.scratch import ScratchLM

TWINS = {"rnn-scratch": "rnn", "gru-torch-scratch": "gru", "lstm-scratch": "lstm", "deep-lstm-scratch": "deep-lstm"}
TWINS.update({concise: scratch for scratch, concise in list(TWINS.items())})


@torch.no_grad()
def convert(model: RecurrentLM) -> RecurrentLM:
    """A new model of the other implementation (scratch <-> concise) with `model`'s weights."""
    c = model.config
    if c.name not in TWINS:
        raise ValueError(f"{c.name} has no twin in the other implementation; those that do: {', '.join(TWINS)}"
                         + (" (the book's GRU has no nn.GRU equivalent: use gru-torch-scratch)"
                            if c.name == "gru-scratch" else ""))
    target = create_model(**{**c.to_dict(), "name": TWINS[c.name]}).to(device_of(model))
    target.train(model.training)
    if c.embedding:
        target.embedding.weight.copy_(model.embedding.weight)
    for index in range(c.num_layers):
        _copy_layer(target, index, {k: v.detach() for k, v in model.layer(index).params.items()})
    W_q, b_q = target.head_weights()
    for mine, theirs in zip((W_q, b_q), model.head_weights()):
        mine.copy_(theirs)
    return target


def _copy_layer(target: RecurrentLM, index: int, params: dict[str, torch.Tensor]) -> None:
    if isinstance(target, ScratchLM):
        for name, p in target.cells[index].named_parameters():
            p.copy_(params[name])
        return
    weight = lambda name: getattr(target.rnn, f"{name}_l{index}")
    weight("weight_ih").copy_(params["W_x"].t())
    weight("weight_hh").copy_(params["W_h"].t())
    weight("bias_ih").copy_(params["b"])
    b_hn = params.get("b_hn")
    b = params["b"]
    weight("bias_hh").copy_(torch.zeros_like(b) if b_hn is None else F.pad(b_hn, (len(b) - len(b_hn), 0)))
