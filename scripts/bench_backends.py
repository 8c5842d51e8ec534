"""Where each backend wins: every cell on every backend that may run it, training and generating, here.

Training: tokens/s of forward + backward of one layer over a batch (the book's B 32, T 35, h 256, V 28:
the first layer, reading one-hot tokens). Inference: tokens/s of one forward at batch 1 over T 256 (reading
a text) and T 1 (one step of generation). Each at 1 and 2 threads, medians of repetitions that take turns
between the backends, and what `auto` chooses for the same case. This is the table behind the README's
"Fast paths": the choice depends on the processor, so run it on yours.

    python scripts/bench_backends.py [--reps 20] [--threads 1 2] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout: zoo need not be installed
from zoo import backends, kernels  # noqa: E402
from zoo.backends import KERNEL, TORCH, Layer  # noqa: E402
from zoo.models.cells import GRUCell, LSTMCell, RNNCell, TorchGRUCell  # noqa: E402

CELLS = [RNNCell, GRUCell, TorchGRUCell, LSTMCell]
CASES = {"train B32 T35": (32, 35, True), "read B1 T256": (1, 256, False), "step B1 T1": (1, 1, False)}
V, H = 28, 256


def layer_of(cell) -> Layer:
    torch.manual_seed(0)
    module = cell(V, H, init="uniform")
    return Layer(cell, dict(module.named_parameters()), module)


def runner(name: str, layer: Layer, X: torch.Tensor, train: bool):
    """One forward (and backward, when training) of the layer on backend `name`."""
    state = layer.module.init_state(X.shape[1])

    def run():
        with torch.set_grad_enabled(train):
            Hs, _ = backends.RUNNERS[name](layer, X, state)
            if train:
                Hs.sum().backward()
    return run


def medians(runs: dict, reps: int) -> dict[str, float]:
    """Median seconds of each run, called in turn (ABBA) so that the machine's drift hits all alike."""
    times = {name: [] for name in runs}
    order = list(runs)
    for i in range(reps + 2):
        for name in order if i % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            runs[name]()
            if i >= 2:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    kernels.available(wait=True)
    results = {"cpu": kernels.cpu_model(), "torch": torch.__version__, "rows": []}
    print(f"{results['cpu']}, torch {torch.__version__}, C++ kernels {'on' if kernels.available() else 'off'}")
    header = f"{'cell':13} {'case':14} {'threads':>7} " + " ".join(f"{n:>9}" for n in backends.NAMES[1:]) + "  fastest  auto"
    print(header + "\n" + "-" * len(header))
    for threads in args.threads:
        torch.set_num_threads(threads)
        for cell in CELLS:
            layer = layer_of(cell)
            names = ["step"] + (["torch"] if cell in TORCH else []) + (["kernel"] if cell in KERNEL and
                                                                      kernels.available() else [])
            for case, (B, T, train) in CASES.items():
                X = torch.randint(V, (T, B))
                seconds = medians({n: runner(n, layer, X, train) for n in names}, args.reps)
                rate = {n: B * T / s for n, s in seconds.items()}
                with torch.set_grad_enabled(train):
                    auto = backends.choose(layer, X)
                fastest = max(rate, key=rate.get)
                results["rows"].append({"cell": cell.__name__, "case": case, "threads": threads,
                                        "tokens_per_sec": rate, "fastest": fastest, "auto": auto})
                cells = " ".join(f"{rate[n] / 1e3:8.1f}k" if n in rate else f"{'-':>9}" for n in backends.NAMES[1:])
                print(f"{cell.__name__:13} {case:14} {threads:7d} {cells}  {fastest:7}  {auto}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
