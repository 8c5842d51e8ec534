"""Perplexity, bits per character and per-character surprisal of any length of text, in bounded memory.

Every token is predicted from the text before it, the state carried from chunk to chunk. A long text is
read as several streams side by side, a batch instead of one long sequence: each stream covers a
contiguous part, and first reads the WARMUP tokens before its part, unscored, so that its state holds
what one stream reading everything would hold. The first stream starts at the first token, exactly as a
single stream does; bench_speed.py shows the others keep the perplexity within 0.1% of one stream's.
Texts up to EXACT tokens (every split of the book) are read as one stream.
On a GPU the chunks of a recurrent model are replayed from a recorded CUDA graph: the same kernels,
without the launches that would otherwise cost more than the work.
"""
from __future__ import annotations

import math
import sys
import threading
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from zoo.graphs import clone, record, recorded, tensors
from zoo.models.base import RecurrentLM, device_of

CHUNK = 4096           # time steps per forward pass of a single stream (memory, not results)
BATCH_TOKENS = 16_384  # tokens per forward pass over all streams (a kernel keeps its gates: memory)
WARMUP = 256           # tokens a stream reads before its part: 8x the 32 after which every bundled model
                       # already agrees with one stream to 1e-6, for 6% more work at PART tokens
EXACT = 65_536         # texts up to this many tokens are read as one stream, exactly (a split of the book is)
PART = 4_096           # tokens a stream scores in a longer text, after its WARMUP ones
MAX_STREAMS = 64
GRAPH_STEPS = 256      # time steps in a recorded chunk (GPU)


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
    state, out = None, []
    for start in range(0, len(ids) - 1, chunk):
        X = ids[start:start + chunk + 1].to(device, torch.long)
        logits, state = model(X[None, :-1], state)                     # (1, T, V)
        out.append(F.cross_entropy(logits[0].float(), X[1:], reduction="none").cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


def streams_for(tokens: int) -> int:
    """How many streams read a text of `tokens` predicted tokens: one up to EXACT, then one per PART tokens,
    at most MAX_STREAMS."""
    return 1 if tokens <= EXACT else min(MAX_STREAMS, tokens // PART)


@torch.no_grad()
def score(model: torch.nn.Module, ids: torch.Tensor, streams: int | None = None) -> Score:
    """Perplexity of `ids` (any integer dtype, on any device, a memory map included) under `model`, state
    carried, dropout off, read as `streams` parallel streams (default `streams_for`; 1 is exact)."""
    N = len(ids)
    if N < 2:
        raise ValueError("need at least two tokens to score a text")
    K = streams or streams_for(N - 1)
    L = (N - 1) // K                 # tokens each stream predicts; the last one also the few left over
    if K > 1 and L < WARMUP:
        raise ValueError(f"{K} streams of {L} tokens: each needs at least {WARMUP} (use fewer streams)")
    was_training = model.training
    model.eval()
    device = device_of(model)
    inputs = ids[:K * L].view(K, L)                                 # stream k reads ids[k L : (k+1) L] ...
    targets = ids[1:K * L + 1].view(K, L)                           # ... and predicts the next token of each
    state = _warm_up(model, ids, K, L, device)
    total, T, done = 0.0, max(1, min(CHUNK, BATCH_TOKENS // K)), 0
    if device.type == "cuda" and isinstance(model, RecurrentLM) and L >= GRAPH_STEPS:
        done = L // GRAPH_STEPS * GRAPH_STEPS
        total, state = _replayed(model, inputs[:, :done], targets[:, :done], state)
    for start in range(done, L, T):
        logits, state = model(inputs[:, start:start + T].to(device, torch.long), state)
        Y = targets[:, start:start + T].to(device, torch.long)
        total += float(F.cross_entropy(logits.flatten(0, 1).float(), Y.flatten(), reduction="sum"))
    if K * L < N - 1:                # the tail: the last stream reads on alone
        last = _rows(state, slice(K - 1, K))
        for start in range(K * L, N - 1, CHUNK):
            X = ids[start:start + CHUNK + 1].to(device, torch.long)
            logits, last = model(X[None, :-1], last)
            total += float(F.cross_entropy(logits[0].float(), X[1:], reduction="sum"))
    model.train(was_training)
    return Score(total / (N - 1), N - 1)


def _replayed(model: RecurrentLM, inputs: torch.Tensor, targets: torch.Tensor, state) -> tuple[float, object]:
    """The summed loss of the streams over inputs (K, n GRAPH_STEPS), and their state after, chunk by chunk
    from a recorded graph."""
    K = len(inputs)
    chunk = recorded(model, ("score", K), lambda: _Chunk(model, K))
    with chunk.lock:
        chunk.start(model.init_state(K) if state is None else state)
        for start in range(0, inputs.shape[1], GRAPH_STEPS):
            chunk.X.copy_(inputs[:, start:start + GRAPH_STEPS])
            chunk.Y.copy_(targets[:, start:start + GRAPH_STEPS])
            chunk.graph.replay()
        return float(chunk.total), clone(chunk.state)


class _Chunk:
    """GRAPH_STEPS steps of K streams recorded as a CUDA graph: ids X and targets Y in, the summed loss
    added to `total`, and the new state written back over the state read, so replays chain."""

    def __init__(self, model: RecurrentLM, K: int):
        device = device_of(model)
        self.lock = threading.Lock()
        self.X = torch.zeros(K, GRAPH_STEPS, dtype=torch.long, device=device)
        self.Y = torch.zeros_like(self.X)
        self.state = model.init_state(K)
        self.total = torch.zeros((), dtype=torch.float64, device=device)

        def chunk():
            logits, state = model(self.X, self.state)
            self.total += F.cross_entropy(logits.flatten(0, 1).float(), self.Y.flatten(), reduction="sum")
            for static, new in zip(tensors(self.state), tensors(state)):
                static.copy_(new)
        self.graph = record(chunk, device)

    def start(self, state) -> None:
        self.total.zero_()
        for static, value in zip(tensors(self.state), tensors(state)):
            static.copy_(value)


def _warm_up(model, ids: torch.Tensor, K: int, L: int, device):
    """The state each stream starts from: zeros for the first (it starts at the text's start), and for
    stream k > 0 the state after reading the WARMUP tokens before k L."""
    if K == 1:
        return None
    before = torch.stack([ids[k * L - WARMUP:k * L] for k in range(1, K)]).to(device, torch.long)
    warm, T = None, max(1, BATCH_TOKENS // K)
    for start in range(0, WARMUP, T):                                 # (K-1, WARMUP) read in chunks: memory
        _, warm = model(before[:, start:start + T], warm)
    return _cat(model.init_state(1, device), warm)


def _rows(state, rows: slice):
    """Rows of a batched state: (L, B, ...) tensors, or tuples of them."""
    return tuple(s[:, rows] for s in state) if isinstance(state, tuple) else state[:, rows]


def _cat(a, b):
    return tuple(torch.cat(pair, 1) for pair in zip(a, b)) if isinstance(a, tuple) else torch.cat([a, b], 1)
