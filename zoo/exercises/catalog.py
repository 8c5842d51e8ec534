"""The exercises: each question of D2L 8.5-9.3 that an experiment can answer, what is run for it, and an
answer written from the numbers alone.

Numbering is the book's (d2l 0.17): section.exercise. Comparisons train with the modern recipe unless the
exercise is about the book's own setting (its SGD recipe on 10,000 characters), and with two seeds where
the differences are small.
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from zoo import backends
from zoo.data import load_corpus
from zoo.exercises.runs import Run, Setup, cell, mean, number, spread
from zoo.gates import gate_activations
from zoo.generate import generate
from zoo.models import create_model
from zoo.train import lm_loss

WEIGHTS = Path(__file__).resolve().parents[2] / "weights"   # the bundled models, in a checkout


@dataclass
class Exercise:
    """A question, the runs that answer it (or a measurement of its own), and how to read the numbers."""
    id: str
    section: str
    question: str
    runs: list[Run] = field(default_factory=list)
    measure: Callable[[Setup], dict] | None = None          # an experiment that is not a training comparison
    answer: Callable[[dict], str] = lambda results: ""
    expectation: str = ""                                   # what the book states, if it states anything
    needs: str = ""                                         # what it needs that is not here (another text)

    @property
    def mixes(self) -> bool:
        """Whether its runs mix another author's text (given with --mix) into training."""
        return any(run.mix is not None for run in self.runs)


# ---------------------------------------------------------------------------- reading comparisons

def ranked(runs: dict[str, list[dict]], key: str = "valid_perplexity") -> list[tuple[str, float, float]]:
    """(label, mean, spread) of the runs that finished, best (lowest) first."""
    rows = [(label, mean(r, key), spread(r, key)) for label, r in runs.items() if mean(r, key) is not None]
    return sorted(rows, key=lambda row: row[1])


def differs(a: tuple, b: tuple) -> bool:
    """Whether two (label, mean, spread) rows differ by more than their seeds' spread (and 0.5%)."""
    return abs(a[1] - b[1]) > max(a[2] + b[2], 0.005 * min(a[1], b[1]))


def listing(rows) -> str:
    return ", ".join(f"`{label}` {number(m)}" + (f" ± {number(s)}" if s else "") for label, m, s in rows)


def comparison(results: dict, key: str = "valid_perplexity", what: str = "validation perplexity") -> str:
    """One sentence: the runs from best to worst, and which differences stand out of the seeds' spread."""
    runs = results["runs"]
    rows = ranked(runs, key)
    failed = [label for label, r in runs.items() if any(x.get("failed") for x in r)]
    text = f"{what.capitalize()}, best first: {listing(rows)}."
    if len(rows) > 1:
        best, *rest = rows
        apart = [row[0] for row in rest if differs(best, row)]
        close = [row[0] for row in rest if not differs(best, row)]
        if apart:
            text += f" `{best[0]}` is measurably better than {', '.join(f'`{a}`' for a in apart)}."
        if close:
            text += (f" {', '.join(f'`{c}`' for c in close)}: within the spread of `{best[0]}`, no measurable "
                     "difference.")
    if failed:
        text += f" Diverged: {', '.join(f'`{f}`' for f in failed)}."
    budget = [label for label, r in runs.items() if any(x.get("stopped_by") == "budget" for x in r)]
    if budget:
        text += (f" Stopped by the time budget, still improving or not: {', '.join(f'`{b}`' for b in budget)} "
                 "(a longer budget may change the ranking).")
    return text


def speed(results: dict, a: str, b: str) -> str:
    ra, rb = (mean(results["runs"][x], "tokens_per_sec") for x in (a, b))
    if not (ra and rb):
        return ""
    return f" Training speed: `{a}` {ra / 1e3:.0f}k tokens/s, `{b}` {rb / 1e3:.0f}k ({ra / rb:.2f}x)."


# ---------------------------------------------------------------------------- measurements of their own

