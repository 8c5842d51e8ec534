"""The training runs of the exercises: a registered model, a recipe and what it changes, seeds; run by the
shared trainer, several at a time in separate processes, each remembered so that exercises sharing a run
train it once.
"""
from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import torch

from zoo.data import Corpus, Splits, load_corpus
from zoo.evaluate import score
from zoo.generate import generate
from zoo.models import create_model
from zoo.recipes import recipe_for
from zoo.train import Trainer, TrainingError

PROMPT = "the time traveller"


@dataclass(frozen=True)
class Run:
    """One configuration of an exercise, trained once per seed."""
    label: str                                         # what the tables and plots call it
    model: str                                         # a registered model
    recipe: str = "modern"                             # "modern", or "book" where the exercise is about its setting
    settings: dict = field(default_factory=dict)       # recipe settings it changes
    sizes: dict = field(default_factory=dict)          # model settings it changes (num_hiddens, embedding, ...)
    tokens: str = "book"                               # the tokenizer: book characters or words
    fraction: float = 1.0                              # of the training split it trains on
    mix: float | None = None                           # another author's text added to it, in shares of the split
                                                       # (0: none, but the model is scored on that text too)
    seeds: int = 1

    def key(self, seed: int, setup: "Setup") -> str:
        """What identifies this run's result: everything that changes it (the label does not)."""
        spec = {k: v for k, v in asdict(self).items() if k not in ("label", "seeds", "mix")}
        spec.update(seed=seed, budget=float(setup.budget), smoke=setup.smoke, device=setup.device, data=setup.data_name)
        if self.mix is not None:   # only then: the keys of runs without another text stay what they were
            spec.update(mix=self.mix, mixed=setup.mix_name)
        return hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Setup:
    """Where and how long the runs go: seconds per run, the device, parallel jobs, the corpus, smoke mode."""
    budget: float = 90.0
    device: str = "cpu"
    jobs: int = 1
    data: str | None = None           # a text file; None: the Time Machine
    mix: str | None = None            # another author's text, for the runs that mix it into training
    smoke: bool = False               # a few batches of a tiny model: it runs, not what it finds
    cache: str | None = None          # a folder of run results to reuse

    @property
    def data_name(self) -> str:
        return Path(self.data).name if self.data else "timemachine.txt"

    @property
    def mix_name(self) -> str | None:
        return Path(self.mix).name if self.mix else None


SMOKE_SIZES = {"num_hiddens": 16}
SMOKE_SETTINGS = {"batch_size": 4, "num_steps": 8, "epochs": 2, "warmup_steps": 2, "train_tokens": 400}


@lru_cache(maxsize=4)
def corpus(data: str | None, tokens: str) -> Corpus:
    return load_corpus(data, tokens)


@lru_cache(maxsize=2)
def other_splits(mix: str, data: str | None, tokens: str) -> Splits:
    """Another author's text read with the corpus's tokenizer, once per process."""
    return load_corpus(mix, tokens, tokenizer=corpus(data, tokens).tokenizer).splits


def mixed(run: Run, setup: Setup, data: Corpus) -> tuple[Splits, Splits | None]:
    """The splits a run trains on: `run.fraction` of the corpus's training split, then `run.mix` times its
    length of the other author's (read with the corpus's tokenizer); validation and test stay the corpus's,
    except that a run on the other author alone validates on that author. Also the other text's splits,
    whose test split measures the model on that author."""
    splits, other = data.splits, None
    own = splits.train[:int(len(splits.train) * run.fraction)]
    if run.mix is not None:
        if not setup.mix:
            raise ValueError(f"{run.label!r} mixes in another author's text: give it with --mix FILE")
        other = other_splits(setup.mix, setup.data, run.tokens)
        wanted = int(len(splits.train) * run.mix)
        if len(other.train) < wanted:
            raise ValueError(f"{setup.mix_name} has {len(other.train):,} training tokens; {run.label!r} needs "
                             f"{wanted:,}")
        own = torch.cat([own, other.train[:wanted]])   # one tokenizer: the same compact dtype
        if not run.fraction:   # the other author only: its own validation split chooses the weights kept
            return replace(splits, train=own, valid=other.valid), other
    return replace(splits, train=own), other


