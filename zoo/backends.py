"""Which code runs a recurrent layer: the cell's own `step`, or an accelerator proven equal to it.

    step    the cell's `forward`: its `step` over the time steps, autograd deriving the backward. Runs any cell.
    torch   torch's fused recurrent layers (oneDNN on CPU, cuDNN on CUDA), for the cells whose maths they
            compute: the RNN, the LSTM and PyTorch's form of the GRU.
    kernel  zoo.kernels' C++ time loop (CPU), for the book's cells, its reset-before GRU included.

An accelerator runs a cell only if it is registered for that exact class (`TORCH`, `KERNEL`) and the class's
`project` and `step` are the code the tests proved it equal to (`PROVEN`, a fingerprint of their tokens):
a subclass, or an edited step, runs its own step, and an edited one says so once.

"auto" takes the fastest of the backends that may run a cell, measured on first use for that cell, its
shapes, device, dtype and thread count (as `torch.backends.cudnn.benchmark` does) and remembered on disk,
so every machine gets its own answer. A named backend is used wherever it may run, the step elsewhere.
"""
from __future__ import annotations

import functools
import hashlib
import inspect
import io
import json
import logging
import math
import os
import threading
import time
import tokenize
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor
from torch.func import functional_call

from zoo import kernels
from zoo.models.cells import Cell, GRUCell, LSTMCell, RNNCell, TorchGRUCell

log = logging.getLogger("zoo")
# cuDNN copies weights that are not one flat buffer (a cell's never are) and warns at every call: expected here
warnings.filterwarnings("ignore", message="RNN module weights are not part of single contiguous chunk")
NAMES = ("auto", "step", "torch", "kernel")
ENV = "ZOO_BACKEND"          # read by the CLI and the app, passed to the library as an argument
CACHE_ENV = "ZOO_BACKEND_CACHE"

TORCH = {RNNCell: torch.rnn_tanh, TorchGRUCell: torch.gru, LSTMCell: torch.lstm}
KERNEL = {RNNCell: "rnn", GRUCell: "gru-book", TorchGRUCell: "gru", LSTMCell: "lstm"}
# The fingerprints of the cells' code that tests/test_backends.py proves the accelerators equal to.
PROVEN = {RNNCell: "b60d8df93bb9693c",
          GRUCell: "0bb94e07b1b2b7a1", TorchGRUCell: "14f8e6acb5cb7ee6",
          LSTMCell: "fb4873756c6667ad"}


@dataclass(frozen=True)
class Layer:
    """One recurrent layer as the backends see it: its cell's class, and that cell's parameters by name
    (`W_x`, `W_h`, `b`, ...) for this call; `module`, when the weights live in a cell, is that cell."""
    cell: type[Cell]
    params: dict[str, Tensor]
    module: Cell | None = field(default=None, compare=False)

    def replace(self, **params: Tensor) -> "Layer":
        return Layer(self.cell, {**self.params, **params}, self.module)


def accelerate(cell: type[Cell], proven: str, torch=None, kernel: str | None = None) -> None:
    """Register accelerators for exactly `cell`: torch's recurrent op computing its maths (called like
    torch.lstm), and/or the name of the zoo.kernels cell that does; `proven` is the fingerprint of the cell's
    code that a test proved them equal to (tests/test_backends.py does it for every cell registered)."""
    if torch is not None:
        TORCH[cell] = torch
    if kernel is not None:
        KERNEL[cell] = kernel
    PROVEN[cell] = proven


def check_name(name: str) -> str:
    if name not in NAMES:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(NAMES)}")
    return name


# ---------------------------------------------------------------------------- proof: the cell's code

@functools.lru_cache(maxsize=None)
def _fingerprint(project, step) -> str | None:
    try:
        code = [_tokens(inspect.getsource(f)) for f in (project, step)]
    except (OSError, TypeError):      # defined where no source can be read (a REPL): nothing to compare
        return None
    return hashlib.sha1("\n".join(code).encode()).hexdigest()[:16]


def fingerprint(cell: type[Cell]) -> str | None:
    """A hash of the code of `cell.project` and `cell.step`, blind to comments, docstrings and layout."""
    return _fingerprint(cell.project, cell.step)


def _tokens(source: str) -> str:
    """The function's tokens after its name, without comments, line breaks, indentation or docstring."""
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}
    tokens = list(tokenize.generate_tokens(io.StringIO(inspect.cleandoc("\n" + source)).readline))
    start = next(i for i, t in enumerate(tokens) if t.string == "def") + 2        # past `def name`
    body = next(i for i, t in enumerate(tokens) if t.type == tokenize.NEWLINE) + 1
    rest = [t for t in tokens[body:] if t.type not in skip]
    if rest and rest[0].type == tokenize.STRING:
        rest = rest[1:]
    return " ".join(t.string for t in tokens[start:body] + rest if t.type not in skip)