def sampling(setup: Setup) -> dict:
    """8.5.4: text sampled at several sharpness levels from the bundled RNN: how varied and how word-like."""
    if setup.smoke:
        model, tokenizer = create_model("rnn-scratch", num_hiddens=16), load_corpus(setup.data).tokenizer
    else:
        from zoo.checkpoint import load_model
        pretrained = load_model(WEIGHTS / "rnn-scratch")
        model, tokenizer = pretrained.model, pretrained.tokenizer
    words = set(load_corpus(setup.data).tokenizer.decode(load_corpus(setup.data).splits.train).split())
    length, samples = (60, 2) if setup.smoke else (400, 5)
    rows = {}
    for alpha in (math.inf, 4.0, 2.0, 1.25, 1.0, 0.67):
        temperature = 0.0 if alpha == math.inf else 1 / alpha
        texts = [generate(model, tokenizer, "the time traveller", length, temperature=temperature,
                          seed=seed).texts[0] for seed in range(1, samples + 1)]
        grams = [t[i:i + 4] for t in texts for i in range(len(t) - 3)]
        generated = [w for t in texts for w in t.split()[3:]]
        rows[f"{alpha:g}"] = {"temperature": temperature, "distinct_4grams": len(set(grams)) / len(grams),
                              "book_words": sum(w in words for w in generated) / max(1, len(generated)),
                              "sample": texts[0]}
    return {"rows": rows}


def copy_task(setup: Setup) -> dict:
    """9.1.1: a GRU learns to repeat the first token of every sequence; its gates, step by step."""
    torch.manual_seed(0)
    V, T, B, h = 8, 12, 64, (8 if setup.smoke else 32)
    steps = 20 if setup.smoke else 1500
    model = create_model("gru-scratch", vocab_size=V, num_hiddens=h, init="uniform")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    started = time.perf_counter()
    for _ in range(steps):
        X = torch.randint(V, (B, T))
        loss = lm_loss(model(X)[0], X[:, :1].expand(B, T))     # every step's target: the first token
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    X = torch.randint(V, (200, T))
    with torch.no_grad():
        accuracy = float((model(X)[0].argmax(-1) == X[:, :1]).float()[:, 1:].mean())
    gates = [gate_activations(model, x) for x in X[:50]]          # {gate: (1, T, h)} per sequence
    by_step = {name: [statistics.fmean(float(g[name][0, t].mean()) for g in gates) for t in range(T)]
               for name in ("reset", "update")}
    Z = torch.stack([g["update"][0] for g in gates]).mean(0)       # (T, h): each unit's update gate per step
    taking, keeping = Z[0] < 0.1, Z[1:].mean(0) > 0.9              # per unit: reads x_t' / keeps its state after
    return {"accuracy": accuracy, "gates_by_step": by_step, "steps": steps, "seconds": time.perf_counter() - started,
            "vocab": V, "length": T, "hidden": h, "units_taking": float(taking.float().mean()),
            "units_keeping": float(keeping.float().mean()), "units_both": float((taking & keeping).float().mean())}


def cost(setup: Setup) -> dict:
    """9.2.3: parameters, FLOPs and measured tokens/s of an RNN, a GRU and an LSTM layer at one hidden size."""
    h, V, B, T = (16, 28, 4, 8) if setup.smoke else (256, 28, 32, 35)
    rows = {}
    for name in ("rnn-scratch", "gru-scratch", "lstm-scratch"):
        model = create_model(name, vocab_size=V, num_hiddens=h).to(setup.device)
        layer, G = model.layer(0), model.cell.gates
        X, step = torch.randint(V, (T, B), device=setup.device), torch.randint(V, (1, 1), device=setup.device)
        row = {"gates": G, "parameters": sum(p.numel() for p in model.cells[0].parameters()),
               "flops_per_token": 2 * (V + h) * G * h}
        for what, inputs, grad in (("train", X, True), ("infer", step, False)):
            state = model.layer_states(model.init_state(inputs.shape[1]))[0]
            for backend in backends.candidates(layer, inputs):
                def once():
                    with torch.set_grad_enabled(grad):
                        Hs, _ = backends.RUNNERS[backend](layer, inputs, state)
                        if grad:
                            Hs.sum().backward()
                seconds = backends.timed(once, torch.device(setup.device))
                row[f"{what}_{backend}"] = inputs.numel() / seconds
        rows[name] = row
    return {"rows": rows, "sizes": {"hidden": h, "batch": B, "steps": T}}


