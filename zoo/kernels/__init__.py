"""An optional CPU accelerator: the whole time loop of a layer, and of sampling, in a C++ extension.

Training (`recurrence`): per step one MKL matmul and one fused elementwise pass; in backward one matmul
per step for dH and a single batched matmul for dW_h. Generation (`sample_loop`): the whole sampling loop.
zoo/backends.py runs these only for the cells they were proven equal to, and only when `available()`.

Nothing waits for the compiler: a build made before (for these sources, this CPU, torch and Python) loads at
once; otherwise the first `available()` starts building in a background thread (about a minute) and says
so in one line, and answers False until the build is done. Without a compiler or OpenMP, it says that in
one line and the other backends run. ZOO_KERNELS=0 turns the kernels off.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import platform
import sys
import threading
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["available", "Lookup", "recurrence", "sample_loop", "cpu_model", "GATES"]

log = logging.getLogger("zoo")
HERE = Path(__file__).parent
SOURCES = ["recurrence.cpp", "sample.cpp"]
HEADERS = ["cells.h", "support.h"]
GATES = {"rnn": 1, "lstm": 4, "gru": 3, "gru-book": 3}   # the cells the C++ code computes, and their gate blocks


class Lookup(NamedTuple):
    """Input projections given as rows of a table: XW[t, b] = table[ids[t, b]]. For a first layer over
    one-hot tokens, one-hot @ W_x + b is the row of the table W_x + b (V, G*h) at the token id."""
    ids: Tensor    # (T, B) int64
    table: Tensor  # (V, G*h)


@functools.cache
def cpu_model() -> str:
    """The processor's model name (lscpu's), or the platform's word for it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _build_name(flags: list[str]) -> str:
    """The extension's name: a hash of everything the binary depends on (sources, flags, CPU, torch,
    Python), so a build found under that name was made from exactly this and loads without a compiler."""
    digest = hashlib.sha1()
    for name in SOURCES + HEADERS:
        digest.update((HERE / name).read_bytes())
    cpu = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else platform.processor()
    flags_of_cpu = sorted({ln for ln in cpu.splitlines() if ln.startswith(("model name", "flags", "Features"))})
    digest.update("\n".join([*flags, *flags_of_cpu, torch.__version__, sys.version, platform.machine()]).encode())
    return f"zoo_kernels_{digest.hexdigest()[:12]}"


class _Extension:
    """The C++ ops: loaded, being built in the background, or failed (with the reason said once)."""

    def __init__(self):
        self.ops = None
        self.failed = False
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()

    def load(self, wait: bool) -> bool:
        with self.lock:
            if self.ops is None and not self.failed and self.thread is None:
                x86 = platform.machine() in ("x86_64", "AMD64")
                flags = ["-O3", "-fopenmp", *(["-march=native", "-mprefer-vector-width=512"] if x86 else [])]
                name = _build_name(flags)
                build_dir = Path(_build_root()) / name
                if (build_dir / f"{name}.so").is_file():
                    self._build(name, flags, build_dir)       # built before: loads in well under a second
                else:
                    log.warning("zoo: building the C++ kernels in the background (about a minute); the other "
                                "backends run meanwhile")
                    self.thread = threading.Thread(target=self._build_behind, args=(name, flags, build_dir),
                                                   daemon=True)
                    self.thread.start()
            thread = self.thread
        if wait and thread is not None:
            thread.join()
        return self.ops is not None

    def _build_behind(self, name: str, flags: list[str], build_dir: Path) -> None:
        """Build at the lowest priority: on Linux a thread's nice value is its own, and the compilers it starts
        inherit it, so the app starting up and the other backends keep the cores they want."""
        if sys.platform.startswith("linux"):
            try:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
            except OSError:
                pass
        self._build(name, flags, build_dir)

    def _build(self, name: str, flags: list[str], build_dir: Path) -> None:
        from torch.utils import cpp_extension
        try:
            build_dir.mkdir(parents=True, exist_ok=True)
            cpp_extension.load(name=name, sources=[str(HERE / s) for s in SOURCES],
                               extra_include_paths=[str(HERE)], extra_cflags=flags,
                               extra_ldflags=["-fopenmp"], build_directory=str(build_dir),
                               is_python_module=False, verbose=False)
            self.ops = torch.ops.zoo_kernels
        except Exception as e:  # no compiler, no OpenMP, no ninja, another platform: the other backends run
            reason = (str(e).strip().splitlines() or [""])[0][:160]
            log.warning(f"zoo: the C++ kernels cannot be built here, so the other backends run "
                        f"({type(e).__name__}: {reason})")
            self.failed = True


def _build_root() -> str:
    """Where torch keeps its extensions: $TORCH_EXTENSIONS_DIR, else its default."""
    from torch.utils import cpp_extension
    return os.environ.get("TORCH_EXTENSIONS_DIR") or cpp_extension.get_default_build_root()


_extension = _Extension()


def available(wait: bool = False) -> bool:
    """True when the C++ kernels are loaded and ZOO_KERNELS != 0. The first call loads a previous build,
    or starts one in the background; `wait` waits for that build to end."""
    return os.environ.get("ZOO_KERNELS", "1") != "0" and _extension.load(wait)


