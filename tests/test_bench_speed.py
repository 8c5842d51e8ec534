"""The speed benchmark runs, and what it races is the same computation: the book's code (d2l 0.17.6) and ours
give the same loss curve from the same weights on the same batches, and the same greedy text."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("d2l", reason="the book's code: pip install --no-deps d2l==0.17.6")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import book_code  # noqa: E402
from book_code import book_model, book_updater, copy_weights, d2l  # noqa: E402

from zoo import create_model  # noqa: E402
from zoo.data import BOOK_SHA1, Splits, sequential_batches  # noqa: E402
from zoo.generate import generate  # noqa: E402
from zoo.recipes import recipe_for  # noqa: E402
from zoo.train import Trainer  # noqa: E402

# The book's Accumulator calls float() on the loss before detaching it.
pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad=True:UserWarning")
MODELS = ["rnn-scratch", "rnn", "gru-scratch", "gru", "lstm-scratch", "lstm", "deep-lstm-scratch", "deep-lstm"]


@pytest.fixture(autouse=True)
def one_thread():
    """These tests compare numbers, not speed: one thread spares them the OpenMP barrier waits that make
    every small op cost milliseconds on a 2-core machine that other processes keep busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def book_corpus(timemachine):
    """The book's own token ids and vocabulary, read by d2l from the local corpus."""
    book_code.use_local_corpus(timemachine, BOOK_SHA1)
    return d2l.load_corpus_time_machine(1200)


