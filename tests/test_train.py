"""The shared trainer: it learns, keeps the best weights, stops when told, and resumes exactly."""
import math
import tempfile
from pathlib import Path

import pytest
import torch

from zoo import checkpoint as ckpt
from zoo import create_model
from zoo.evaluate import score
from zoo.fit import fit
from zoo.recipes import recipe_for
from zoo.train import STATE_FILE, Trainer, TrainingError

SMALL = dict(train_tokens=3000, batch_size=8, num_steps=20, checkpoint_every=0)


def make(corpus, name="lstm", recipe="modern", run_dir=None, hidden=24, device="cpu", **overrides):
    r = recipe_for(recipe, name, **{**SMALL, **overrides})
    torch.manual_seed(r.seed)
    model = create_model(name, num_hiddens=hidden, dropout=r.dropout, weight_drop=r.weight_drop)
    return Trainer(model, corpus.splits, r, corpus.tokenizer, name, run_dir, device)


def test_book_recipe_learns(corpus, device):
    trainer = make(corpus, "rnn-scratch", "book", hidden=64, epochs=6, device=device)
    logs = list(trainer.run())
    assert [l.epoch for l in logs] == [1, 2, 3, 4, 5, 6]
    assert logs[-1].train_perplexity < logs[0].train_perplexity - 3
    assert all(l.valid_perplexity and l.tokens_per_sec > 0 for l in logs)


def test_finish_keeps_the_best_validation_weights(corpus, device):
    trainer = make(corpus, epochs=4, ema=0.0, device=device)
    logs = list(trainer.run())
    metrics = trainer.finish()
    best = min(l.valid_perplexity for l in logs)
    assert metrics["valid_perplexity"] == pytest.approx(best, rel=1e-6)
    assert metrics["best_epoch"] == 1 + [l.valid_perplexity for l in logs].index(best)
    assert metrics["test_perplexity"] < 28 and metrics["parameters"] > 0


