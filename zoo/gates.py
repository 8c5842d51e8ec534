"""What the gates do on a text: per-character activations of the GRU's and LSTM's gates.

The book claims that reset gates capture short-term and update gates long-term dependencies; this is
the data to look at that claim. Concise models are converted to their scratch twin (exact, see
zoo/models/convert.py), whose `forward_reference` records every gate as it runs the book's equations.
"""
from __future__ import annotations

import torch

from zoo.models.base import RecurrentLM
from zoo.models.convert import convert

GATE_NAMES = {"gru": ("reset", "update"), "lstm": ("input", "forget", "output")}


@torch.no_grad()
def gate_activations(model: RecurrentLM, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """{gate name: (num_layers, T, h)} for token ids (T,), read with a fresh state, dropout off."""
    if model.config.arch not in GATE_NAMES:
        raise ValueError(f"a {model.config.arch.upper()} has no gates; pick a GRU or an LSTM")
    scratch = model if model.config.impl == "scratch" else convert(model, "scratch")
    was_training = scratch.training
    scratch.eval()
    _, _, gates = scratch.forward_reference(ids[None].to(next(scratch.parameters()).device), record=True)
    scratch.train(was_training)
    return {name: g[:, 0].cpu() for name, g in gates.items()}   # drop the batch dimension