def _ops():
    if not available(wait=True):
        raise RuntimeError("the C++ kernels are not available here (see zoo.kernels.available())")
    return _extension.ops


class _Recurrence(torch.autograd.Function):
    """Autograd wrapper: forward and backward each run as one C++ call over all T steps."""

    @staticmethod
    def forward(ctx, cell, XW, ids, W_h, H0, C0, b_hn):
        outs, saved = _ops().recurrence_forward(cell, XW, ids, W_h, H0, C0, b_hn)
        ctx.cell, ctx.table_rows = cell, XW.shape[0]
        ctx.set_materialize_grads(False)  # no zeros for a final state the loss does not use
        ctx.save_for_backward(W_h, C0, ids, *saved)
        return tuple(outs)  # Hs (T, B, h), H_T[, C_T]

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads):
        W_h, C0, ids, *saved = ctx.saved_tensors
        dX, dW_h, dH0, *rest = _ops().recurrence_backward(ctx.cell, saved, W_h, C0, ids, ctx.table_rows,
                                                           list(grads))
        dC0 = rest[0] if ctx.cell == "lstm" else None
        db_hn = rest[0] if ctx.cell == "gru" else None
        return None, dX, None, dW_h, dH0, dC0, db_hn


def recurrence(cell: str, XW: Tensor | Lookup, W_h: Tensor, state, b_hn: Tensor | None = None):
    """Run one recurrent layer over all T steps. state: H0 (B, h), or (H0, C0) for lstm. Returns
    (Hs (T, B, h), final state in the same form). Differentiable w.r.t. XW, W_h, b_hn and the initial
    state. XW (T, B, G*h) holds the input projections with the input biases, or, for token inputs,
    Lookup(ids (T, B), table (V, G*h)) stands for XW[t, b] = table[ids[t, b]]: the kernel reads the rows in
    place and accumulates the table's gradient directly, so XW and its gradient never exist. W_h (h, G*h)
    may be row-major or the transpose of a row-major matrix (torch.nn's weight_hh.t()) at no copy.
    CPU tensors, float32 or float64."""
    if cell not in GATES:
        raise ValueError(f"unknown cell {cell!r}; expected one of {sorted(GATES)}")
    H0, C0 = state if cell == "lstm" else (state, None)
    if isinstance(XW, Lookup):  # contiguous here, or forward and backward would each copy a transposed view
        table, ids = XW.table, XW.ids.contiguous()
    else:
        table, ids = XW, None
    if cell == "gru" and b_hn is None:
        b_hn = table.new_zeros(W_h.shape[0])
    if len(table if ids is None else ids) == 0:
        return table.new_empty(0, *H0.shape), state
    Hs, H, *C = _Recurrence.apply(cell, table, ids, W_h, H0, C0, b_hn)
    return Hs, ((H, C[0]) if cell == "lstm" else H)


@torch.no_grad()
def sample_loop(cells: list[str], layers: list[tuple[Tensor, Tensor, Tensor, Tensor | None]],
                head: tuple[Tensor, Tensor], state: list, prompt: Tensor, steps: int,
                temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
                generator: torch.Generator | None = None) -> tuple[Tensor, list]:
    """Autoregressive generation, no grad: read prompt (B, P), then choose `steps` tokens, each fed back in.

    The prompt's last token is fed (and the first token chosen) only when steps > 0, so the final state is
    after prompt[:, :-1] and then every token fed. Reading the prompt here, in the same loop, costs no
    extra pass: for a short prompt it is cheaper than a forward pass over it.

    layers[l] = (W_x, b_x, W_h, b_hn): layer 0's input projection of token k is the row W_x[k] + b_x, a
    higher layer's is H_below @ W_x + b_x. head = (W_q (h, V), b_q (V,)): logits = H_top @ W_q + b_q.
    state: one entry per layer (H, or (H, C) for lstm), batch B. Tokens are chosen by the rule of
    zoo.generate.pick: temperature 0 is greedy argmax; otherwise one draw per row, from uniform numbers
    drawn up front (steps, B) from `generator`, from softmax(logits / temperature) restricted to the top_k
    largest (top_k > 0) and to the smallest set whose probability reaches top_p. CPU float32 tensors.
    Returns (tokens (B, steps) long, final state).
    """
    if unknown := set(cells) - set(GATES):
        raise ValueError(f"unknown cells {sorted(unknown)}; expected some of {sorted(GATES)}")
    if prompt.dim() != 2 or prompt.shape[1] == 0:
        raise ValueError("prompt must be (B, P) token ids with P >= 1")
    if prompt.numel() and not 0 <= int(prompt.min()) <= int(prompt.max()) < len(layers[0][0]):
        raise IndexError("the prompt holds ids outside the vocabulary")
    flat = [t for s in state for t in (s if isinstance(s, (tuple, list)) else (s,))]
    W_x, b_x, W_h, b_hn = (list(w) for w in zip(*layers))
    tokens, out = _ops().sample_loop(list(cells), W_x, b_x, W_h, b_hn, *head, flat, prompt.cpu(), steps,
                                     temperature, top_k, top_p, generator)
    it = iter(out)  # flat again: H, then C for an lstm layer
    return tokens, [(next(it), next(it)) if cell == "lstm" else next(it) for cell in cells]
