"""Perplexity, bits per character and per-character surprisal, exact over any length of text.

The text is read as one stream: each token is predicted from everything before it (the state is carried
from chunk to chunk), so the numbers do not depend on how the text is cut, and a whole book is scored in
bounded memory.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from zoo.models.base import device_of

CHUNK = 4096   # time steps per forward pass: bounds memory, not results


@dataclass
class Score:
    """Token-weighted mean loss over a text, and what follows from it."""
    loss: float      # nats per predicted token
    tokens: int      # tokens predicted (the first one has no context and is not counted)

    @property
    def perplexity(self) -> float:
        """exp(loss); infinite when that overflows a float (a diverged model: e.g. a loss of 1000 nats)."""
        return math.exp(self.loss) if self.loss < math.log(sys.float_info.max) else math.inf

    @property
    def bits_per_token(self) -> float:
        return self.loss / math.log(2)

    def to_dict(self) -> dict:
        """The numbers as strict JSON: a value that is not finite becomes null, and `note` says why."""
        numbers = {"perplexity": self.perplexity, "bits_per_token": self.bits_per_token, "loss": self.loss}
        out = {key: value if math.isfinite(value) else None for key, value in numbers.items()}
        if math.isnan(self.loss):
            out["note"] = "the model's outputs are not numbers (NaN)"
        elif math.isinf(self.loss):
            out["note"] = "the model gives some token probability 0, so the loss is infinite"
        elif out["perplexity"] is None:
            out["note"] = f"exp(loss) overflows a float: the loss is {self.loss:.6g} nats per token"
        return {**out, "tokens": self.tokens}


@torch.no_grad()
def surprisal(model: torch.nn.Module, ids: torch.Tensor, chunk: int = CHUNK) -> torch.Tensor:
    """-log p(ids[t] | ids[:t]) in nats for t = 1..N-1, as a float tensor of N-1 values on the CPU."""
    was_training = model.training
    model.eval()
    device = device_of(model)
    ids = ids.to(device)
    state, out = None, []
    for start in range(0, len(ids) - 1, chunk):
        X = ids[start:start + chunk].unsqueeze(0)                       # (1, T)
        Y = ids[start + 1:start + chunk + 1]
        logits, state = model(X[:, :len(Y)], state)                     # (1, T, V)
        out.append(F.cross_entropy(logits[0].float(), Y, reduction="none").cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


def score(model: torch.nn.Module, ids: torch.Tensor, chunk: int = CHUNK) -> Score:
    """Perplexity of `ids` under `model`, state carried over the whole sequence, dropout off."""
    if len(ids) < 2:
        raise ValueError("need at least two tokens to score a text")
    nats = surprisal(model, ids, chunk)
    return Score(float(nats.double().mean()), len(nats))
