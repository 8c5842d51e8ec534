"""Our training, sampling and evaluation speed against the book's own code (d2l 0.17.6), in one process.

For every model both sides get the same weights (ours copied into the book's model), the same data (the
book's `load_data_time_machine`: its first 10,000 tokens) and the book's recipe (batch 32, 35 steps, hidden
256, SGD lr 1 (2 for the deep LSTM), clipping 1, sequential partitioning), on the same device, and take
turns epoch by epoch (ABBA order) so that the machine's noise hits both. Figures are medians over the
repetitions; a ratio is the median of the per-round ratios ours / book.

- train: tokens/s of one epoch, timed around the book's `train_epoch_ch8` and around one epoch of our
  `Trainer.run()` (validation off), device synchronised. Model FLOP utilisation (MFU) is against the
  large matmul measured at the start and at the end (the better one). FLOPs per token, matmuls only,
  forward + backward = 3x forward: 6 * (inputs * G * h + h * G * h) per layer (G gate blocks: 1 RNN, 3 GRU, 4 LSTM; the one-hot input
  counted as a dense matmul, as the book computes it) + 6 * h * V for the output layer.
- generate: characters/s generating N characters greedily after a 20-character prompt: ours
  `zoo.generate.generate` at 1,000 and 4,000 (linear in length), the book's `predict_ch8` at 1,000 under
  torch.no_grad() (the book runs it with autograd on; no_grad only helps it).
- evaluate: tokens/s of exact perplexity over the whole corpus with `zoo.evaluate.score` (one stream,
  state carried), against the book's model reading the same text as `score` does (batch 1, the same
  4096-step chunks, no_grad; over a prefix, as the book's scratch loop is slow) and as its training loop
  reads it (its sequential batches 32 x 35, no_grad: 32 streams at once, an easier job, not exact).
- large-batch (default with --device cuda): training tokens/s at batch 1024 over the whole corpus.
- time-to-quality (--time-to-quality): wall-clock seconds, validation included, until our modern recipe's
  validation perplexity first goes below 4.0, capped by --budget seconds per model.

    python scripts/bench_speed.py                               # all eight models: train, generate, evaluate
    python scripts/bench_speed.py --time-to-quality --ttq-models lstm gru --budget 300 --json bench.json
    python scripts/bench_speed.py --device cuda                 # adds the batch-1024 figures
    python scripts/bench_speed.py --smoke --json out.json       # every part in seconds: works, not fast
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch
from torch import nn

# The book's Accumulator calls float() on the loss before detaching it; torch warns once per process.
warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad=True to a scalar")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout: zoo need not be installed
import book_code
from book_code import book_model, book_updater, copy_weights, d2l
from zoo import backends, create_model, kernels
from zoo.data import BOOK_SHA1, DataError, Splits, Tokenizer, load_corpus, timemachine_path
from zoo.evaluate import CHUNK, score, streams_for
from zoo.generate import generate, sampler_for
from zoo.models.base import device_of
from zoo.recipes import recipe_for
from zoo.train import Trainer

MODELS = ["rnn-scratch", "rnn", "gru-scratch", "gru", "lstm-scratch", "lstm", "deep-lstm-scratch", "deep-lstm",
          "lstm-peephole"]
PARTS = ["train", "generate", "evaluate", "large-batch"]
PROMPT = "the time traveller f"     # 20 characters: the novel's first words
QUALITY = 4.0                       # validation perplexity that time-to-quality waits for
NEVER = 10**9                       # epochs / eval_every that the benchmark never reaches
# The targets on CPU: ours / book (training against the book's code of the same kind; sampling 1,000 chars).
# Where torch's own layer is fastest, the book's concise LSTMs run it too: parity is the physics there.
TRAIN_TARGETS = {"rnn-scratch": 2.0, "gru-scratch": 2.0, "lstm-scratch": 2.0, "deep-lstm-scratch": 2.0,
                 "rnn": 1.15, "gru": 1.15, "lstm": 1.0, "deep-lstm": 1.0, "lstm-peephole": 1.0}
# A reader's own cell, which no accelerator runs, raced against the book's model of the same kind.
BOOK_TWIN = {"lstm-peephole": "lstm-scratch"}
GENERATE_TARGET = 10.0


@dataclass
class Settings:
    """Sizes of one benchmark run; `SMOKE` shrinks every part to seconds."""
    hidden: int = 256
    batch_size: int = 32
    num_steps: int = 35
    max_tokens: int = 10_000          # the book's first 10,000 tokens
    reps: int = 15                    # training epochs per side that count
    warmup: int = 2
    gen_lengths: tuple = (1000, 4000)
    gen_reps: int = 5
    eval_tokens: int = -1             # the whole corpus
    eval_exact_tokens: int = 16_384   # the book's model at batch 1 reads this prefix
    eval_reps: int = 3
    large_batch: int = 1024
    large_reps: int = 5
    budget: float = 300.0
    ttq_overrides: dict = field(default_factory=dict)
    ttq_tokens: int = 0               # cut every split to this many tokens (0 = the whole corpus)
    threads: int = 0                  # torch threads (0 = torch's default)
    matmul_large: int = 2048
    matmul_reps: int = 7


SMOKE = Settings(hidden=16, batch_size=4, num_steps=5, max_tokens=2 * 4 * 5 + 5 + 1, reps=2, warmup=0,
                 gen_lengths=(10, 40), gen_reps=1, eval_tokens=300, eval_exact_tokens=100, eval_reps=1,
                 large_batch=64, large_reps=1, budget=0.5, matmul_large=256, matmul_reps=1,
                 ttq_overrides=dict(batch_size=8, num_steps=20, warmup_steps=2, epochs=2), ttq_tokens=400,
                 threads=1)


# ---------------------------------------------------------------------------- timing

def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable, device: torch.device) -> tuple[object, float]:
    """fn()'s result and its wall-clock seconds, with the device's queue drained before and after."""
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - start


def alternate(runs: dict[str, Callable[[], float]], reps: int, warmup: int) -> dict[str, list[float]]:
    """Call each run once per round, the order reversed every other round (ABBA), so that a drift in the
    machine's speed hits every side alike; keep the rates each returns from the last `reps` rounds."""
    rates = {name: [] for name in runs}
    order = list(runs)
    for i in range(warmup + reps):
        for name in order if i % 2 == 0 else order[::-1]:
            rate = runs[name]()
            if i >= warmup:
                rates[name].append(rate)
    return rates


