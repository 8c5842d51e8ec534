"""scripts/train_all.py end to end on a small text: model folders with cards, REPORT.md and plots; reruns skip
what is done, resume what was interrupted, and go on past a failing model; --dry-run and --push against the
local Hub; --report-only."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest
from huggingface_hub import ModelCard

from conftest import ROOT
from hubserver import HubServer, hub_env
from zoo.checkpoint import load_model
from zoo.report import BY_EPOCH, BY_TIME, REPORT
from zoo.train import STATE_FILE

SCRIPT = ROOT / "scripts" / "train_all.py"
FOLDER_FILES = {"README.md", "config.json", "metrics.json", "model.safetensors"}


def load_script():
    spec = importlib.util.spec_from_file_location("train_all", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


train_all = load_script()


def small_args(small_text, out, *more) -> list[str]:
    return ["--data", str(small_text), "--out", str(out), "--epochs", "1", "--train-tokens", "2000",
            "--hidden", "32", "--device", "cpu", "--ngram-max-order", "5", "--ngram-no-tune", *more]


def run(capsys, args) -> tuple[int, str]:
    code = train_all.main(args)
    return code, capsys.readouterr().out


def files(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, small_text):
    """One run of `--models rnn,ngram` for one epoch; its output and the --out folder."""
    out = tmp_path_factory.mktemp("weights")
    code = train_all.main(small_args(small_text, out, "--models", "rnn,ngram"))
    assert code == 0
    return out


def test_each_model_gets_a_complete_folder_and_a_card(trained):
    for name in ("rnn", "ngram"):
        folder = trained / name
        assert set(files(folder)) == FOLDER_FILES - ({"metrics.json"} if name == "ngram" else set())
        pretrained = load_model(folder)
        card = ModelCard.load(folder / "README.md")
        metrics = pretrained.info["metrics"]
        assert {(r.dataset_split, r.metric_type): r.metric_value for r in card.data.eval_results}[
            ("test", "perplexity")] == round(metrics["test_perplexity"], 4)
        assert "NAMESPACE/rnn-zoo-" + name in card.text and "`small.txt`" in card.text
    rnn = load_model(trained / "rnn")
    assert rnn.model.config.num_hiddens == 32 and rnn.info["recipe"]["epochs"] == 1
    assert rnn.info["recipe"]["train_tokens"] == 2000 and rnn.info["metrics"]["device"] == "cpu"
    history = json.loads((trained / "rnn" / "metrics.json").read_text())["history"]
    assert len(history) == 1
    assert history[0]["valid_perplexity"] == pytest.approx(rnn.info["metrics"]["valid_perplexity"])


def test_report_compares_every_model_with_the_ngram(trained):
    report = (trained / REPORT).read_text()
    rows = [line for line in report.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| model | parameters | train ppl | valid ppl | test ppl | test bits/char | tokens/s")
    assert {row.split(" | ")[0] for row in rows[1:]} == {"| rnn", "| **ngram** (line to beat)"}
    ngram = json.loads((trained / "ngram" / "config.json").read_text())["metrics"]
    assert f"{ngram['test_perplexity']:.3f}" in next(row for row in rows if "ngram" in row)
    assert "networks beat the n-gram's test perplexity" in report
    for plot in (BY_EPOCH, BY_TIME):
        assert f"]({plot})" in report and (trained / plot).read_bytes().startswith(b"\x89PNG")


def test_a_rerun_skips_finished_models_and_changes_nothing(trained, small_text, capsys):
    before = {name: files(trained / name) for name in ("rnn", "ngram")}
    code, out = run(capsys, small_args(small_text, trained, "--models", "rnn,ngram"))
    assert code == 0 and "rnn: done" in out and "ngram: done" in out and "skipped" in out
    assert {name: files(trained / name) for name in ("rnn", "ngram")} == before   # cards rebuilt byte for byte


def test_report_only_rebuilds_cards_and_report(trained, capsys):
    (trained / "rnn" / "README.md").unlink()
    (trained / REPORT).unlink()
    (trained / "gru").mkdir(exist_ok=True)            # an unfinished folder: no card, not in the report
    code, out = run(capsys, ["--out", str(trained), "--report-only", "--models", "rnn,gru"])
    assert code == 0 and "gru: no finished model" in out
    assert (trained / "rnn" / "README.md").is_file() and not (trained / "gru" / "README.md").exists()
    assert "| gru |" not in (trained / REPORT).read_text()


def test_dry_run_shows_repos_files_and_sizes_without_network(trained, tmp_path):
    with HubServer() as hub:
        env = {**os.environ, **hub_env(hub, tmp_path / "cache")}
        out = subprocess.run([sys.executable, str(SCRIPT), "--out", str(trained), "--models", "rnn,ngram,gru",
                              "--push", "--namespace", "me", "--dry-run"], env=env, capture_output=True, text=True,
                             timeout=60)
        assert hub.requests == []
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == (f"{'rnn':20s} done in {trained / 'rnn'} (trained with another epochs, train_tokens), "
                        "skipped (--overwrite retrains)")     # the book recipe asks for 500 epochs on 10,000 tokens
    assert "  push to me/rnn-zoo-rnn" in lines
    size = (trained / "rnn" / "model.safetensors").stat().st_size / 1000
    assert any(line.split()[:3] == ["model.safetensors", f"{size:.1f}", "kB"] for line in lines)
    assert "  push to me/rnn-zoo-gru (after training)" in lines and any(line.startswith("gru ") and "train" in line
                                                                           for line in lines)


def test_push_makes_one_commit_per_model_then_none(trained, small_text, local_hub, capsys):
    code, out = run(capsys, small_args(small_text, trained, "--models", "rnn,ngram", "--push", "--namespace", "ns"))
    assert code == 0 and "rnn: pushed" in out and "ngram: pushed" in out
    assert [len(local_hub.commits(f"ns/rnn-zoo-{name}")) for name in ("rnn", "ngram")] == [2, 2]
    assert local_hub.files("ns/rnn-zoo-rnn")["README.md"] == (trained / "rnn" / "README.md").read_bytes()
    assert b'load("ns/rnn-zoo-rnn")' in local_hub.files("ns/rnn-zoo-rnn")["README.md"]

    code, out = run(capsys, small_args(small_text, trained, "--models", "rnn,ngram", "--push", "--namespace", "ns"))
    assert code == 0 and "rnn: ns/rnn-zoo-rnn unchanged, skipped" in out and "ngram: ns/rnn-zoo-ngram unchanged" in out
    assert [len(local_hub.commits(f"ns/rnn-zoo-{name}")) for name in ("rnn", "ngram")] == [2, 2]


def test_an_interrupted_model_resumes_to_the_same_weights(small_text, tmp_path, monkeypatch, capsys):
    args = ["--models", "rnn", "--epochs", "2", "--checkpoint-every", "0"]
    code, _ = run(capsys, small_args(small_text, tmp_path / "straight", *args))
    assert code == 0

    def interrupted_fit(trainer, out, **_):           # Ctrl-C after the first epoch's checkpoint
        for log in trainer.run():
            if log.end_of_epoch:
                raise KeyboardInterrupt
    monkeypatch.setattr(train_all, "fit", interrupted_fit)
    code, out = run(capsys, small_args(small_text, tmp_path / "cut", *args))
    assert code == 130 and "interrupted during rnn" in out
    assert (tmp_path / "cut" / "rnn" / STATE_FILE).is_file() and not (tmp_path / "cut" / "rnn" / "config.json").exists()

    monkeypatch.undo()
    code, out = run(capsys, small_args(small_text, tmp_path / "cut", *args))
    assert code == 0 and "rnn: resuming from epoch 1 of 2" in out
    resumed, straight = (files(tmp_path / run / "rnn") for run in ("cut", "straight"))
    assert resumed["model.safetensors"] == straight["model.safetensors"]
    assert not (tmp_path / "cut" / "rnn" / STATE_FILE).exists()   # the finished folder holds no checkpoint


def test_a_failing_model_is_one_line_and_the_others_go_on(small_text, tmp_path, capsys):
    (tmp_path / "rnn").mkdir()
    (tmp_path / "rnn" / STATE_FILE).write_bytes(b"\x10\x00")     # a broken checkpoint: resuming it fails
    code, out = run(capsys, small_args(small_text, tmp_path, "--models", "rnn,ngram"))
    assert code == 1
    [failure] = [line for line in out.splitlines() if "FAILED" in line]
    assert failure.startswith("rnn: FAILED: ") and "checkpoint.safetensors is corrupt or truncated" in failure
    assert (tmp_path / "ngram" / "model.safetensors").is_file() and "1 of 2 failed: rnn" in out


def test_a_folder_holding_another_model_is_refused_unless_overwrite(trained, small_text, tmp_path, capsys):
    """A model folder that is no finished run of this script (copied in, no checkpoint, a stale checksum): left as
    it is, one line, the other models go on; --overwrite replaces it."""
    folder = tmp_path / "rnn"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        (folder / name).write_bytes((trained / "rnn" / name).read_bytes())
    before = files(folder)
    code, out = run(capsys, small_args(small_text, tmp_path, "--models", "rnn,ngram"))
    assert code == 1 and f"rnn: FAILED: {folder} holds a model that is not a finished run" in out
    assert "--overwrite replaces it" in out and files(folder) == before
    assert (tmp_path / "ngram" / "model.safetensors").is_file()
    code, out = run(capsys, small_args(small_text, tmp_path, "--models", "rnn", "--overwrite"))
    assert code == 0 and set(files(folder)) == FOLDER_FILES and train_all.is_done(folder)