def proven(cell: type[Cell]) -> bool:
    """Whether `cell` is exactly the code its accelerators were proven equal to."""
    return PROVEN.get(cell) is not None and PROVEN.get(cell) == fingerprint(cell)


# ---------------------------------------------------------------------------- the three backends

_templates = threading.local()   # functional_call swaps a module's parameters: one template per thread


def run_step(layer: Layer, X: Tensor, state, gates: list | None = None):
    """The cell's own forward (its step over time), on the layer's parameters; `gates`: see Cell.forward."""
    module = layer.module
    if module is not None and all(layer.params.get(k) is p for k, p in module.named_parameters()):
        return module(X, state, gates)
    if module is None:                  # the weights live elsewhere (a torch layer): a template cell reads them
        cache = _templates.__dict__.setdefault("cells", {})
        key = (layer.cell, layer.params["W_x"].shape[0], layer.params["W_h"].shape[0])
        if key not in cache:
            with torch.device("meta"):
                cache[key] = layer.cell(*key[1:])
        module = cache[key]
    return functional_call(module, layer.params, (X, state, gates))


def run_torch(layer: Layer, X: Tensor, state):
    """torch's own recurrent op over the cell's weights, laid out as torch stores them."""
    p = layer.params
    W_x, W_h, b = p["W_x"], p["W_h"], p["b"]
    h = W_h.shape[0]
    b_hh = b.new_zeros(len(b))
    if "b_hn" in p:      # PyTorch's GRU keeps the candidate's recurrent bias apart: bias_hh = [0, 0, b_hn]
        b_hh = torch.cat([b_hh[:2 * h], p["b_hn"]])
    if not X.is_floating_point():
        X = torch.nn.functional.one_hot(X, W_x.shape[0]).to(W_x.dtype)
    memory = layer.cell.memory
    hx = tuple(s[None].contiguous() for s in state) if memory else state[None].contiguous()   # (layers, B, h)
    weights = [W_x.t().contiguous(), W_h.t().contiguous(), b, b_hh]    # cuDNN reads them as flat buffers
    out = TORCH[layer.cell](X, hx, weights, True, 1, 0.0, torch.is_grad_enabled(), False, False)
    Hs, *final = out if memory else (out[0], out[1])
    return Hs, (final[0][0], final[1][0]) if memory else final[0][0]


def run_kernel(layer: Layer, X: Tensor, state):
    """zoo.kernels' C++ loop; a first layer's one-hot inputs are read as rows of W_x + b, in place."""
    p = layer.params
    if X.is_floating_point():
        T, B = X.shape[:2]
        XW = torch.addmm(p["b"], X.reshape(T * B, -1), p["W_x"]).view(T, B, -1)
    else:
        XW = kernels.Lookup(X, p["W_x"] + p["b"])
    return kernels.recurrence(KERNEL[layer.cell], XW, p["W_h"], state, p.get("b_hn"))


RUNNERS = {"step": run_step, "torch": run_torch, "kernel": run_kernel}


def candidates(layer: Layer, X: Tensor) -> list[str]:
    """The backends that may run this layer: the step always; an accelerator when proven and able."""
    names = ["step"]
    cell, W_h = layer.cell, layer.params["W_h"]
    accelerated = cell in TORCH or cell in KERNEL
    if accelerated and not proven(cell):
        _say_once(f"zoo: {cell.__name__}.step is not the code its accelerators were proven equal to, so "
                  f"{cell.__name__} runs its own step (update PROVEN in zoo/backends.py once the tests pass)")
        return names
    if cell in TORCH:
        names.append("torch")
    if cell in KERNEL and W_h.device.type == "cpu" and W_h.dtype in (torch.float32, torch.float64) \
            and kernels.available():
        names.append("kernel")
    return names


@functools.cache
def _say_once(message: str) -> None:
    """One line on stderr (through logging, so it can be silenced), once per process."""
    log.warning(message)


# ---------------------------------------------------------------------------- choosing, by measurement

def run(layer: Layer, X: Tensor, state, backend: str = "auto"):
    """Run one recurrent layer over X (T, B) ids or (T, B, inputs) on `backend` -> (Hs (T, B, h), state)."""
    return RUNNERS[choose(layer, X, backend)](layer, X, state)