def compare(book: list[float], ours: list[float]) -> dict:
    """Medians of both sides and of the per-round ratios ours / book."""
    ratios = [o / b for b, o in zip(book, ours)]
    return {"book": statistics.median(book), "ours": statistics.median(ours),
            "ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
            "book_samples": book, "ours_samples": ours}


# ---------------------------------------------------------------------------- the machine and the models' FLOPs

def matmul_gflops(m: int, k: int, n: int, device: torch.device, reps: int) -> float:
    """Best GFLOP/s of (m, k) @ (k, n) in float32 over `reps` samples of ~2 GFLOP each: what the device
    does when it has the cores (neighbours' load only ever slows a sample down)."""
    a, b = torch.randn(m, k, device=device), torch.randn(k, n, device=device)
    flops = 2 * m * k * n
    inner = max(1, round(2e9 / flops))

    def run():
        for _ in range(inner):
            a @ b

    run()
    seconds = [timed(run, device)[1] for _ in range(reps)]
    return flops * inner / min(seconds) / 1e9


def flops_per_token(model: nn.Module) -> int:
    """Forward + backward matmul FLOPs per token (see the module docstring for the counting)."""
    c = model.config
    G, h = model.cell.gates, c.num_hiddens
    layers = sum(6 * ((c.vocab_size if l == 0 else h) * G * h + h * G * h) for l in range(c.num_layers))
    return layers + 6 * h * c.vocab_size


def cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
                platform.processor())


def matmul_throughput(device: torch.device, s: Settings) -> dict:
    """GFLOP/s of one LSTM step's matmul (B=32, h=256, 4 gates) and of a large square one."""
    n = 8192 if device.type == "cuda" else s.matmul_large
    return {"step_gflops": matmul_gflops(32, 256, 1024, device, s.matmul_reps),
            "large_gflops": matmul_gflops(n, n, n, device, s.matmul_reps), "large_size": n}


