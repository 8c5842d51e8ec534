"""CPU fast path for the recurrent layers: the whole time loop in a C++ extension.

Training (`recurrence`): per step one MKL matmul and one fused elementwise pass; in backward one matmul
per step for dH and a single batched matmul for dW_h. Generation (`sample_loop`): the whole sampling loop.
Built with torch's cpp_extension on first use and cached in torch's extension directory (respects
TORCH_EXTENSIONS_DIR). When it cannot be built, or ZOO_KERNELS=0, or the tensors are not on the CPU (or
not float32/float64), the same maths runs in plain torch ops (reference.py).
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import warnings
from pathlib import Path

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .reference import GATES, Lookup, check_sampling, reference_recurrence, reference_sample_loop

__all__ = ["available", "Lookup", "recurrence", "reference_recurrence", "sample_loop",
           "reference_sample_loop"]

_SOURCES = ["recurrence.cpp", "sample.cpp"]


def _cpu_tag() -> str:
    """A short hash of the CPU model and flags: the build uses -march=native, so a build directory shared
    between different machines must not hand one CPU's binary to another."""
    try:
        info = Path("/proc/cpuinfo").read_text()
        lines = [ln for ln in info.splitlines() if ln.startswith(("model name", "flags", "Features"))]
        text = "\n".join(sorted(set(lines)))
    except OSError:
        text = platform.processor()
    return hashlib.sha1(f"{platform.machine()}\n{text}".encode()).hexdigest()[:10]


@functools.cache
def _ops():
    """Build (or load from torch's extension cache) the C++ ops; None, after one warning, if that fails."""
    from torch.utils import cpp_extension

    here = Path(__file__).parent
    x86 = platform.machine() in ("x86_64", "AMD64")
    native = ["-march=native", "-mprefer-vector-width=512"] if x86 else []
    try:
        cpp_extension.load(
            name=f"zoo_kernels_{_cpu_tag()}",
            sources=[str(here / s) for s in _SOURCES],
            extra_include_paths=[str(here)],
            extra_cflags=["-O3", "-fopenmp", *native],
            extra_ldflags=["-fopenmp"],
            is_python_module=False,
            verbose=False,
        )
    except Exception as e:  # no compiler, no ninja, unsupported platform: fall back to torch ops
        reason = (str(e).strip().splitlines() or [""])[0][:160]
        warnings.warn(f"zoo.kernels: C++ extension unavailable, using torch ops ({type(e).__name__}: "
                      f"{reason})", stacklevel=3)
        return None
    return torch.ops.zoo_kernels


def available() -> bool:
    """True when the C++ kernels will run: the extension built and loaded here, and ZOO_KERNELS != 0."""
    return os.environ.get("ZOO_KERNELS", "1") != "0" and _ops() is not None


def _use_kernels(tensors, dtypes) -> bool:
    """All given tensors on the CPU with one dtype out of dtypes, and the extension available."""
    tensors = [t for t in tensors if t is not None]
    same = len({t.dtype for t in tensors}) == 1 and tensors[0].dtype in dtypes
    return same and all(t.device.type == "cpu" for t in tensors) and available()


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
    may be row-major or the transpose of a row-major matrix (torch.nn's weight_hh.t()) at no copy."""
    if cell not in GATES:
        raise ValueError(f"unknown cell {cell!r}; expected one of {sorted(GATES)}")
    H0, C0 = state if cell == "lstm" else (state, None)
    if isinstance(XW, Lookup):  # contiguous here, or forward and backward would each copy a transposed view
        table, ids = XW.table, XW.ids.contiguous()
    else:
        table, ids = XW, None
    if cell == "gru" and b_hn is None:
        b_hn = table.new_zeros(W_h.shape[0])
    steps = len(table if ids is None else ids)
    on_cpu = ids is None or ids.device.type == "cpu"
    fast = on_cpu and _use_kernels((table, W_h, H0, C0, b_hn), (torch.float32, torch.float64))
    if steps == 0 or not fast:
        return reference_recurrence(cell, XW, W_h, state, b_hn)
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
    state: one entry per layer (H, or (H, C) for lstm), batch B. temperature 0 is greedy argmax; otherwise
    one draw per row from softmax(logits / temperature) restricted to the top_k largest (top_k > 0) and to
    the smallest set whose probability reaches top_p. Returns (tokens (B, steps) long, final state).
    Gives the same tokens as reference_sample_loop for the same generator state.
    """
    check_sampling(cells, temperature, top_k, top_p)
    if prompt.dim() != 2 or prompt.shape[1] == 0:
        raise ValueError("prompt must be (B, P) token ids with P >= 1")
    if prompt.numel() and not 0 <= int(prompt.min()) <= int(prompt.max()) < len(layers[0][0]):
        raise IndexError("the prompt holds ids outside the vocabulary")
    flat = [t for s in state for t in (s if isinstance(s, (tuple, list)) else (s,))]
    weights = [t for layer in layers for t in layer] + list(head)
    cpu_generator = generator is None or generator.device.type == "cpu"
    if not (cpu_generator and _use_kernels(weights + flat, (torch.float32,))):
        return reference_sample_loop(cells, layers, head, state, prompt, steps, temperature, top_k, top_p,
                                     generator)
    W_x, b_x, W_h, b_hn = (list(w) for w in zip(*layers))
    tokens, out = _ops().sample_loop(list(cells), W_x, b_x, W_h, b_hn, *head, flat, prompt.cpu(), steps,
                                     temperature, top_k, top_p, generator)
    it = iter(out)  # flat again: H, then C for an lstm layer
    return tokens, [(next(it), next(it)) if cell == "lstm" else next(it) for cell in cells]
