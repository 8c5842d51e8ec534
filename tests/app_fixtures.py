"""The app's test setup: small, quickly trained model folders laid out as the bundled weights are, and the
app launched on them.

`make_weights(out, corpus)` writes `out/<name>/` (model.safetensors, config.json, metrics.json) for every
registered network, trained for a few epochs on 3,000 tokens with 32 hidden units, and `out/ngram/` (orders up
to 6, discounts not tuned: `zoo.fit.fit_ngram_run` takes ~25 s on the whole corpus, this well under 1 s).
Run as a script to make a folder for trying the app by hand:

    PYTHONPATH=. python tests/app_fixtures.py /tmp/weights
    RNN_ZOO_WEIGHTS=/tmp/weights python space/app.py
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from zoo import create_model
from zoo.models import BOOK
from zoo.checkpoint import save_model
from zoo.data import Corpus, load_corpus
from zoo.evaluate import score
from zoo.fit import fit
from zoo.models.ngram import fit_ngram
from zoo.recipes import recipe_for
from zoo.train import Trainer

SPACE = Path(__file__).resolve().parents[1] / "space"
CORRUPTED = "deep-lstm-scratch"     # its weights are cut short: its panel must show the error
TINY = dict(epochs=3, train_tokens=3000, batch_size=8, num_steps=20, checkpoint_every=1e9)


def make_weights(out: str | Path, corpus: Corpus, epochs: int = 3) -> Path:
    """Train every registered network tiny (hidden 32) and count the n-gram; one folder per model.

    On one thread: these tiny products gain nothing from more, and threads that wait on each other stall
    badly when other work shares the cores (a minute instead of seconds, seen here)."""
    out, threads = Path(out), torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for name in BOOK:
            if name == "ngram":
                make_ngram(out / name, corpus)
                continue
            model = create_model(name, vocab_size=len(corpus.tokenizer), num_hiddens=32)
            trainer = Trainer(model, corpus.splits, recipe_for("book", name, **{**TINY, "epochs": epochs}),
                              corpus.tokenizer, name)
            fit(trainer, out / name, progress=False, log=None)
    finally:
        torch.set_num_threads(threads)
    return out


def make_ngram(out: Path, corpus: Corpus) -> None:
    """The n-gram folder with the metrics `fit_ngram_run` writes that the app reads."""
    train, valid, test = (ids.long() for ids in (corpus.splits.train, corpus.splits.valid, corpus.splits.test))
    model, _ = fit_ngram(train, valid, len(corpus.tokenizer), range(2, 7), tune=False)
    test = score(model, test)
    metrics = {"train_perplexity": score(model, train).perplexity,
               "valid_perplexity": score(model, valid).perplexity, "test_perplexity": test.perplexity,
               "test_bits_per_token": test.bits_per_token, "order": model.config.order, "parameters": 0}
    save_model(out, "ngram", model, corpus.tokenizer, metrics=metrics)


def corrupt(folder: Path) -> None:
    """Cut a model's weights file in half, as an interrupted download would."""
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_exercises(folder: Path) -> Path:
    """Two exercises' results in smoke mode: one that trains runs (9.1.4), one that measures (9.2.3)."""
    from zoo.exercises import BY_ID, Setup, run
    for id in ("9.1.4", "9.2.3"):
        run(BY_ID[id], Setup(budget=5, smoke=True), folder, log=lambda line: None)
    return folder


def import_app(weights: Path, exercises: Path | None = None):
    """space/app.py imported as a module (it loads its models at import), configured by its env vars: two runs
    at once on the server, so that the limits per visitor are seen apart from the server's."""
    if str(SPACE) not in sys.path:
        sys.path.insert(0, str(SPACE))     # app.py imports its sibling modules, as `python space/app.py` does
    saved = {k: os.environ.get(k) for k in ("RNN_ZOO_WEIGHTS", "RNN_ZOO_TRAIN_RUNS", "RNN_ZOO_EXERCISES")}
    os.environ.update(RNN_ZOO_WEIGHTS=str(weights), RNN_ZOO_TRAIN_RUNS="2")
    if exercises:
        os.environ["RNN_ZOO_EXERCISES"] = str(exercises)
    try:
        spec = importlib.util.spec_from_file_location("rnn_zoo_app", SPACE / "app.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@dataclass
class RunningApp:
    module: object     # the imported space/app.py: .slots, .demo
    url: str


@contextlib.contextmanager
def running_app(weights: Path, exercises: Path | None = None):
    """The app served on a free local port for as long as the context lasts."""
    app = import_app(weights, exercises)
    _, url, _ = app.demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
                                quiet=True, **app.LAUNCH)
    try:
        yield RunningApp(app, url)
    finally:
        app.demo.close()


if __name__ == "__main__":
    print(make_weights(sys.argv[1], load_corpus(sys.argv[2] if len(sys.argv) > 2 else None)))
