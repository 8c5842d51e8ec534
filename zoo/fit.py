"""Drive a `Trainer` to the end: progress on screen, final scores, and the model folder.

The folder that comes out is a complete model: `model.safetensors` (the best-validation weights),
`config.json` (architecture, vocabulary, recipe, final metrics) and `metrics.json` (the per-epoch history,
for plots), next to the resumable checkpoint.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from tqdm import tqdm

from zoo import checkpoint as ckpt
from zoo.card import README
from zoo.data import Corpus
from zoo.evaluate import score
from zoo.models.ngram import fit_ngram
from zoo.train import STATE_FILE, Trainer

METRICS = "metrics.json"
# What a model folder holds, config.json first: removing it first uncommits the folder (see zoo.checkpoint).
MODEL_FILES = [ckpt.CONFIG, ckpt.WEIGHTS, METRICS, STATE_FILE, README]


def held(out: str | Path) -> list[str]:
    """The model files already in `out` (a run to resume, or a model that training would replace)."""
    return [name for name in MODEL_FILES if (Path(out) / name).exists()]


def clear(out: str | Path) -> None:
    """Remove the model files of `out`, so that a new run starts from nothing (the old card included)."""
    for name in MODEL_FILES:
        (Path(out) / name).unlink(missing_ok=True)


def to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def fit(trainer: Trainer, out: str | Path | None = None, progress: bool | None = None, log=to_stderr,
        data: dict | None = None) -> dict:
    """Run `trainer` to completion and return its final metrics; write the model folder into `out`.

    `progress=None` shows a tqdm bar on a terminal and prints plain lines otherwise (logs, CI). `data`
    (a `Corpus.source`) is recorded in config.json.
    """
    if trainer.rank != 0:           # under torchrun only rank 0 reports and writes
        progress, log, out = False, None, None
    elif progress is None:
        progress = sys.stderr.isatty()
    bar = tqdm(total=trainer.recipe.epochs, initial=trainer.epoch, unit="epoch", disable=not progress,
               desc=trainer.name, dynamic_ncols=True)
    try:
        for entry in trainer.run():
            if not entry.end_of_epoch:
                continue
            if progress:
                bar.update(1)
                bar.set_postfix_str(f"train {entry.train_perplexity:.2f} valid "
                                    f"{entry.valid_perplexity or float('nan'):.2f} {entry.tokens_per_sec:,.0f} tok/s")
            elif log:
                log(f"{trainer.name}: {entry}")
    finally:
        bar.close()
    metrics = trainer.finish()
    if out is not None:
        save_run(out, trainer, metrics, data)
    return metrics


def save_run(out: str | Path, trainer: Trainer, metrics: dict, data: dict | None = None) -> Path:
    """The model folder: the per-epoch history, the best weights, then the config (with recipe, data, metrics and
    the weights' checksum), written last: the folder's commit point."""
    out = Path(out)
    ckpt.save_json(out / METRICS, {"name": trainer.name, "history": trainer.history, "final": metrics})
    ckpt.save_model(out, trainer.name, trainer.model, trainer.tokenizer,
                    recipe=trainer.recipe.to_dict(), data=data or {}, metrics=metrics)
    return out


def fit_ngram_run(corpus: Corpus, out: str | Path | None = None, max_order: int = 12, tune: bool = True) -> dict:
    """Count the Kneser-Ney n-gram (order 2..max_order chosen on validation, discounts fitted to it when
    `tune`) and score it like the networks."""
    started = time.perf_counter()
    splits = {split: getattr(corpus.splits, split) for split in ("train", "valid", "test")}
    model, by_order = fit_ngram(splits["train"], splits["valid"], len(corpus.tokenizer), range(2, max_order + 1), tune)
    seconds = time.perf_counter() - started
    scores = {split: score(model, ids) for split, ids in splits.items()}
    metrics = {**{f"{split}_perplexity": s.perplexity for split, s in scores.items()},
               "test_bits_per_token": scores["test"].bits_per_token, "test_tokens": scores["test"].tokens,
               "order": model.config.order, "valid_perplexity_by_order": by_order,
               "train_seconds": seconds, "parameters": 0, "device": "cpu"}
    if out is not None:
        ckpt.save_model(out, "ngram", model, corpus.tokenizer, data=corpus.source, metrics=metrics)
    return metrics
