"""Benchmark zoo.kernels against the plain-torch reference, the book's scratch models and nn.RNN/GRU/LSTM.

Training: ms per forward + backward of one batch (B=32, T=35, h=256, V=28, the book's recipe): input
projections, the recurrent layer, a linear head and cross-entropy. Sampling: us per character of
`sample_loop` at batch 1. Medians over repetitions that take turns between the paths.

    python scripts/bench_kernels.py [--cells lstm gru rnn gru-book] [--reps 50]
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout: zoo need not be installed
from zoo import kernels
from zoo.kernels.reference import GATES

B, T, H, V = 32, 35, 256, 28


def median_ms(fns: dict, reps: int, warmup: int = 3) -> dict:
    """Median wall time of each function in ms, calling them round-robin so that they share the
    machine's noise (this VM's speed drifts with its neighbours' load)."""
    times = {name: [] for name in fns}
    for i in range(warmup + reps):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) * 1e3 for name, ts in times.items()}


def kernel_step(cell: str, use_kernels: bool):
    """fwd + bwd of recurrence -> head -> cross-entropy with the concise models' parameter layout: the
    input projection as a row lookup into W_x + b_x, and W_h as torch.nn's weight_hh.t()."""
    G = GATES[cell]
    params = {
        "W_x": torch.randn(V, G * H) * 0.1, "b_x": torch.zeros(G * H),
        "W_hh": torch.randn(G * H, H) / H**0.5, "W_q": torch.randn(H, V) * 0.1, "b_q": torch.zeros(V),
    }
    if cell == "gru":
        params["b_hn"] = torch.zeros(H)
    for p in params.values():
        p.requires_grad_()
    X, Y = torch.randint(V, (B, T)), torch.randint(V, (B, T))
    state = (torch.zeros(B, H), torch.zeros(B, H)) if cell == "lstm" else torch.zeros(B, H)
    run = kernels.recurrence if use_kernels else kernels.reference_recurrence

    def step():
        for p in params.values():
            p.grad = None
        XW = kernels.Lookup(X.T, params["W_x"] + params["b_x"])  # XW[t, b] = (W_x + b_x)[X[b, t]]
        Hs, _ = run(cell, XW, params["W_hh"].t(), state, params.get("b_hn"))
        logits = Hs @ params["W_q"] + params["b_q"]  # (T, B, V)
        F.cross_entropy(logits.reshape(-1, V), Y.T.reshape(-1)).backward()

    return step


BOOK_GATES = {"rnn": "h", "gru-book": "zrh", "lstm": "ifoc"}


def book_step(cell: str):
    """The book's scratch model (d2l 8.5, 9.1, 9.2): one-hot inputs, two matmuls per gate per step and the
    output layer inside the time loop; autograd does the backward."""
    gates = {k: [torch.randn(V, H) * 0.01, torch.randn(H, H) * 0.01, torch.zeros(H)]  # W_x*, W_h*, b_*
             for k in BOOK_GATES[cell]}
    W_hq, b_q = torch.randn(H, V) * 0.01, torch.zeros(V)
    for p in [*(p for ps in gates.values() for p in ps), W_hq, b_q]:
        p.requires_grad_()
    X, Y = torch.randint(V, (B, T)), torch.randint(V, (B, T))

    def step():
        for p in [*(p for ps in gates.values() for p in ps), W_hq, b_q]:
            p.grad = None
        state, C, outputs = torch.zeros(B, H), torch.zeros(B, H), []
        for x in F.one_hot(X.T, V).float():  # (B, V)
            def pre(k, h_in):
                W_x, W_h, b = gates[k]
                return x @ W_x + h_in @ W_h + b
            if cell == "rnn":
                state = torch.tanh(pre("h", state))
            elif cell == "gru-book":
                Z, R = torch.sigmoid(pre("z", state)), torch.sigmoid(pre("r", state))
                state = Z * state + (1 - Z) * torch.tanh(pre("h", R * state))
            else:
                I, F_, O = (torch.sigmoid(pre(k, state)) for k in "ifo")
                C = F_ * C + I * torch.tanh(pre("c", state))
                state = O * torch.tanh(C)
            outputs.append(state @ W_hq + b_q)
        F.cross_entropy(torch.cat(outputs, 0), Y.T.reshape(-1)).backward()

    return step