# ---------------------------------------------------------------------------- answers of their own

def sampling_answer(results: dict) -> str:
    rows = results["measured"]["rows"]
    greedy, plain, sharp, flat = rows["inf"], rows["1"], rows["2"], rows["0.67"]
    text = (f"Greedy decoding (alpha = infinity): {greedy['distinct_4grams']:.0%} of its 4-grams distinct, "
            f"{greedy['book_words']:.0%} of its words are the book's. Sampling from P (alpha = 1): "
            f"{plain['distinct_4grams']:.0%} and {plain['book_words']:.0%}. Sharpened, alpha = 2 (temperature 0.5): "
            f"{sharp['distinct_4grams']:.0%} and {sharp['book_words']:.0%}. Flattened, alpha = 0.67: "
            f"{flat['distinct_4grams']:.0%} and {flat['book_words']:.0%}.")
    if sharp["book_words"] > plain["book_words"] and sharp["distinct_4grams"] > greedy["distinct_4grams"]:
        text += " Sharpening buys real words at the cost of variety, without falling into greedy's loops."
    return text


def copy_answer(results: dict) -> str:
    m = results["measured"]
    z, r = m["gates_by_step"]["update"], m["gates_by_step"]["reset"]
    later = lambda g: statistics.fmean(g[1:])
    return (f"Trained to repeat the first token, the GRU gets {m['accuracy']:.0%} of the later steps right. Averaged "
            f"over its {m['hidden']} units, the update gate Z is {z[0]:.2f} at t' = 0 and {later(z):.2f} afterwards; "
            f"the reset gate R {r[0]:.2f} at t' and {later(r):.2f} afterwards. Unit by unit, "
            f"{m['units_both']:.0%} of the units do exactly what the analytic answer asks (Z < 0.1 at t', taking "
            f"the candidate, which reads the input; Z > 0.9 after it, keeping the state); "
            f"{m['units_taking']:.0%} take the input at t' and {m['units_keeping']:.0%} keep their state after it. "
            "R is free in that answer: the state before t' holds nothing, and after it the candidate is ignored.")


def cost_answer(results: dict) -> str:
    rows = results["measured"]["rows"]
    rnn, gru, lstm = (rows[n] for n in ("rnn-scratch", "gru-scratch", "lstm-scratch"))

    def fastest(row, what):
        return max(v for k, v in row.items() if k.startswith(what + "_"))
    train, infer = ([fastest(row, what) / 1e3 for row in (rnn, gru, lstm)] for what in ("train", "infer"))
    return (f"Per layer, an RNN has 1 gate block, a GRU 3 and an LSTM 4: {rnn['parameters']:,}, {gru['parameters']:,} "
            f"and {lstm['parameters']:,} parameters, and FLOPs in the same 1 : 3 : 4 ratio. Measured training "
            f"throughput (the fastest backend here) is {train[0]:.0f}k, {train[1]:.0f}k and {train[2]:.0f}k "
            f"tokens/s; one generation step runs at {infer[0]:.1f}k, {infer[1]:.1f}k and {infer[2]:.1f}k steps/s: "
            f"the LSTM costs {train[0] / train[2]:.1f}x the RNN's time to train and {infer[0] / infer[2]:.1f}x to "
            f"generate, against 4x its FLOPs.")


# ---------------------------------------------------------------------------- the catalogue

RNN = dict(model="rnn-scratch")
BOOKS_MEASURE = ("final_train_perplexity", "training perplexity at the last epoch (the book's measure)")
BOOK_RNN = dict(model="rnn-scratch", recipe="book")
EPOCH = 8   # batches of the book's epoch: 10,000 characters in batches of 32 x 35

