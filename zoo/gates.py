"""What the gates do on a text: per-character activations of a GRU's or an LSTM's gates.

The book claims that reset gates capture short-term and update gates long-term dependencies; this is
the data to look at that claim. The values are the ones each layer's cell computes in its own `step`
(zoo/models/cells.py), for scratch and concise models alike, and for any cell that returns gates.
"""
from __future__ import annotations

import torch

from zoo.backends import run_step
from zoo.models.base import RecurrentLM, device_of


@torch.no_grad()
def gate_names(model) -> tuple[str, ...]:
    """The gates a model's cell reports, read off one step (none for an RNN, or a model without cells)."""
    if not isinstance(model, RecurrentLM):
        return ()
    steps: list[dict] = []
    X = model.inputs(torch.zeros(1, 1, dtype=torch.long, device=device_of(model)))
    run_step(model.layer(0), X, model.layer_states(model.init_state(1))[0], gates=steps)
    return tuple(steps[0])


@torch.no_grad()
def gate_activations(model: RecurrentLM, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """{gate name: (num_layers, T, h)} for token ids (T,), read with a fresh state, dropout off."""
    was_training = model.training
    model.eval()
    X = model.inputs(ids[:, None].to(device_of(model)))                 # (T, 1): a batch of one
    per_layer = []
    for index, state in enumerate(model.layer_states(model.init_state(1))):
        steps: list[dict] = []
        X, _ = run_step(model.layer(index), X, state, gates=steps)
        per_layer.append(steps)
    model.train(was_training)
    if not per_layer[0] or not per_layer[0][0]:
        raise ValueError(f"a {model.cell.__name__} has no gates; pick a GRU or an LSTM")
    return {name: torch.stack([torch.stack([g[name][0] for g in steps]) for steps in per_layer]).cpu()
            for name in per_layer[0][0]}