def torch_nn_step(cell: str):
    """The book's concise RNNModel: one-hot inputs into nn.RNN / nn.GRU / nn.LSTM, then a linear head."""
    rnn = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}[cell](V, H)
    head = nn.Linear(H, V)
    X, Y = torch.randint(V, (B, T)), torch.randint(V, (B, T))

    def step():
        rnn.zero_grad(set_to_none=True)
        head.zero_grad(set_to_none=True)
        out, _ = rnn(F.one_hot(X.T, V).float())  # (T, B, h)
        F.cross_entropy(head(out).reshape(-1, V), Y.T.reshape(-1)).backward()

    return step


def sampler(cells: list[str], use_kernels: bool, temperature: float, steps: int = 1000):
    """Generation of `steps` characters at batch 1 from random weights."""
    layers, state = [], []
    for l, cell in enumerate(cells):
        G = GATES[cell]
        rows = V if l == 0 else H
        layers.append((torch.randn(rows, G * H) * 0.1, torch.zeros(G * H), torch.randn(H, G * H) / H**0.5,
                       torch.zeros(H) if cell == "gru" else None))
        state.append((torch.zeros(1, H), torch.zeros(1, H)) if cell == "lstm" else torch.zeros(1, H))
    head = (torch.randn(H, V) * 0.1, torch.zeros(V))
    run = kernels.sample_loop if use_kernels else kernels.reference_sample_loop
    gen = torch.Generator().manual_seed(0)
    return lambda: run(cells, layers, head, state, torch.tensor([1]), steps, temperature, generator=gen)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", nargs="+", default=["lstm", "gru", "rnn", "gru-book"])
    parser.add_argument("--reps", type=int, default=50)
    args = parser.parse_args()

    start = time.perf_counter()
    ok = kernels.available()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; C++ kernels available: {ok} "
          f"(load/build {time.perf_counter() - start:.1f} s)")
    torch.manual_seed(0)

    print(f"\nfwd+bwd of one batch, B={B} T={T} h={H} V={V} (median of {args.reps})")
    print(f"{'cell':9} {'path':10} {'ms/batch':>9} {'tokens/s':>9} {'/ C++':>6}")
    for cell in args.cells:
        paths = {"C++": kernel_step(cell, True), "reference": kernel_step(cell, False)}
        if cell in BOOK_GATES:
            paths["book"] = book_step(cell)
        if cell in ("rnn", "gru", "lstm"):
            paths[f"nn.{cell.upper()}"] = torch_nn_step(cell)
        ms = median_ms(paths, args.reps)
        for name, t in ms.items():
            print(f"{cell:9} {name:10} {t:9.2f} {B * T / t * 1e3:9.0f} {t / ms['C++']:6.2f}", flush=True)

    print("\nsample_loop at batch 1, 1000 characters (median of 5), us/char")
    print(f"{'cells':12} {'mode':8} {'C++':>7} {'reference':>9} {'speedup':>8}")
    for cells in (["rnn"], ["gru"], ["lstm"], ["lstm", "lstm"]):
        for mode, temperature in (("greedy", 0.0), ("T=0.8", 0.8)):
            paths = {"C++": sampler(cells, True, temperature), "ref": sampler(cells, False, temperature)}
            ms = median_ms(paths, 5, warmup=1)
            fast, slow = ms["C++"], ms["ref"]
            print(f"{'+'.join(cells):12} {mode:8} {fast:7.2f} {slow:9.1f} {slow / fast:7.0f}x", flush=True)


if __name__ == "__main__":
    main()
