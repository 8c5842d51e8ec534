"""Text from a model: greedy (the book's `predict_ch8`), temperature, top-k and top-p sampling.

The prefix is read once and generation then feeds one token at a time, carrying the state, so the cost is
linear in the length (makemore reruns the whole prefix at every step: quadratic for an RNN). Three samplers
run that loop, chosen like the layers' backends (zoo/backends.py):

    loop    the model's own forward, one token at a time (every layer on its backend): runs any model
    graph   the loop's step recorded once as a CUDA graph and replayed per token: the same kernels without
            the launch overhead that a GPU otherwise waits on at every token (CUDA, any recurrent model)
    kernel  zoo.kernels.sample_loop, the whole loop in one C++ call (CPU, float32), for models whose
            every cell the kernels were proven equal to; it reads a short prefix itself

All draw the same uniform numbers and choose by the same rule (`pick`), so they give the same text for
the same seed wherever their arithmetic agrees.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import torch

from zoo import backends, kernels
from zoo.data import Tokenizer
from zoo.graphs import record, recorded, tensors
from zoo.models.base import RecurrentLM, device_of

MAX_LENGTH = 100_000
PREFIX_IN_LOOP = 256   # tokens; the kernel sampler reads longer prefixes in one forward pass first



@dataclass
class Generation:
    """Sampled continuations (prefix included, as the tokenizer normalises it) and what could not be encoded."""
    texts: list[str]
    prefix: str
    unknown: list[str]   # characters (or words) of the prefix outside the vocabulary, read as <unk>


def pick(logits: torch.Tensor, temperature: float, top_k: int, top_p: float, u: torch.Tensor | None) -> torch.Tensor:
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
    if not (math.isfinite(temperature) and temperature >= 0 and top_k >= 0 and 0 < top_p <= 1):
        raise ValueError("need a finite temperature >= 0, top_k >= 0 and 0 < top_p <= 1")
    was_training = model.training
    model.eval()
    prefix_ids = prefix_ids.to(device_of(model))
    sample = SAMPLERS[sampler_for(model, num_samples, generator)]
    new = sample(model, prefix_ids, length, temperature, top_k, top_p, num_samples, generator)
    model.train(was_training)
    return torch.cat([prefix_ids.expand(num_samples, -1), new.to(prefix_ids.device)], dim=1)


def sampler_for(model, num_samples: int, generator: torch.Generator | None) -> str:
    """The sampler for this model, batch and generator: "kernel" where it may run the model and the model's
    backend setting allows it (auto or kernel), "graph" on a GPU, else "loop"; with several, the fastest here
    by measurement."""
    names = ["loop"]
    if isinstance(model, RecurrentLM):
        if model.backend in ("auto", "kernel") and _kernel_can_run(model, generator):
            if model.backend == "kernel":
                return "kernel"
            names.append("kernel")
        if device_of(model).type == "cuda":
            names.append("graph")
    if len(names) == 1:
        return names[0]
    device = device_of(model)
    where = backends.device_name(model.layer(0).params["W_h"])
    key = (f"sampler {model.cell.__qualname__} {model.backend} infer {where} L{model.config.num_layers}"
           f"  B{backends._bucket(num_samples)} h{model.config.num_hiddens} V{model.config.vocab_size}"
           f" [{' '.join(names)}]")
    prefix = torch.zeros(8, dtype=torch.long, device=device)

    def timing(sampler):
        return lambda: backends.timed(lambda: sampler(model, prefix, 32, 0.0, 0, 1.0, num_samples, None), device)
    return backends.fastest(key, {name: timing(SAMPLERS[name]) for name in names})


def _kernel_can_run(model: RecurrentLM, generator) -> bool:
    W_h = model.layer(0).params["W_h"]
    return (model.cell in backends.KERNEL and backends.proven(model.cell) and not model.config.embedding
            and W_h.device.type == "cpu" and W_h.dtype == torch.float32
            and (generator is None or generator.device.type == "cpu") and kernels.available())


def _loop_sampler(model, prefix_ids, length, temperature, top_k, top_p, num_samples, generator) -> torch.Tensor:
    """The model's own forward, one token at a time, after one pass over the prefix: any model with
    `forward(idx, state) -> (logits, state)` (the n-gram's state is its last tokens)."""
    state = model(prefix_ids[None, :-1])[1] if len(prefix_ids) > 1 else None
    if state is not None:
        state = expand_state(state, num_samples)
    token = prefix_ids[-1:].expand(num_samples)
    U = torch.rand(length, num_samples, generator=generator, device=token.device) if temperature > 0 else None
    out = []
    for t in range(length):
        logits, state = model(token[:, None], state)
        token = pick(logits[:, -1].float(), temperature, top_k, top_p, None if U is None else U[t])
        out.append(token)
    return torch.stack(out, dim=1) if out else token.new_empty(num_samples, 0)


def _graph_sampler(model, prefix_ids, length, temperature, top_k, top_p, num_samples, generator) -> torch.Tensor:
    """The loop, with its step (the model's forward on one token and `pick`) replayed from a CUDA graph."""
    state = model(prefix_ids[None, :-1])[1] if len(prefix_ids) > 1 else model.init_state(1)
    U = torch.rand(length, num_samples, generator=generator, device=prefix_ids.device) if temperature > 0 else None
    out = prefix_ids.new_empty(num_samples, length)
    step = _captured_step(model, num_samples, temperature, top_k, top_p)
    with step.lock:                       # one generation at a time through its static buffers
        step.start(expand_state(state, num_samples), prefix_ids[-1])
        for t in range(length):
            if U is not None:
                step.u.copy_(U[t])
            step.graph.replay()
            out[:, t].copy_(step.token)
    return out


class _CapturedStep:
    """One sampling step of a model recorded as a CUDA graph, over static buffers: the token and the state
    in, then the next token and the new state written back over them, so replays chain."""

    def __init__(self, model, num_samples: int, temperature: float, top_k: int, top_p: float):
        device = device_of(model)
        self.lock = threading.Lock()
        self.token = torch.zeros(num_samples, dtype=torch.long, device=device)
        self.u = torch.zeros(num_samples, device=device)
        self.state = model.init_state(num_samples)

        def step():
            logits, state = model(self.token[:, None], self.state)
            token = pick(logits[:, -1].float(), temperature, top_k, top_p, self.u if temperature > 0 else None)
            for static, new in zip(tensors(self.state), tensors(state)):
                static.copy_(new)
            self.token.copy_(token)
        self.graph = record(step, device)

    def start(self, state, token: torch.Tensor) -> None:
        for static, value in zip(tensors(self.state), tensors(state)):
            static.copy_(value)
        self.token.fill_(int(token))


def _captured_step(model, num_samples: int, temperature: float, top_k: int, top_p: float) -> _CapturedStep:
    return recorded(model, ("sample", num_samples, temperature, top_k, top_p, model.backend),
                    lambda: _CapturedStep(model, num_samples, temperature, top_k, top_p))



def _kernel_sampler(model, prefix_ids, length, temperature, top_k, top_p, num_samples, generator) -> torch.Tensor:
    """The whole loop in one C++ call; a short prefix is read in that loop, a long one by a forward pass."""
    in_loop = prefix_ids if len(prefix_ids) <= PREFIX_IN_LOOP else prefix_ids[-1:]
    ahead = prefix_ids[:len(prefix_ids) - len(in_loop)]
    state = model(ahead[None])[1] if len(ahead) else model.init_state(1)
    layers = [model.layer(index) for index in range(model.config.num_layers)]
    weights = [(p["W_x"], p["b"], p["W_h"], p.get("b_hn")) for p in (layer.params for layer in layers)]
    new, _ = kernels.sample_loop([backends.KERNEL[model.cell]] * len(layers), weights, model.head_weights(),
                                 model.layer_states(expand_state(state, num_samples)),
                                 in_loop.expand(num_samples, -1), length, temperature, top_k, top_p, generator)
    return new


SAMPLERS = {"loop": _loop_sampler, "graph": _graph_sampler, "kernel": _kernel_sampler}


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