def test_resume_ends_with_the_same_weights(corpus, tmp_path, device):
    """Interrupt after 2 of 5 epochs, resume from the checkpoint: bit-identical to an uninterrupted run."""
    straight = make(corpus, "deep-lstm-scratch", epochs=5, run_dir=tmp_path / "a", device=device)
    list(straight.run())
    interrupted = make(corpus, "deep-lstm-scratch", epochs=5, run_dir=tmp_path / "b", device=device)
    for log in interrupted.run():
        if log.epoch == 2:
            break                                   # as if killed right after the epoch-2 checkpoint
    resumed = Trainer.resume(tmp_path / "b", corpus.splits, device)
    assert resumed.epoch == 2
    list(resumed.run())
    for (k, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k
    assert [h["valid_perplexity"] for h in resumed.history] == [h["valid_perplexity"] for h in straight.history]


def test_a_kill_in_the_middle_of_a_save_still_resumes_exactly(corpus, tmp_path, monkeypatch):
    """Die right after the first file of the epoch-3 checkpoint lands: what resume reads must still be one epoch's
    (a checkpoint split over two files, tensors then JSON, resumed epoch 2's counters with epoch 3's weights)."""
    straight = make(corpus, epochs=4, run_dir=tmp_path / "a")
    list(straight.run())
    interrupted = make(corpus, epochs=4, run_dir=tmp_path / "b")
    write = ckpt.atomic_write

    def write_then_die_at_epoch_3(path, data):
        write(path, data)
        if interrupted.epoch == 3:
            raise KeyboardInterrupt
    monkeypatch.setattr(ckpt, "atomic_write", write_then_die_at_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        list(interrupted.run())
    monkeypatch.undo()
    resumed = Trainer.resume(tmp_path / "b", corpus.splits)
    list(resumed.run())
    for (k, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k


def test_a_kill_between_the_weights_and_the_config_leaves_a_folder_that_refuses_to_load(corpus, tmp_path,
                                                                                         monkeypatch):
    """Train to epoch 2 and save; resume to 4 and die right after the new weights land: the folder then holds epoch-4
    weights under epoch 2's config.json, which must refuse to load rather than pass for either; a resume repairs it."""
    run = tmp_path / "run"
    fit(make(corpus, epochs=2, run_dir=run), run, progress=False, log=None)
    write = ckpt.atomic_write

    def die_after_the_weights(path, data):
        write(path, data)
        if Path(path).name == ckpt.WEIGHTS:
            raise KeyboardInterrupt
    monkeypatch.setattr(ckpt, "atomic_write", die_after_the_weights)
    with pytest.raises(KeyboardInterrupt):
        fit(Trainer.resume(run, corpus.splits, epochs=4), run, progress=False, log=None)
    monkeypatch.undo()
    with pytest.raises(ckpt.CheckpointError, match="sha256 mismatch"):
        ckpt.load_model(run)
    fit(Trainer.resume(run, corpus.splits, epochs=4), run, progress=False, log=None)
    assert ckpt.load_model(run).info["metrics"]["epochs"] == 4


@pytest.mark.parametrize("how", ["start", "resume"])
def test_temporary_files_left_by_a_kill_are_removed_on_the_next_start_or_resume(corpus, tmp_path, how):
    run = tmp_path / "run"
    if how == "resume":
        list(make(corpus, epochs=1, run_dir=run).run())
    run.mkdir(exist_ok=True)
    left = [Path(tempfile.mkstemp(dir=run, prefix=f".{name}.", suffix=".tmp")[1])   # as atomic_write names them
            for name in (STATE_FILE, ckpt.WEIGHTS, ckpt.CONFIG)]
    mine = run / "notes.tmp"
    mine.write_text("not the trainer's")
    make(corpus, epochs=1, run_dir=run) if how == "start" else Trainer.resume(run, corpus.splits)
    assert not any(path.exists() for path in left) and mine.exists()


def test_a_non_finite_loss_names_the_step(corpus):
    trainer = make(corpus, "rnn", "book", epochs=3)
    with torch.no_grad():
        trainer.model.linear.bias[0] = float("nan")
    with pytest.raises(TrainingError, match=r"loss became nan at step 1 \(epoch 1, batch 1\)"):
        list(trainer.run())


def test_early_stopping(corpus):
    trainer = make(corpus, "gru", lr=1e-12, warmup_steps=0, epochs=50, patience=2, ema=0.0)
    logs = list(trainer.run())
    assert len(logs) == 3 and trainer.stopped_early          # the first validation, then 2 without progress


def test_time_budget_stops_mid_epoch(corpus):
    trainer = make(corpus, "lstm", epochs=10_000, time_budget=1.0)
    logs = list(trainer.run())
    assert logs[-1].end_of_epoch and logs[-1].valid_perplexity is not None
    assert trainer.epoch < 10_000 and 1.0 <= logs[-1].elapsed < 10


def test_log_every_reports_fractional_epochs(corpus):
    trainer = make(corpus, "rnn", "book", epochs=2, log_every=3)
    logs = list(trainer.run())
    partial = [l.epoch for l in logs if not l.end_of_epoch]
    assert partial and all(0 < e < 2 and e != int(e) for e in partial)


def test_random_batching_trains(corpus):
    trainer = make(corpus, "gru-scratch", "book", epochs=3, batching="random")
    logs = list(trainer.run())
    assert logs[-1].train_perplexity < logs[0].train_perplexity


def test_fit_writes_the_model_folder(corpus, tmp_path):
    trainer = make(corpus, "rnn", epochs=2)
    metrics = fit(trainer, tmp_path / "out", progress=False, log=None)
    from zoo.checkpoint import load_json, load_model
    loaded = load_model(tmp_path / "out")
    assert load_json(tmp_path / "out" / "metrics.json")["history"][1]["epoch"] == 2
    assert loaded.info["metrics"]["test_perplexity"] == pytest.approx(metrics["test_perplexity"])
    test = score(loaded.model, corpus.splits.test.long()).perplexity
    assert math.isclose(test, metrics["test_perplexity"], rel_tol=1e-5)


def test_the_moving_average_starts_at_the_first_step_then_lerps(corpus, device):
    trainer = make(corpus, "gru", epochs=1, ema=0.9, device=device)
    weights = []
    original = trainer.optimizer.step

    def step_and_remember():
        original()
        weights.append([p.detach().clone() for p in trainer.model.parameters()])
    trainer.optimizer.step = step_and_remember
    list(trainer.run())
    expected = weights[0]
    for w in weights[1:]:
        expected = [e + 0.1 * (x - e) for e, x in zip(expected, w)]
    for got, want in zip(trainer.averaged.parameters(), expected):
        torch.testing.assert_close(got, want)
    assert trainer.averaged_steps == len(weights) and trainer.eval_model is trainer.averaged


def test_only_an_optimizer_step_that_replays_as_recorded_is_graphed():
    """A CUDA graph replays the optimizer's step as it was recorded. AdamW must read a tensor learning rate
    and keep its step counts on the device (capturable); SGD's update turns a tensor learning rate into a host
    number, so only its float (constant) one can be recorded. Checked without a GPU."""
    from zoo.graphs import GraphedStep
    params = [torch.nn.Parameter(torch.zeros(2))]
    lr = torch.tensor(0.1)
    assert GraphedStep.supports(torch.optim.SGD(params, lr=0.1))
    assert GraphedStep.supports(torch.optim.AdamW(params, lr=lr, capturable=True))
    assert not GraphedStep.supports(torch.optim.AdamW(params, lr=lr))              # its step count on the host
    assert not GraphedStep.supports(torch.optim.AdamW(params, lr=0.1, capturable=True))   # a float lr baked in
    assert not GraphedStep.supports(torch.optim.SGD(params, lr=lr))                # read on the host
    assert not GraphedStep.possible(torch.device("cpu"), 1) and not GraphedStep.possible(torch.device("cuda"), 2)


def test_a_graph_asked_for_on_the_cpu_trains_eagerly(corpus):
    trainer = make(corpus, "lstm", epochs=1, cuda_graph=True)
    assert trainer.run_step == trainer.train_step and not torch.is_tensor(trainer.optimizer.param_groups[0]["lr"])
    assert list(trainer.run())[-1].train_perplexity < 28


def test_gradients_can_flow_back_through_earlier_batches(corpus):
    """bptt_batches=N keeps the graph across N batches (the book's exercise: do not detach the state): the
    first batch's gradient is the detached run's, later ones reach back into the batches before them."""
    runs = {}
    for n in (1, 4):
        trainer = make(corpus, "rnn-scratch", "book", epochs=1, train_tokens=8 * 20 * 4 + 25, bptt_batches=n)
        norms = []
        original = trainer.optimizer.step

        def step_and_record():
            norms.append(float(torch.cat([p.grad.flatten() for p in trainer.model.parameters()]).norm()))
            original()
        trainer.optimizer.step = step_and_record
        list(trainer.run())
        runs[n] = norms
    assert len(runs[1]) == len(runs[4]) == 4
    assert runs[4][0] == pytest.approx(runs[1][0]) and runs[4][1:] != pytest.approx(runs[1][1:])
    with pytest.raises(TrainingError, match="sequential batching"):
        make(corpus, "rnn-scratch", "book", bptt_batches=2, batching="random")