def choose(layer: Layer, X: Tensor, backend: str = "auto") -> str:
    """The backend that runs `layer` on inputs like X: `backend` where it may, else the step; "auto": the
    fastest here, by measurement."""
    names = candidates(layer, X)
    if backend != "auto":
        if backend in names:
            return backend
        if layer.cell not in {"step": [layer.cell], "torch": TORCH, "kernel": KERNEL}[backend]:
            _say_once(f"zoo: the {backend} backend does not run {layer.cell.__name__}; it runs its own step")
        return "step"
    if len(names) == 1:
        return names[0]
    key = _key(layer, X, names)
    return fastest(key, {name: functools.partial(_time_layer, name, layer, X) for name in names})


LONGEST = 256   # time steps measured: beyond, every backend's cost grows alike with the length


def _bucket(n: int) -> int:
    """Sizes by the next power of two: timings are taken per bucket, not per exact size."""
    return 1 << max(0, math.ceil(math.log2(max(n, 1))))


def _key(layer: Layer, X: Tensor, names: list[str]) -> str:
    W_h = layer.params["W_h"]
    T, B = X.shape[:2]
    inputs = "ids" if not X.is_floating_point() else X.shape[-1]
    return (f"{layer.cell.__qualname__} {'train' if torch.is_grad_enabled() else 'infer'} {device_name(W_h)} "
            f"{str(W_h.dtype)[6:]} T{min(_bucket(T), LONGEST)} B{_bucket(B)} in{inputs} h{W_h.shape[0]} "
            f"[{' '.join(names)}]")


def _time_layer(name: str, layer: Layer, X: Tensor) -> float:
    """Seconds of one forward (and, with autograd on, backward) of `layer` on `name`, on copies of its inputs."""
    grad = torch.is_grad_enabled()
    params = {k: v.detach().requires_grad_(grad) for k, v in layer.params.items()}
    W_h = params["W_h"]
    H = torch.zeros(X.shape[1], W_h.shape[0], device=W_h.device, dtype=W_h.dtype)
    state = (H, H) if layer.cell.memory else H
    inputs = X[:LONGEST].detach().requires_grad_(grad and X.is_floating_point())

    def once():
        Hs, _ = RUNNERS[name](Layer(layer.cell, params), inputs, state)
        if grad:
            Hs.sum().backward()
    return timed(once, W_h.device)


def timed(fn: Callable[[], object], device: torch.device, budget: float = 0.3) -> float:
    """The best of up to five timed calls of fn, after an untimed one, stopping once `budget` seconds are spent."""
    fn()
    times: list[float] = []
    while len(times) < 5 and sum(times) < budget:
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return min(times)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(t: Tensor) -> str:
    """The device as a timing depends on it: the GPU's name, or the CPU's model and torch's thread count."""
    if t.device.type == "cuda":
        return torch.cuda.get_device_name(t.device).replace(" ", "_")
    return f"{kernels.cpu_model().replace(' ', '_')}x{torch.get_num_threads()}"


_lock = threading.RLock()
_memory: dict[str, dict] = {}


def cache_path() -> Path:
    """$ZOO_BACKEND_CACHE, else $XDG_CACHE_HOME/rnn-zoo/backends.json (default ~/.cache/rnn-zoo)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "rnn-zoo" / "backends.json"


def fastest(key: str, runs: dict[str, Callable[[], float]]) -> str:
    """The name whose run (returning its seconds) is fastest, measured once per key and kept on disk."""
    with _lock:
        if key not in _memory:
            _memory.update(_read())
        if key not in _memory:
            seconds = {name: run() for name, run in runs.items()}
            # timings taken while other processes hold the cores are used now, not kept for later
            _memory[key] = {"choice": min(seconds, key=seconds.get), "seconds": seconds,
                            "torch": torch.__version__, "busy": busy()}
            if not _memory[key]["busy"]:
                _write()
        return _memory[key]["choice"]


def busy() -> bool:
    """Whether other work holds the cores: the load average is above the cores there are."""
    return hasattr(os, "getloadavg") and os.getloadavg()[0] > (os.cpu_count() or 1)


def choices() -> dict[str, dict]:
    """Every choice made or remembered so far: {key: {"choice", "seconds"}}."""
    with _lock:
        return {**_read(), **_memory}


def _read() -> dict:
    try:
        saved = json.loads(cache_path().read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in saved.items() if isinstance(v, dict) and v.get("torch") == torch.__version__}


def _write() -> None:
    """Best effort: a cache that cannot be written only costs a new measurement next time."""
    path = cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        kept = {key: entry for key, entry in _memory.items() if not entry.get("busy")}
        tmp.write_text(json.dumps({**_read(), **kept}, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError:
        pass