def test_smoke_run_reports_every_model_and_part(tmp_path):
    import bench_speed
    out = tmp_path / "bench.json"
    run = subprocess.run([sys.executable, "scripts/bench_speed.py", "--smoke", "--json", str(out)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(out.read_text())
    for when in ("matmul_start", "matmul_end"):
        assert results["machine"][when]["step_gflops"] > 0 and results["machine"][when]["large_gflops"] > 0
    for part in ("train", "large_batch", "generate", "evaluate"):
        assert list(results[part]) == [m for m in bench_speed.MODELS if part == "train" or m not in bench_speed.BOOK_TWIN]
        for name, r in results[part].items():
            assert min(r["book"], r["ours"], r["ratio"]) > 0, (part, name)
            assert len(r["book_samples"]) == len(r["ours_samples"]) >= 1
    for name, r in results["train"].items():
        assert r["flops_per_token"] > 0 and r["book_mfu"] > 0 and r["ours_mfu"] > 0
        assert set(r["backend"].split("+")) <= {"step", "torch", "kernel"}
    assert results["train"]["lstm-peephole"]["backend"] == "step"      # a reader's cell runs its own step
    for name, r in results["generate"].items():
        assert r["ours_long"] > 0 and r["sampler"].split()[0] in ("loop", "kernel")
    for name, r in results["evaluate"].items():
        assert r["book_batched"] > 0 and r["tokens"] > 0
        assert 1 < r["ours_perplexity"] < 28 and 1 < r["book_batched_perplexity"] < 28
        assert r["ours_perplexity"] == pytest.approx(r["one_stream_perplexity"], rel=1e-3)
    assert list(results["time_to_quality"]) == bench_speed.MODELS
    for name, r in results["time_to_quality"].items():
        assert r["elapsed"] > 0 and r["epochs"] >= 1 and 1 < r["best_valid_perplexity"] < 40
    for title in ("training, the book's recipe", "greedy generation", "perplexity over", "time to validation"):
        assert title in run.stdout


class Recorder(torch.nn.CrossEntropyLoss):
    """The book's loss, keeping every batch's value."""

    def __init__(self):
        super().__init__()
        self.losses = []

    def forward(self, y_hat, y):
        loss = super().forward(y_hat, y)
        self.losses.append(float(loss.detach()))
        return loss


@pytest.mark.parametrize("name", MODELS)
def test_book_code_and_trainer_give_the_same_loss_curve(name, book_corpus, corpus):
    ids, vocab = book_corpus
    ids = torch.tensor(ids)
    recipe = recipe_for("book", name, batch_size=8, num_steps=10, train_tokens=0, epochs=2, log_every=1)
    torch.manual_seed(0)
    ours = create_model(name, vocab_size=len(vocab), num_hiddens=32)
    net = book_model(name, len(vocab), 32, "cpu")
    copy_weights(ours, net, name)
    trainer = Trainer(ours, Splits(ids, ids[:100], ids[:100]), recipe, corpus.tokenizer, name)
    # ours: the running perplexity of the epoch after every step; the same batches go to the book's loop
    running = {log.step: log.train_perplexity for log in trainer.run()}
    batches = torch.Generator().manual_seed(recipe.seed)     # as the Trainer draws each epoch's offset
    loss, updater, book = Recorder(), book_updater(net, recipe.lr), {}
    for _ in range(recipe.epochs):
        first = len(loss.losses)
        d2l.train_epoch_ch8(net, list(sequential_batches(ids, 8, 10, batches)), loss, updater, "cpu", False)
        for step in range(first + 1, len(loss.losses) + 1):
            book[step] = math.exp(sum(loss.losses[first:step]) / (step - first))
    assert len(book) == trainer.step > 2 * 12
    assert set(running) <= set(book) and len(running) > 2 * 10
    for step, ppl in running.items():
        assert ppl == pytest.approx(book[step], rel=1e-4), step
    assert book[trainer.step] < book[1] - 2                     # it learned: the curve is not flat


@pytest.mark.parametrize("name", MODELS)
def test_the_books_model_predicts_what_zoo_generates(name, book_corpus, corpus):
    """Trained weights in the book's class (d2l.RNNModel, load_state_dict strict, for concise models; the
    book's parameter list for scratch ones): its predict_ch8 writes what our greedy generate writes."""
    _, vocab = book_corpus
    assert corpus.tokenizer.tokens == vocab.idx_to_token      # our default vocabulary is the book's
    recipe = recipe_for("book", name, optimizer="adamw", lr=0.01, train_tokens=10_000, epochs=8, eval_every=100)
    torch.manual_seed(0)
    ours = create_model(name, vocab_size=len(vocab), num_hiddens=48, init="uniform")
    list(Trainer(ours, corpus.splits, recipe, corpus.tokenizer, name).run())
    net = book_model(name, len(vocab), 48, "cpu")
    if name.endswith("scratch"):
        copy_weights(ours, net, name)
    else:
        net.load_state_dict(ours.state_dict(), strict=True)
    with torch.no_grad():
        book_text = d2l.predict_ch8("time traveller", 60, net, vocab, "cpu")
    ours_text = generate(ours, corpus.tokenizer, "time traveller", 60).texts[0]
    assert ours_text == book_text
    assert len(set(book_text[len("time traveller"):])) >= 3   # trained a little: not one character repeated


def test_cuda_is_guarded_and_adds_the_large_batch_part(monkeypatch, capsys):
    import bench_speed
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as exit:
        bench_speed.parse_args(["--device", "cuda"])
    assert exit.value.code == 2 and "no CUDA device" in capsys.readouterr().err
    assert bench_speed.parse_args([]).parts == ["train", "generate", "evaluate"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert bench_speed.parse_args(["--device", "cuda"]).parts == ["train", "generate", "evaluate", "large-batch"]


def test_no_corpus_is_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "ZOO_DATA"}
    env["XDG_CACHE_HOME"] = str(tmp_path)         # an empty cache: nothing verified there
    run = subprocess.run([sys.executable, "scripts/bench_speed.py", "--smoke", "--data", str(tmp_path / "none.txt")],
                         cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 1 and len(run.stderr.strip().splitlines()) == 1
    assert run.stderr.startswith("bench_speed: ") and "none.txt" in run.stderr