EXERCISES = [
    Exercise("8.5.2", "8.5 RNN from scratch",
             "Tune the hyperparameters, and replace the one-hot inputs by a learned embedding: better or worse?",
             [Run("one-hot (the book)", **RNN, seeds=2), Run("embedding 32", **RNN, sizes={"embedding": 32}, seeds=2),
              Run("hidden 512", **RNN, sizes={"num_hiddens": 512}),
              Run("128 steps", **RNN, settings={"num_steps": 128})],
             answer=comparison),
    Exercise("8.5.4", "8.5 RNN from scratch",
             "Sample instead of taking the argmax, and sharpen the distribution (P^alpha, alpha > 1): what happens "
             "to the text?", measure=sampling, answer=sampling_answer),
    Exercise("8.5.5", "8.5 RNN from scratch", "Train without gradient clipping: what happens?",
             [Run("clipping 1 (the book)", **BOOK_RNN, seeds=2), Run("no clipping", **BOOK_RNN, settings={"clip": 0},
                                                                    seeds=2)],
             answer=lambda r: comparison(r, *BOOKS_MEASURE)),
    Exercise("8.5.6", "8.5 RNN from scratch",
             "Sequential partitioning without detaching the state between batches: running time and perplexity?",
             [Run("detached (the book)", **BOOK_RNN, seeds=2),
              Run("not detached", **BOOK_RNN, settings={"bptt_batches": EPOCH}, seeds=2)],
             answer=lambda r: comparison(r, *BOOKS_MEASURE) + speed(r, "not detached", "detached (the book)")),
    Exercise("8.5.7", "8.5 RNN from scratch", "Replace tanh by ReLU: does it still need gradient clipping?",
             [Run("tanh (the book)", **BOOK_RNN), Run("ReLU", model="rnn-relu", recipe="book"),
              Run("tanh, no clipping", **BOOK_RNN, settings={"clip": 0}),
              Run("ReLU, no clipping", model="rnn-relu", recipe="book", settings={"clip": 0})],
             answer=lambda r: comparison(r, *BOOKS_MEASURE)),
    Exercise("8.6.1", "8.6 RNN, concise", "Can you make the RNN overfit with the high-level API?",
             [Run("regularised (modern)", model="rnn"),
              Run("no regularisation, 10,000 characters", model="rnn", sizes={"num_hiddens": 512},
                  settings={"dropout": 0.0, "weight_drop": 0.0, "weight_decay": 0.0, "ema": 0.0, "patience": 0,
                            "train_tokens": 10_000, "epochs": 300})],
             answer=lambda r: overfit_answer(r)),
    Exercise("8.6.2", "8.6 RNN, concise", "More hidden layers for the RNN: can you make it work?",
             [Run("1 layer", model="rnn"), Run("2 layers", model="rnn", sizes={"num_layers": 2}),
              Run("3 layers", model="rnn", sizes={"num_layers": 3})],
             answer=comparison, expectation="Deep RNNs need careful tuning (learning rate, clipping) to converge."),
    Exercise("9.1.1", "9.1 GRU",
             "Only the input at t' should predict the output at t > t': what are the best reset and update gates?",
             measure=copy_task, answer=copy_answer,
             expectation="Reset gates capture short-term dependencies, update gates long-term ones."),
    Exercise("9.1.3", "9.1 GRU", "RNN against GRU: running time, perplexity, text.",
             [Run("RNN", **RNN, seeds=2), Run("GRU", model="gru-scratch", seeds=2)],
             answer=lambda r: comparison(r) + speed(r, "RNN", "GRU")),
    Exercise("9.1.4", "9.1 GRU", "Only a reset gate, or only an update gate: what happens?",
             [Run("GRU", model="gru-scratch", seeds=2), Run("reset gate only", model="gru-reset-only", seeds=2),
              Run("update gate only", model="gru-update-only", seeds=2)],
             answer=comparison,
             expectation="Reset gates capture short-term dependencies, update gates long-term ones."),
    Exercise("9.2.2", "9.2 LSTM", "Words instead of characters (the word tokenizer): what does the model learn?",
             [Run("characters", model="lstm"), Run("words", model="lstm", tokens="words")],
             answer=lambda r: comparison(r, "bits_per_char", "test bits per character of text")),
    Exercise("9.2.3", "9.2 LSTM",
             "The computational cost of an RNN, a GRU and an LSTM at one hidden size, for training and inference.",
             measure=cost, answer=cost_answer),
    Exercise("9.2.4", "9.2 LSTM", "Why H = O * tanh(C) when C~ is already in (-1, 1)? Train H = O * C and see.",
             [Run("H = O tanh(C) (the book)", model="lstm-scratch", seeds=2),
              Run("H = O C", model="lstm-no-output-tanh", seeds=2)],
             answer=comparison),
    Exercise("9.2.v", "9.2 LSTM",
             "The classic variants the exercises point to: no forget gate, coupled input and forget gates, "
             "peephole connections.",
             [Run("LSTM (the book)", model="lstm-scratch", seeds=2),
              Run("no forget gate", model="lstm-no-forget", seeds=2),
              Run("coupled gates", model="lstm-coupled", seeds=2), Run("peepholes", model="lstm-peephole", seeds=2)],
             answer=comparison),
    Exercise("9.3.1", "9.3 Deep RNN", "A two-layer RNN from scratch.",
             [Run("1 layer", **RNN, seeds=2), Run("2 layers", model="deep-rnn-scratch", seeds=2)],
             answer=lambda r: comparison(r) + speed(r, "2 layers", "1 layer"),
             expectation="Deep RNNs need careful tuning (learning rate, clipping) to converge."),
    Exercise("9.3.2", "9.3 Deep RNN", "GRU instead of LSTM in the deep model: accuracy and training speed.",
             [Run("deep LSTM", model="deep-lstm-scratch", seeds=2), Run("deep GRU", model="deep-gru-scratch", seeds=2)],
             answer=lambda r: comparison(r) + speed(r, "deep GRU", "deep LSTM")),
    Exercise("9.3.3", "9.3 Deep RNN", "How low can perplexity go with more training data?",
             [Run(f"{share:.0%} of the book", model="lstm", fraction=share) for share in (0.25, 0.5, 1.0)],
             answer=lambda r: data_answer(r),
             needs="More books go in with --data (a text file); here, shares of the one book show the trend."),
    Exercise("9.3.4", "9.3 Deep RNN", "Mixing authors: a good idea? What could go wrong?",
             [Run("the Time Machine", model="lstm", mix=0.0, seeds=2),
              Run("the Time Machine + as much of the other author", model="lstm", mix=1.0, seeds=2),
              Run("the other author only", model="lstm", fraction=0.0, mix=1.0, seeds=2)],
             answer=lambda r: mixing_answer(r),
             needs="another author's text, given with --mix FILE; the answer key mixed in Genesis to Numbers of the "
                   "King James Bible (Debian's bible-kjv: `bible -l1000 gen1:1-num36:13`, headings and verse "
                   "numbers removed). Validation, which picks the weights kept, is the Time Machine's, except for the run "
                   "on the other author alone, which validates on that author."),
]
BY_ID = {e.id: e for e in EXERCISES}


