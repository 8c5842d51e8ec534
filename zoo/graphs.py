"""Work recorded once as a CUDA graph and replayed: no kernel launches and no host sync per call.

`record` records any function over static tensors (the sampler's step and the scorer's chunk use it);
`GraphedStep` records the whole training step.

With B=32 and h=256 a GPU spends most of a training step waiting for Python to launch ~10 small kernels
per time step; replaying a captured graph removes that. The step is the trainer's own `train_step`
(forward, loss, backward, clipping, optimizer), recorded once on static buffers; each batch then copies
its ids and the carried state into those buffers and replays. On one GPU, AdamW with any schedule qualifies
(the trainer gives it its learning rate as a tensor, set before each replay, and builds it capturable), and
SGD with a constant learning rate; the moving average of the weights is in-place lerps. Anything else keeps
the eager step (`GraphedStep.supports`), so results never depend on whether a graph was used beyond rounding.
"""
from __future__ import annotations

import weakref

import torch

WARMUP_STEPS = 3   # eager steps on a side stream before capture, so lazy CUDA initialisation happens first


def record(fn, device: torch.device) -> torch.cuda.CUDAGraph:
    """Call `fn` once on a side stream (lazy initialisation, the backends' timings), then record one call of
    it as a graph; `graph.replay()` then does what `fn()` did, on the same tensors."""
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        fn()
    torch.cuda.current_stream(device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph


_recorded: "weakref.WeakKeyDictionary[torch.nn.Module, dict]" = weakref.WeakKeyDictionary()
KEEP = 4   # recordings kept per model: each holds its buffers' memory


def recorded(model: torch.nn.Module, key: tuple, build):
    """What `build()` records for this model and key, kept for the next call; recorded again when the
    model's weights have moved to other memory (a graph reads them where they were)."""
    key = (*key, tuple(p.data_ptr() for p in model.parameters()))
    kept = _recorded.setdefault(model, {})
    if key not in kept:
        while len(kept) >= KEEP:
            kept.pop(next(iter(kept)))
        kept[key] = build()
    return kept[key]


class GraphedStep:
    """Drop-in for `Trainer.train_step` on CUDA: eager for the first batches, then capture and replay."""

    @staticmethod
    def possible(device: torch.device, world: int) -> bool:
        """One process on a GPU: where a graph can be captured at all."""
        return device.type == "cuda" and world == 1

    @staticmethod
    def supports(optimizer: torch.optim.Optimizer) -> bool:
        """Whether replaying a recorded `optimizer.step()` does what calling it does: SGD with a float learning
        rate (recorded as a constant), or a capturable AdamW reading a tensor one."""
        lrs = [g["lr"] for g in optimizer.param_groups]
        if isinstance(optimizer, torch.optim.SGD):
            return not any(torch.is_tensor(lr) for lr in lrs)
        return optimizer.defaults.get("capturable", False) and all(torch.is_tensor(lr) for lr in lrs)

    def __init__(self, trainer):
        self.trainer = trainer
        self.graph = None
        self.eager_steps = 0
        self.stream = torch.cuda.Stream(trainer.device)

    def __call__(self, X: torch.Tensor, Y: torch.Tensor, state):
        if state is None:
            state = self.trainer.model.init_state(X.shape[0], X.device)
        if self.graph is None and self.eager_steps < WARMUP_STEPS:
            self.eager_steps += 1
            self.stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(self.stream):
                out = self.trainer.train_step(X, Y, state)
            torch.cuda.current_stream().wait_stream(self.stream)
            return out
        if self.graph is None:
            self._capture(X, Y, state)
        self.X.copy_(X)
        self.Y.copy_(Y)
        for static, value in zip(tensors(self.state_in), tensors(state)):
            static.copy_(value)
        self.graph.replay()
        return self.loss.clone(), clone(self.state_out)

    def _capture(self, X, Y, state) -> None:
        self.X, self.Y, self.state_in = X.clone(), Y.clone(), clone(state)
        self.trainer.optimizer.zero_grad(set_to_none=True)   # gradients are then allocated inside the graph
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, stream=self.stream):
            self.loss, self.state_out = self.trainer.train_step(self.X, self.Y, self.state_in, zero_grad=False)


def tensors(state) -> tuple:
    """A recurrent state's tensors: (h,) or (h, c)."""
    return state if isinstance(state, tuple) else (state,)


def clone(state):
    return tuple(s.clone() for s in state) if isinstance(state, tuple) else state.clone()