def train(run: Run, seed: int, setup: Setup) -> dict:
    """Train one seed of `run`; its numbers, curves and a sample, or how it failed (a diverging loss)."""
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, setup.jobs)))
    data = corpus(setup.data, run.tokens)
    splits, other = mixed(run, setup, data)
    if setup.smoke:
        splits = Splits(splits.train[:2000], splits.valid[:300], splits.test[:300])
        other = other and Splits(other.train[:2000], other.valid[:300], other.test[:300])
    settings = {**run.settings, **(SMOKE_SETTINGS if setup.smoke else {}), "time_budget": setup.budget, "seed": seed}
    recipe = recipe_for(run.recipe, run.model, **settings)
    torch.manual_seed(seed)
    sizes = {**run.sizes, **(SMOKE_SIZES if setup.smoke else {})}
    model = create_model(run.model, vocab_size=len(data.tokenizer), dropout=recipe.dropout,
                         weight_drop=recipe.weight_drop, **sizes)
    trainer = Trainer(model, splits, recipe, data.tokenizer, run.model, device=setup.device)
    started, failed = time.perf_counter(), None
    try:
        for _ in trainer.run():
            pass
    except TrainingError as e:
        failed = str(e)
    seconds = time.perf_counter() - started
    result = {"label": run.label, "model": run.model, "seed": seed, "seconds": seconds, "failed": failed,
              "recipe": recipe.to_dict(), "sizes": sizes, "tokens": run.tokens, "fraction": run.fraction,
              "mix": run.mix, "train_tokens": len(splits.train), "history": trainer.history,
              "parameters": sum(p.numel() for p in model.parameters()),
              "stopped_by": stop_reason(trainer, failed), "epochs": trainer.epoch}
    if failed is None:
        metrics = trainer.finish()
        result.update({k: metrics[k] for k in ("train_perplexity", "valid_perplexity", "test_perplexity",
                                               "test_bits_per_token", "tokens_per_sec", "best_epoch")})
        result["bits_per_char"] = bits_per_char(metrics["test_bits_per_token"], data, splits.test)
        if other is not None:
            result["other_test_perplexity"] = score(model, other.test).perplexity
        result["sample"] = generate(model, data.tokenizer, PROMPT, 80 if setup.smoke else 160,
                                    temperature=0.8, seed=1).texts[0]
    return result


def with_final(result: dict) -> dict:
    """The result with the running training perplexity of its last epoch: the book's measure (the other
    numbers are those of the best-validation weights)."""
    history = result.get("history") or [{}]
    return {**result, "final_train_perplexity": history[-1].get("train_perplexity")}


def stop_reason(trainer: Trainer, failed: str | None) -> str:
    if failed:
        return "diverged"
    r = trainer.recipe
    if trainer.stopped_early:
        return "patience"
    return "epochs" if trainer.epoch >= r.epochs else "budget"


def bits_per_char(bits_per_token: float, data: Corpus, test_ids) -> float:
    """Test bits per character of text, whatever the tokens: words carry their characters and a space."""
    if data.tokenizer.mode != "words":
        return bits_per_token
    characters = len(data.tokenizer.decode(test_ids))
    return bits_per_token * (len(test_ids) - 1) / max(1, characters - 1)


def train_all(runs: list[Run], setup: Setup, log=print) -> dict[str, list[dict]]:
    """Every seed of every run, `setup.jobs` at a time, reusing results kept in `setup.cache`."""
    todo, results = [], {run.label: [] for run in runs}
    cache = Path(setup.cache) if setup.cache else None
    for run in runs:
        for seed in range(run.seeds):
            kept = cache / f"{run.key(seed, setup)}.json" if cache else None
            if kept and kept.is_file():
                results[run.label].append(with_final(json.loads(kept.read_text())))
            else:
                todo.append((run, seed, kept))
    if todo:
        log(f"training {len(todo)} run(s), {setup.jobs} at a time, {setup.budget:g} s each at most")
    # separate processes (spawned: a forked OpenMP runtime can hang) each on its share of the cores
    pool = (ProcessPoolExecutor(setup.jobs, mp_context=multiprocessing.get_context("spawn")) if setup.jobs > 1
            else ThreadPoolExecutor(1))
    with pool:
        futures = [(run, kept, pool.submit(train, run, seed, setup)) for run, seed, kept in todo]
        for run, kept, future in futures:
            result = future.result()
            log(f"  {run.label} seed {result['seed']}: " + (f"valid ppl {result['valid_perplexity']:.3f}" if
                not result["failed"] else f"diverged ({result['failed']})") + f" in {result['seconds']:.0f} s")
            results[run.label].append(with_final(result))
            if kept:
                kept.parent.mkdir(parents=True, exist_ok=True)
                kept.write_text(json.dumps(result))
    return results


# ---------------------------------------------------------------------------- summaries of the seeds

def values(results: list[dict], key: str) -> list[float]:
    return [r[key] for r in results if r.get(key) is not None and math.isfinite(r[key])]


def mean(results: list[dict], key: str) -> float | None:
    v = values(results, key)
    return statistics.fmean(v) if v else None


def spread(results: list[dict], key: str) -> float:
    """Half the range over the seeds (0 for one seed)."""
    v = values(results, key)
    return (max(v) - min(v)) / 2 if len(v) > 1 else 0.0


def cell(results: list[dict], key: str, digits: int = 3) -> str:
    """'3.912 ± 0.012' over the seeds, '-' when no seed finished."""
    m = mean(results, key)
    if m is None:
        return "-"
    s = spread(results, key)
    return number(m, digits) + (f" ± {number(s, digits)}" if len(values(results, key)) > 1 else "")


def number(x: float, digits: int = 3) -> str:
    """3.912, or 4.4e+08 for a perplexity that exploded."""
    return f"{x:.{digits}f}" if abs(x) < 1e5 else f"{x:.2g}"