def overfit_answer(results: dict) -> str:
    runs = results["runs"]
    free, reg = runs["no regularisation, 10,000 characters"], runs["regularised (modern)"]
    train, valid = mean(free, "train_perplexity"), mean(free, "valid_perplexity")
    if train is None or valid is None:
        return "The unregularised run did not finish."
    return (("Yes" if valid > 1.5 * train else "Not within the budget") + f": with no dropout, no weight decay and "
            f"the book's 10,000 characters, training perplexity goes to {cell(free, 'train_perplexity')} while "
            f"validation stays at {cell(free, 'valid_perplexity')} (its best, at epoch "
            f"{mean(free, 'best_epoch'):.0f}); "
            f"the regularised model on the whole book: {cell(reg, 'train_perplexity')} on training, "
            f"{cell(reg, 'valid_perplexity')} on validation.")


def data_answer(results: dict) -> str:
    rows = sorted((run[0]["fraction"], mean(run, "test_perplexity")) for run in results["runs"].values()
                  if mean(run, "test_perplexity"))
    text = "Test perplexity by the share of the book trained on: " + "; ".join(
        f"{share:.0%}: {ppl:.3f}" for share, ppl in rows) + "."
    gains = [a[1] / b[1] for a, b in zip(rows, rows[1:])]
    if gains:
        text += (" Each doubling of the data divided it by " + ", ".join(f"{g:.3f}" for g in gains) + "; "
                 + ("the gains shrink, but more text still helps." if all(g > 1 for g in gains) and gains[-1] < gains[0]
                    else "more text helps at every step." if all(g > 1 for g in gains)
                    else "not every doubling helped."))
    return text


