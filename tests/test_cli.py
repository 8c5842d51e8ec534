"""The command line end to end, in real subprocesses: list, train, sample, eval, resume after a kill, errors."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from safetensors.torch import load_file

from zoo import list_models
from zoo.train import STATE_FILE, read_state

SMALL = ["--hidden", "32", "--train-tokens", "3000", "--batch-size", "8", "--num-steps", "20"]


def zoo(*args, check=True, timeout=300):
    result = subprocess.run([sys.executable, "-m", "zoo", *map(str, args)], capture_output=True, text=True,
                            timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if check and result.returncode != 0:
        raise AssertionError(f"zoo {' '.join(map(str, args))} failed:\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "rnn"
    result = zoo("train", "rnn", "--out", out, "--epochs", 3, *SMALL)
    return out, result


def test_list_names_every_model():
    out = zoo("list").stdout
    assert [line.split()[0] for line in out.splitlines()] == list_models()


def test_help_is_complete():
    for command in ("train", "sample", "eval"):
        text = zoo(command, "--help").stdout
        assert "usage: zoo " + command in text
    assert all(flag in zoo("train", "--help").stdout for flag in ("--recipe", "--resume", "--lr", "--time-budget"))


def test_train_writes_a_model_folder(trained):
    out, result = trained
    assert {"model.safetensors", "config.json", "metrics.json", "checkpoint.safetensors"} <= {p.name for p in out.iterdir()}
    assert "test ppl" in result.stdout
    assert result.stderr.count("epoch ") == 3                  # plain progress lines when not on a terminal
    assert json.loads((out / "config.json").read_text())["recipe"]["epochs"] == 3


def test_sample_is_seeded(trained):
    out, _ = trained
    a = zoo("sample", out, "--prefix", "time traveller", "--length", 40, "--temperature", 1, "--seed", 3).stdout
    b = zoo("sample", out, "--prefix", "time traveller", "--length", 40, "--temperature", 1, "--seed", 3).stdout
    assert a == b and a.startswith("time traveller") and len(a.strip()) == len("time traveller") + 40
    greedy = zoo("sample", out, "--length", 10, "--num-samples", 2).stdout.splitlines()
    assert len(greedy) == 2 and greedy[0] == greedy[1]


def test_sample_reports_unknown_characters(tmp_path_factory):
    out = tmp_path_factory.mktemp("chars") / "m"
    zoo("train", "gru", "--out", out, "--epochs", 1, "--tokens", "chars", *SMALL)
    result = zoo("sample", out, "--prefix", "Time ✓", "--length", 5)
    assert "not in the vocabulary" in result.stderr and "✓" in result.stderr


def test_eval_prints_json(trained, timemachine, tmp_path):
    out, _ = trained
    text = tmp_path / "t.txt"
    text.write_text("The Time Traveller (for so it will be convenient to speak of him) was expounding.")
    result = json.loads(zoo("eval", out, "--text-file", text, "--json").stdout)
    assert result["model"] == "rnn" and 1 < result["perplexity"] < 28 and result["tokens"] > 60
    assert "bits/char" in zoo("eval", out, "--text-file", text).stdout


@pytest.mark.parametrize("args, message", [
    (["sample", "no/such/folder/here"], "no such folder"),
    (["eval", "{out}", "--text-file", "/nonexistent.txt"], "no such file"),
    (["train", "rnn", "--out", "{out}"], "already holds a run"),
    (["train", "rnn", "--out", "{empty}", "--resume"], "nothing to resume"),
    (["train", "rnn", "--out", "{empty}", "--data", "/nonexistent.txt"], "no such file"),
    (["sample", "{out}", "--prefix", ""], "prefix is empty"),
    (["sample", "{out}", "--top-p", "0"], "top_p"),
])
def test_errors_are_one_line(trained, tmp_path, args, message):
    out, _ = trained
    args = [a.format(out=out, empty=tmp_path / "empty") for a in args]
    result = zoo(*args, check=False)
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr, result.stderr


def test_corrupt_weights_are_one_line(trained, tmp_path):
    out, _ = trained
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((out / "config.json").read_text())
    (broken / "model.safetensors").write_bytes((out / "model.safetensors").read_bytes()[:100])
    result = zoo("sample", broken, check=False)
    assert result.returncode == 1 and "corrupt or truncated" in result.stderr and "Traceback" not in result.stderr


def test_unknown_model_is_a_usage_error(tmp_path):
    result = zoo("train", "transformer", "--out", tmp_path, check=False)
    assert result.returncode == 2 and "invalid choice" in result.stderr


def test_kill_then_resume_ends_with_the_same_weights(tmp_path):
    """SIGKILL a run after its epoch-3 checkpoint; `--resume` finishes with the uninterrupted run's weights.
    The run is long enough (20 epochs) that it is still going when the poll sees epoch 3."""
    args = ["lstm", "--epochs", 20, "--recipe", "modern", "--checkpoint-every", 0, *SMALL]
    zoo("train", *args[:1], "--out", tmp_path / "straight", *args[1:])
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "zoo", "train", *map(str, args[:1]), "--out", str(killed),
                             *map(str, args[1:])], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        if (killed / STATE_FILE).exists() and read_state(killed)["epoch"] >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "model.safetensors").exists()        # it really died mid-run
    zoo("train", "lstm", "--out", killed, "--resume")
    a, b = load_file(tmp_path / "straight" / "model.safetensors"), load_file(killed / "model.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def test_torchrun_two_processes_equal_one(tmp_path):
    """DistributedDataParallel over 2 CPU processes (gloo), each with half of every batch, matches one process."""
    args = ["lstm", "--epochs", 2, "--hidden", 32, "--train-tokens", 3000, "--batch-size", 8, "--num-steps", 20]
    zoo("train", *args, "--out", tmp_path / "one")
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             "-m", "zoo", "train", *map(str, args), "--out", str(tmp_path / "two")],
                            capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("test ppl") == 1                  # rank 0 alone reports
    a, b = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    for k in a:
        assert (a[k] - b[k]).abs().max() < 1e-5, k