def zoo_revision() -> str:
    """The commit measured, marked when zoo/ has uncommitted changes ("" outside a git checkout)."""
    root = Path(__file__).resolve().parents[1]
    git = lambda *a: subprocess.run(["git", *a], cwd=root, capture_output=True, text=True).stdout.strip()
    try:
        return git("rev-parse", "--short", "HEAD") + (" + local changes" if git("status", "--porcelain", "zoo") else "")
    except OSError:
        return ""


def machine(device: torch.device) -> dict:
    return {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
            "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "d2l": book_code.D2L_VERSION, "zoo": zoo_revision(), "zoo_kernels": kernels.available(wait=True)}


# ---------------------------------------------------------------------------- the parts

class Counting:
    """The book's data iterator, counting the target tokens it hands out."""

    def __init__(self, batches):
        self.batches, self.tokens = batches, 0

    def __iter__(self):
        for X, Y in self.batches:
            self.tokens += Y.numel()
            yield X, Y


def pair(name: str, vocab_size: int, hidden: int, device: torch.device, backend: str = "auto"):
    """Our model and the book's, with the same (our) initial weights; a reader's cell races the book's
    model of its kind (BOOK_TWIN), from the book's own initial weights."""
    torch.manual_seed(0)
    ours = create_model(name, vocab_size=vocab_size, num_hiddens=hidden).to(device).use_backend(backend)
    net = book_model(BOOK_TWIN.get(name, name), vocab_size, hidden, device)
    if name not in BOOK_TWIN:
        copy_weights(ours, net, name)
    return ours, net


def chosen(model, batch_size: int, num_steps: int, train: bool) -> str:
    """The backend(s) that run the model's layers on batches of this size, as `auto` (or --backend) chose."""
    with torch.set_grad_enabled(train):
        X = model.inputs(torch.zeros(num_steps, batch_size, dtype=torch.long, device=device_of(model)))
        names = []
        for index in range(model.config.num_layers):
            names.append(backends.choose(model.layer(index), X, model.backend))
            X = X.new_zeros(num_steps, batch_size, model.config.num_hiddens, dtype=torch.float32)
    return "+".join(dict.fromkeys(names))



def train_speed(name: str, ours, net, book_data, tokenizer: Tokenizer, batch_size: int, s: Settings,
                device: torch.device, reps: int) -> dict:
    """Tokens/s of one training epoch: the book's `train_epoch_ch8` and our Trainer, taking turns; on a GPU
    also our Trainer replaying its step as one CUDA graph (on a copy of the same weights)."""
    recipe = recipe_for("book", name, batch_size=batch_size, num_steps=s.num_steps, train_tokens=0,
                        epochs=NEVER, eval_every=NEVER)
    ids = torch.tensor(book_data.corpus)
    sides = {"ours": ours}
    if device.type == "cuda":
        sides["graph"] = copy.deepcopy(ours)
    trainers = {side: Trainer(model, Splits(ids, ids[:2], ids[:2]), replace(recipe, cuda_graph=side == "graph"),
                              tokenizer, name, device=device) for side, model in sides.items()}
    epochs = {side: trainer.run() for side, trainer in trainers.items()}
    loss, updater = nn.CrossEntropyLoss(), book_updater(net, recipe.lr)   # as d2l.train_ch8 sets them up
    random.seed(0)                                                        # the book's epoch offsets

    def book_epoch():
        batches = Counting(book_data)
        _, seconds = timed(lambda: d2l.train_epoch_ch8(net, batches, loss, updater, device, False), device)
        return batches.tokens / seconds

    def our_epoch(side):
        def run():
            before = trainers[side].step
            _, seconds = timed(lambda: next(epochs[side]), device)
            return (trainers[side].step - before) * batch_size * s.num_steps / seconds
        return run

    rates = alternate({"book": book_epoch, **{side: our_epoch(side) for side in sides}}, reps, s.warmup)
    for run in epochs.values():
        run.close()
    result = {**compare(rates["book"], rates["ours"]), "flops_per_token": flops_per_token(ours),
              "backend": chosen(ours, batch_size, s.num_steps, train=True)}
    if "graph" in rates:
        graphed = compare(rates["book"], rates["graph"])
        result.update(graph=graphed["ours"], ratio_graph=graphed["ratio"], graph_samples=rates["graph"])
    return result


def sample_speed(ours, net, tokenizer: Tokenizer, vocab, s: Settings, device: torch.device) -> dict:
    """Characters/s of greedy generation after PROMPT: ours at two lengths, the book's `predict_ch8`."""
    short, long = s.gen_lengths

    def book_run():
        with torch.no_grad():
            return short / timed(lambda: d2l.predict_ch8(PROMPT, short, net, vocab, device), device)[1]

    def ours_run(n):
        return lambda: n / timed(lambda: generate(ours, tokenizer, PROMPT, n), device)[1]

    rates = alternate({"book": book_run, "ours": ours_run(short), "ours_long": ours_run(long)}, s.gen_reps, 1)
    with torch.no_grad():
        book_text = d2l.predict_ch8(PROMPT, short, net, vocab, device)
    result = compare(rates["book"], rates["ours"])
    sampler = sampler_for(ours, 1, None)
    result.update(ours_long=statistics.median(rates["ours_long"]), lengths=[short, long],
                  same_text=generate(ours, tokenizer, PROMPT, short).texts[0] == book_text,
                  sampler=sampler if sampler != "loop" else f"loop ({chosen(ours, 1, 1, train=False)})")
    return result


@torch.no_grad()
def book_read(net, batch_size: int, batches, device: torch.device) -> float:
    """The book's model over a text, state carried, loss as `train_epoch_ch8` computes it; returns perplexity."""
    loss = nn.CrossEntropyLoss()
    state, total, tokens = net.begin_state(batch_size=batch_size, device=device), 0.0, 0
    for X, Y in batches:
        y = Y.T.reshape(-1).to(device)
        y_hat, state = net(X.to(device), state)
        total += float(loss(y_hat, y.long())) * y.numel()
        tokens += y.numel()
    return math.exp(total / tokens)


def score_chunks(ids: torch.Tensor, chunk: int = CHUNK) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The (X, Y) pieces of batch 1 that `zoo.evaluate.score` reads a text in."""
    pieces = []
    for start in range(0, len(ids) - 1, chunk):
        Y = ids[start + 1:start + chunk + 1]
        pieces.append((ids[start:start + len(Y)][None], Y[None]))
    return pieces


def eval_speed(ours, net, ids: list[int], s: Settings, device: torch.device) -> dict:
    """Tokens/s of exact perplexity (ours) against the book's model reading the same text two ways."""
    text = torch.tensor(ids)
    exact = score_chunks(text[:s.eval_exact_tokens + 1])
    out = {}

    def ours_run():
        out["ours"], seconds = timed(lambda: score(ours, text), device)
        return out["ours"].tokens / seconds

    def book_exact():
        _, seconds = timed(lambda: book_read(net, 1, exact, device), device)
        return sum(Y.numel() for _, Y in exact) / seconds

    def book_batched():
        batches = Counting(d2l.seq_data_iter_sequential(ids, s.batch_size, s.num_steps))
        out["book"], seconds = timed(lambda: book_read(net, s.batch_size, batches, device), device)
        return batches.tokens / seconds

    random.seed(0)
    rates = alternate({"ours": ours_run, "book_exact": book_exact, "book_batched": book_batched}, s.eval_reps, 1)
    result = compare(rates["book_exact"], rates["ours"])
    batched = compare(rates["book_batched"], rates["ours"])
    one_stream = score(ours, text, streams=1).perplexity
    result.update(book_batched=batched["book"], ratio_batched=batched["ratio"], tokens=out["ours"].tokens,
                  exact_tokens=sum(Y.numel() for _, Y in exact), ours_perplexity=out["ours"].perplexity,
                  one_stream_perplexity=one_stream, streams=streams_for(out["ours"].tokens),
                  book_batched_perplexity=out["book"])
    return result


def time_to_quality(name: str, corpus, s: Settings, device: torch.device, graph: bool = False) -> dict:
    """Seconds (validation included) until our modern recipe's validation perplexity goes below QUALITY."""
    recipe = recipe_for("modern", name, time_budget=s.budget, cuda_graph=graph, **s.ttq_overrides)
    torch.manual_seed(recipe.seed)
    model = create_model(name, vocab_size=len(corpus.tokenizer), num_hiddens=s.hidden, dropout=recipe.dropout,
                         weight_drop=recipe.weight_drop)
    trainer = Trainer(model, corpus.splits, recipe, corpus.tokenizer, name, device=device)
    reached, best, speeds, training, step = None, math.inf, [], 0.0, 0
    for log in trainer.run():
        speeds.append(log.tokens_per_sec)
        training += (log.step - step) * recipe.batch_size * recipe.num_steps / log.tokens_per_sec
        step = log.step
        if log.valid_perplexity is not None:
            best = min(best, log.valid_perplexity)
            if log.valid_perplexity < QUALITY:
                reached = log.elapsed
                break
    stop = ("reached" if reached is not None else "budget" if trainer.elapsed >= s.budget
            else "patience" if trainer.stopped_early else "epochs")
    return {"seconds": reached, "stop": stop, "budget": s.budget, "elapsed": trainer.elapsed,
            "training_seconds": training, "best_valid_perplexity": best, "epochs": trainer.epoch,
            "tokens_per_sec": statistics.median(speeds), "graph": graph}


# ---------------------------------------------------------------------------- tables

def k(x: float) -> str:
    """A rate in thousands: 107321 -> '107.3k'."""
    return f"{x / 1e3:.1f}k" if x >= 1e3 else f"{x:.0f}"


def table(title: str, headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows)]
    line = lambda cells: "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in
                                   enumerate(zip(cells, widths)))
    return "\n".join([f"\n{title}", line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def verdict(ratio: float, target: float | None) -> str:
    if target is None:
        return "-"
    return f">={target:g}x " + ("ok" if ratio >= target else f"MISS ({ratio / target:.0%})")


def report(results: dict) -> str:
    m, cpu = results["machine"], results["settings"]["device"] == "cpu"
    out = [f"{m['device']}, {m['torch_threads']} threads, torch {m['torch']}, d2l {m['d2l']}, zoo {m['zoo']}, kernels "
           f"{'on' if m['zoo_kernels'] else 'off'}; load average {m['load_average_start'][0]:.2f} at start, "
           f"{m['load_average_end'][0]:.2f} at end",
           "matmul float32, at start / end: 32x256 @ 256x1024 {:.0f} / {:.0f} GFLOP/s, {}^3 {:.0f} / {:.0f} GFLOP/s "
           "(MFU is against the better of the two)".format(
               m["matmul_start"]["step_gflops"], m["matmul_end"]["step_gflops"], m["matmul_start"]["large_size"],
               m["matmul_start"]["large_gflops"], m["matmul_end"]["large_gflops"])]
    if results["settings"]["smoke"]:
        out.append("SMOKE RUN: tiny sizes, one or two batches; it shows that every part runs, not how fast")
    for part, title in (("train", "training, the book's recipe (tokens/s)"),
                        ("large_batch", f"training at batch {results['settings']['large_batch']} (tokens/s)")):
        if results.get(part):
            graphs = any("graph" in r for r in results[part].values())
            out.append(table(title, ["model", "book", "ours", "ratio", "range", "target", "MFU book", "MFU ours",
                                     "backend"] + (["ours, CUDA graph", "ratio"] if graphs else []), [
                [n + (f" (vs the book's {BOOK_TWIN[n]})" if n in BOOK_TWIN else ""), k(r["book"]), k(r["ours"]),
                 f"{r['ratio']:.2f}x", f"{r['ratio_min']:.2f}-{r['ratio_max']:.2f}",
                 verdict(r["ratio"], TRAIN_TARGETS[n] if cpu and part == "train" else None),
                 f"{r['book_mfu']:.1%}", f"{r['ours_mfu']:.1%}", r["backend"]]
                + ([k(r["graph"]), f"{r['ratio_graph']:.2f}x"] if graphs else []) for n, r in results[part].items()]))
    if results.get("generate"):
        short, long = next(iter(results["generate"].values()))["lengths"]
        out.append(table(f"greedy generation after a {len(PROMPT)}-character prompt (characters/s)",
                         ["model", f"book {short}", f"ours {short}", f"ours {long}", "ratio", "target", "same text",
                          "sampler"], [
            [n, k(r["book"]), k(r["ours"]), k(r["ours_long"]), f"{r['ratio']:.1f}x",
             verdict(r["ratio"], GENERATE_TARGET if cpu else None), "yes" if r["same_text"] else "no", r["sampler"]]
            for n, r in results["generate"].items()]))
    if results.get("evaluate"):
        r0 = next(iter(results["evaluate"].values()))
        out.append(table(f"perplexity over {r0['tokens']:,} tokens (tokens/s): ours in {r0['streams']} warmed-up "
                         f"streams; the book's model at batch 1 over the first {r0['exact_tokens']:,}, and in its "
                         f"batches {results['settings']['batch_size']}x{results['settings']['num_steps']}",
                         ["model", "ours", "book B=1", "ratio", "book batched", "ratio", "ppl ours", "ppl 1 stream",
                          "differs by", "ppl book batched"], [
            [n, k(r["ours"]), k(r["book"]), f"{r['ratio']:.1f}x", k(r["book_batched"]), f"{r['ratio_batched']:.2f}x",
             f"{r['ours_perplexity']:.4f}", f"{r['one_stream_perplexity']:.4f}",
             f"{abs(r['ours_perplexity'] / r['one_stream_perplexity'] - 1):.3%}", f"{r['book_batched_perplexity']:.2f}"]
            for n, r in results["evaluate"].items()]))
    if results.get("time_to_quality"):
        out.append(table(f"time to validation perplexity < {QUALITY} with the modern recipe", [
            "model", "seconds", "best valid ppl", "epochs", "stopped by", "ran s", "train tok/s"], [
            [n, f"{r['seconds']:.0f}" if r["seconds"] is not None else f"not reached within {r['budget']:g} s"
             if r["stop"] == "budget" else f"not reached in {r['epochs']} epochs",
             f"{r['best_valid_perplexity']:.3f}", r["epochs"], r["stop"], f"{r['elapsed']:.0f}",
             k(r["tokens_per_sec"])]
            for n, r in results["time_to_quality"].items()]))
    return "\n".join(out)


# ---------------------------------------------------------------------------- main

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", choices=MODELS, default=MODELS, metavar="NAME",
                   help=f"models to measure (default: all: {' '.join(MODELS)})")
    p.add_argument("--parts", nargs="*", choices=PARTS, default=None,
                   help="parts to run (default: train generate evaluate, plus large-batch on cuda; none: only "
                        "--time-to-quality)")
    p.add_argument("--time-to-quality", action="store_true",
                   help=f"also time our modern recipe to validation perplexity < {QUALITY}")
    p.add_argument("--ttq-models", nargs="+", choices=MODELS, metavar="NAME",
                   help="models for --time-to-quality (default: --models)")
    p.add_argument("--budget", type=float, default=Settings.budget, help="seconds per model for time to quality")
    p.add_argument("--ttq-graph", action="store_true", help="time to quality with the step as one CUDA graph")
    p.add_argument("--reps", type=int, default=Settings.reps, help="training epochs per side that count")
    p.add_argument("--fast", action="store_true", help="fewer warm-ups and repetitions of every part")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--backend", choices=backends.NAMES, default="auto",
                   help="what runs our recurrent layers (default: auto, the fastest here, measured once)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's own choice)")
    p.add_argument("--data", type=Path, help="the book's timemachine.txt (default: $ZOO_DATA or zoo's cache)")
    p.add_argument("--json", type=Path, help="also write every figure (and every sample) here")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, every part, a few seconds: checks it runs")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is available here")
    if device.type not in ("cpu", "cuda"):
        p.error("--device must be cpu or cuda")
    if args.parts is None:
        args.parts = PARTS if args.smoke else PARTS[:3] + (["large-batch"] if device.type == "cuda" else [])
    args.parts = [part for part in PARTS if part in args.parts]   # training first: the others use its weights
    args.time_to_quality |= args.smoke or bool(args.ttq_models) or args.ttq_graph
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device)
    s = SMOKE if args.smoke else replace(Settings(), reps=args.reps, budget=args.budget, threads=args.threads)
    if args.fast:
        s = replace(s, warmup=1, gen_reps=3, eval_reps=2, large_reps=3, eval_exact_tokens=4096)
    if s.threads:
        torch.set_num_threads(s.threads)
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if load > cores - 0.5 and not args.smoke:
        print(f"warning: load average {load:.1f} on {cores} cores: other processes share the CPU, so figures "
              f"are noisy and a multi-threaded op waits for descheduled threads (compare --threads 1)", flush=True)
    path = args.data or timemachine_path()
    if not path.is_file():
        raise DataError(f"no such file: {path}; --data takes the book's timemachine.txt")
    book_code.use_local_corpus(path, BOOK_SHA1)
    kernels.available(wait=True)                      # build or load the C++ kernels before any timing
    results = {"machine": {**machine(device), "load_average_start": os.getloadavg(),
                           "matmul_start": matmul_throughput(device, s)},
               "settings": {**asdict(s), "device": str(device), "models": args.models, "smoke": args.smoke}}
    book_data, vocab = d2l.load_data_time_machine(s.batch_size, s.num_steps, max_tokens=s.max_tokens)
    tokenizer = Tokenizer("book", vocab.idx_to_token)   # the book's vocabulary, in its order
    V = len(vocab)
    whole, _ = d2l.load_corpus_time_machine(s.eval_tokens)
    for name in args.models if args.parts else []:
        ours, net, spent = *pair(name, V, s.hidden, device, args.backend), {}
        for part in (p for p in args.parts if p == "train" or name not in BOOK_TWIN):
            started = time.perf_counter()
            if part == "train":
                result = train_speed(name, ours, net, book_data, tokenizer, s.batch_size, s, device, s.reps)
                if name not in BOOK_TWIN:
                    copy_weights(ours, net, name)     # the trained weights on both sides from here on
            elif part == "generate":
                result = sample_speed(ours, net, tokenizer, vocab, s, device)
            elif part == "evaluate":
                result = eval_speed(ours, net, whole, s, device)
            else:                                     # large-batch: fresh models, the whole corpus
                tokens = s.large_batch * s.num_steps * 2 + s.num_steps + 1 if args.smoke else -1
                large_data, _ = d2l.load_data_time_machine(s.large_batch, s.num_steps, max_tokens=tokens)
                result = train_speed(name, *pair(name, V, s.hidden, device, args.backend), large_data, tokenizer,
                                     s.large_batch, s, device, s.large_reps)
            results.setdefault(part.replace("-", "_"), {})[name] = result
            spent[part] = time.perf_counter() - started
        print(f"{name}: " + ", ".join(f"{part} {seconds:.0f} s" for part, seconds in spent.items()), flush=True)
    if args.time_to_quality:
        corpus = load_corpus(path)
        if s.ttq_tokens:
            parts = corpus.splits.train, corpus.splits.valid, corpus.splits.test
            corpus = replace(corpus, splits=Splits(*(ids[:s.ttq_tokens] for ids in parts)))
        for name in args.ttq_models or args.models:
            results.setdefault("time_to_quality", {})[name] = time_to_quality(name, corpus, s, device,
                                                                             args.ttq_graph)
    m = results["machine"]
    m.update(load_average_end=os.getloadavg(), matmul_end=matmul_throughput(device, s))
    m["peak_gflops"] = max(m["matmul_start"]["large_gflops"], m["matmul_end"]["large_gflops"])
    for part in ("train", "large_batch"):
        for r in results.get(part, {}).values():   # model FLOP utilisation against the best matmul seen
            r.update({f"{side}_mfu": r[side] * r["flops_per_token"] / 1e9 / m["peak_gflops"]
                      for side in ("book", "ours")})
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    try:
        main()
    except DataError as e:   # no corpus here: say where to put it, in one line
        sys.exit(f"bench_speed: {e}")