def mixing_answer(results: dict) -> str:
    """Each model on both authors' test text, what mixing changed, and a sample of the mixed model."""
    runs = results["runs"]
    own, both, other = (runs[label] for label in ("the Time Machine", "the Time Machine + as much of the other author",
                                                  "the other author only"))
    tm = [mean(r, "test_perplexity") for r in (own, both, other)]
    foreign = [mean(r, "other_test_perplexity") for r in (own, both, other)]
    if None in tm + foreign:
        return "Not every run finished."
    cost, versus = tm[1] / tm[0] - 1, foreign[1] / foreign[2] - 1
    worse = sorted([tm[2] / tm[0], foreign[0] / foreign[2]])
    sample = next((r["sample"] for r in both if r.get("sample")), "")[:110]
    return (f"Test perplexity on the Time Machine: trained on it alone {cell(own, 'test_perplexity')}, on it and as "
            f"much of the other author {cell(both, 'test_perplexity')}, on the other author only "
            f"{cell(other, 'test_perplexity')}; on the other author's test text: {cell(own, 'other_test_perplexity')}, "
            f"{cell(both, 'other_test_perplexity')} and {cell(other, 'other_test_perplexity')}. In the same "
            f"{results['setup']['budget']:g} s, mixing {'cost' if cost > 0 else 'gained'} {abs(cost):.1%} on the Time "
            f"Machine, and on the other author the mixed model is "
            + ("as good as" if abs(versus) < 0.005 else f"{abs(versus):.1%} {'worse' if versus > 0 else 'better'} than")
            + f" that author's own; a model of one author reads the other "
            f"{worse[0]:.1f}-{worse[1]:.1f}x worse. What can go wrong: the time is shared, so each text gets fewer "
            f"passes (the epochs column), and the samples mix the styles: \"{sample}...\"")


def agreement(exercise: Exercise, results: dict) -> str:
    """Whether the measurements agree with what the book states, where it states something."""
    if not exercise.expectation:
        return ""
    runs = results.get("runs", {})
    if exercise.id == "9.1.4":
        rows = dict((label, m) for label, m, _ in ranked(runs))
        if {"reset gate only", "update gate only"} <= rows.keys():
            without_z, without_r = rows["reset gate only"], rows["update gate only"]
            verdict = ("agree: removing the update gate costs more than removing the reset gate"
                       if without_z > without_r else "do not bear it out: removing the reset gate costs more")
            return (f"The measurements {verdict} (validation {without_z:.3f} without the update gate, "
                    f"{without_r:.3f} without the reset gate).")
    if exercise.id == "9.1.1":
        z = results["measured"]["gates_by_step"]["update"]
        after = statistics.fmean(z[1:])
        rises = z[0] < after
        return (f"The update gate is {'lower' if rises else 'not lower'} at t' ({z[0]:.2f}) than after it "
                f"({after:.2f}): " + ("the long-term carrying is the update gate's, as the book "
                "says." if rises else "these measurements do not show the update gate carrying the token."))
    if exercise.id in ("8.6.2", "9.3.1"):
        rows = ranked(runs)
        if rows:
            deeper_better = rows[0][0] != ("1 layer")
            return ("With the recipe tuned for one layer, " + ("the deeper model does better here, so at this depth "
                    "the default recipe was enough." if deeper_better else "the deeper models do not do better: "
                    "they need their own tuning, as the book says."))
    return ""


def describe(exercise: Exercise) -> dict:
    """What an exercise runs, as data (for its JSON)."""
    return {"spec": [{"label": r.label, "model": r.model, "recipe": r.recipe, "settings": r.settings,
                      "sizes": r.sizes, "tokens": r.tokens, "fraction": r.fraction, "mix": r.mix, "seeds": r.seeds}
                     for r in exercise.runs]}

