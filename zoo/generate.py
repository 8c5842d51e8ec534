"""Text from a model: greedy (the book's `predict_ch8`), temperature, top-k and top-p sampling.

The prefix is read once (by the sampling loop itself when short, else in one parallel forward pass);
generation then feeds one token at a time and carries the state, so the cost is linear in the length
(makemore reruns the whole prefix at every step: quadratic for an RNN). Recurrent models run the whole
loop in `zoo.kernels.sample_loop` (one C++ call on CPU).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from zoo import kernels
from zoo.data import Tokenizer
from zoo.kernels.reference import pick
from zoo.models.base import RecurrentLM, device_of

MAX_LENGTH = 100_000
PREFIX_IN_LOOP = 256   # tokens; longer prefixes go through one forward pass first


@dataclass
class Generation:
    """Sampled continuations (prefix included, as the tokenizer normalises it) and what could not be encoded."""
    texts: list[str]
    prefix: str
    unknown: list[str]   # characters (or words) of the prefix outside the vocabulary, read as <unk>


def expand_state(state, num_samples: int):
    """Repeat a batch-1 state (L, 1, h) for `num_samples` rows."""
    if isinstance(state, tuple):
        return tuple(s.expand(-1, num_samples, -1).contiguous() for s in state)
    return state.expand(-1, num_samples, -1).contiguous()


@torch.no_grad()
def generate_ids(model, prefix_ids: torch.Tensor, length: int, temperature: float = 0.0, top_k: int = 0,
                 top_p: float = 1.0, num_samples: int = 1, generator: torch.Generator | None = None) -> torch.Tensor:
    """Token ids (num_samples, len(prefix) + length): the prefix followed by `length` generated tokens."""
    if not 0 <= length <= MAX_LENGTH:
        raise ValueError(f"length must be between 0 and {MAX_LENGTH}")
    if len(prefix_ids) == 0:
        raise ValueError("the prefix is empty: give at least one character the model knows")
    if not 0 <= temperature < float("inf") or top_k < 0 or not 0 < top_p <= 1:
        raise ValueError("need a finite temperature >= 0, top_k >= 0 and 0 < top_p <= 1")
    was_training = model.training
    model.eval()
    device = device_of(model)
    prefix_ids = prefix_ids.to(device)
    recurrent = isinstance(model, RecurrentLM)
    # The sampling loop reads a short prefix itself; a long one is read faster in one parallel forward pass.
    in_loop = prefix_ids if recurrent and len(prefix_ids) <= PREFIX_IN_LOOP else prefix_ids[-1:]
    ahead = prefix_ids[:len(prefix_ids) - len(in_loop)]
    state = model(ahead[None])[1] if len(ahead) else None
    if recurrent:
        state = expand_state(model.init_state(1) if state is None else state, num_samples)
        layers = [model.layer_weights(l) for l in range(model.config.num_layers)]
        new, _ = kernels.sample_loop([model.config.cell] * len(layers), layers, model.head_weights(),
                                     model.layer_states(state), in_loop.expand(num_samples, -1), length,
                                     temperature, top_k, top_p, generator)
    else:
        new = _sample_any(model, state, in_loop.expand(num_samples), length, temperature, top_k, top_p,
                          generator)
    model.train(was_training)
    return torch.cat([prefix_ids.expand(num_samples, -1), new.to(device)], dim=1)


def _sample_any(model, state, token, length, temperature, top_k, top_p, generator) -> torch.Tensor:
    """The same loop and the same choice rule (`pick`) for any model with `forward(idx, state) -> (logits,
    state)`: the n-gram reference, whose state is its last tokens (1, B, order - 1)."""
    if state is not None:
        state = expand_state(state, len(token))
    U = torch.rand(length, len(token), generator=generator, device=token.device) if temperature > 0 else None
    out = []
    for t in range(length):
        logits, state = model(token[:, None], state)
        token = pick(logits[:, -1].float(), temperature, top_k, top_p, None if U is None else U[t])
        out.append(token)
    return torch.stack(out, dim=1) if out else token.new_empty(len(token), 0)


def generate(model, tokenizer: Tokenizer, prefix: str, length: int = 100, temperature: float = 0.0,
             top_k: int = 0, top_p: float = 1.0, num_samples: int = 1, seed: int | None = None) -> Generation:
    """Continue `prefix` by `length` tokens; the same seed gives the same text."""
    generator = None
    if seed is not None:
        generator = torch.Generator(device_of(model)).manual_seed(seed)
    ids = torch.tensor(tokenizer.encode(prefix), dtype=torch.long)
    out = generate_ids(model, ids, length, temperature, top_k, top_p, num_samples, generator)
    return Generation([tokenizer.decode(row) for row in out.cpu()], tokenizer.decode(ids),
                      tokenizer.unknown(prefix))
