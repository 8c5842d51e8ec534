"""The command line end to end, in real subprocesses: list, train, sample, eval, resume after a kill, errors."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from zoo import cli, list_models
from zoo.checkpoint import load_model, save_model
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
    (["train", "rnn", "--out", "{out}"], "already holds a model or a run"),
    (["train", "rnn", "--out", "{empty}", "--resume"], "nothing to resume"),
    (["train", "rnn", "--out", "{empty}", "--data", "/nonexistent.txt"], "no such file"),
    (["sample", "{out}", "--prefix", ""], "prefix is empty"),
    (["train", "lstm", "--out", "{empty}", "--hidden", "8000", "--layers", "16"], "the model asked for: the model "
                                                                                 "would take"),
    (["train", "rnn", "--out", "{empty}", "--lr", "nan"], "lr must be a finite number >= 0, not nan"),
    (["train", "rnn", "--out", "{out}", "--resume", "--overwrite"], "choose one"),
    (["eval", "{out}", "--text-file", "/dev/zero"], "/dev/zero is not a regular file"),
    (["eval", "{out}", "--text-file", "{one_char}"], "fewer than two tokens"),
])
def test_errors_are_one_line(trained, tmp_path, args, message):
    out, _ = trained
    (tmp_path / "one.txt").write_text("a")
    args = [a.format(out=out, empty=tmp_path / "empty", one_char=tmp_path / "one.txt") for a in args]
    result = zoo(*args, check=False)
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr, result.stderr


# list 5 of issue 13: options out of range, each refused in one line that names the range (in-process: argparse)
@pytest.mark.parametrize("args, message", [
    (["sample", "m", "--top-p", "0"], "--top-p: '0' is not a finite number in (0, 1]"),
    (["sample", "m", "--temperature", "nan"], "--temperature: 'nan' is not a finite number >= 0"),
    (["sample", "m", "--temperature", "inf"], "--temperature: 'inf' is not a finite number >= 0"),
    (["sample", "m", "--num-samples", "0"], "--num-samples: '0' is not a whole number from 1 to 100"),
    (["sample", "m", "--num-samples", "-3"], "--num-samples: '-3' is not a whole number from 1 to 100"),
    (["sample", "m", "--num-samples", "1000000"], "--num-samples: '1000000' is not a whole number from 1 to 100"),
    (["sample", "m", "--top-k", "99999999999999999999"], "--top-k: '99999999999999999999' is not a whole number"),
    (["sample", "m", "--seed", str(10**23)], f"--seed: '{10**23}' is not a whole number from 0 to 18,446,744,"),
    (["sample", "m", "--length", "-1"], "--length: '-1' is not a whole number from 0 to 100,000"),
    (["train", "rnn", "--out", "o", "--hidden", "100000"], "--hidden: '100000' is not a whole number from 1 to 8,192"),
    (["train", "rnn", "--out", "o", "--layers", "0"], "--layers: '0' is not a whole number from 1 to 16"),
    (["train", "transformer", "--out", "o"], "invalid choice: 'transformer'"),
])
def test_options_out_of_range_are_one_line(capsys, args, message):
    with pytest.raises(SystemExit) as exit:
        cli.main(args)
    err = capsys.readouterr().err
    assert exit.value.code == 2 and len(err.strip().splitlines()) == 1 and message in err, err


def test_recipe_settings_out_of_range_are_one_line(tmp_path, capsys):
    for flag, value, message in [("--seed", str(10**23), "seed must be a whole number from 0 to 2**63 - 1"),
                                 ("--eval-every", "0", "eval_every >= 1"), ("--clip", "-1", "clip must be a finite")]:
        with pytest.raises(SystemExit) as exit:
            cli.main(["train", "rnn", "--out", str(tmp_path), flag, value])
        assert message in exit.value.code and "\n" not in exit.value.code   # what the interpreter prints


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


def copy_of(folder, to):
    to.mkdir()
    for path in folder.iterdir():
        (to / path.name).write_bytes(path.read_bytes())
    return to


@pytest.mark.parametrize("change, message", [
    (lambda info: info.pop("name"), "names no model"),
    (lambda info: info["tokenizer"]["tokens"].__setitem__(5, 42), "bad tokenizer: token 5 is 42, not a string"),
    (lambda info: info["model"].update(num_hiddens=100_000), "num_hiddens 100,000 is beyond the bound of 8,192"),
])
def test_a_bad_config_is_one_line(trained, tmp_path, change, message):
    folder = copy_of(trained[0], tmp_path / "m")
    info = json.loads((folder / "config.json").read_text())
    change(info)
    (folder / "config.json").write_text(json.dumps(info))
    result = zoo("sample", folder, check=False)
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert message in result.stderr and "Traceback" not in result.stderr


# Runs a command and prints its exit status and peak RSS (kB). A child's ru_maxrss starts at its parent's RSS
# (Linux carries the high-water mark across fork and exec), so the command runs under this small launcher rather
# than straight from pytest, whose RSS is that of everything the suite has loaded.
PEAK_RSS = ("import os, subprocess, sys; p = subprocess.Popen(sys.argv[1:]); _, status, usage = os.wait4(p.pid, 0); "
            "print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)")


def test_a_config_the_header_contradicts_is_refused_before_the_model_is_built(trained, tmp_path):
    """A config asking for 8,000 hidden units over weights of 32: refused from the safetensors header, so the
    ~260 MB model is never allocated (the process's peak RSS stays that of importing torch, ~250 MB)."""
    folder = copy_of(trained[0], tmp_path / "m")
    info = json.loads((folder / "config.json").read_text())
    info["model"]["num_hiddens"] = 8000
    (folder / "config.json").write_text(json.dumps(info))
    out = subprocess.run([sys.executable, "-c", PEAK_RSS, sys.executable, "-m", "zoo", "sample", str(folder)],
                         capture_output=True, text=True, timeout=120)
    status, peak_kb = map(int, out.stdout.split())
    assert status == 1 and "config needs (8000, 28)" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert peak_kb < 400_000, f"peak RSS {peak_kb} kB"


def test_book_mode_names_what_the_prefix_loses(trained):
    result = zoo("sample", trained[0], "--prefix", "time 🦎 traveller", "--length", 5)
    assert result.stderr.strip() == "note: '🦎' not in the vocabulary, read as a space"
    assert result.stdout.startswith("time traveller")


def test_top_k_beyond_the_vocabulary_is_all_of_it(trained):
    out = zoo("sample", trained[0], "--length", 30, "--temperature", 1, "--top-k", 1000, "--seed", 2).stdout
    assert out.startswith("time traveller") and len(out.strip()) == len("time traveller") + 30


def test_a_diverged_model_still_gives_valid_json(trained, tmp_path):
    """A model whose loss is ~1e5 nats: perplexity exp(1e5) overflows a float; --json says null and why."""
    folder = copy_of(trained[0], tmp_path / "m")
    pretrained = load_model(folder)
    with torch.no_grad():
        for name, p in pretrained.model.named_parameters():
            if name.endswith("bias") and p.dim() == 1 and len(p) == len(pretrained.tokenizer):
                p.copy_(torch.linspace(-1e5, 1e5, len(p)))   # one token certain, whatever the text
    save_model(folder, pretrained.name, pretrained.model, pretrained.tokenizer)
    text = tmp_path / "t.txt"
    text.write_text("the time traveller")
    result = zoo("eval", folder, "--text-file", text, "--json")
    out = json.loads(result.stdout, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))
    assert out["perplexity"] is None and out["bits_per_token"] > 1000 and "overflows a float" in out["note"]
    assert "perplexity inf" in zoo("eval", folder, "--text-file", text).stdout


def test_train_with_a_diverging_recipe_is_one_line(tmp_path):
    result = zoo("train", "gru", "--out", tmp_path / "m", "--lr", "1e30", "--clip", "0", "--epochs", 2, *SMALL,
                 check=False)
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert "lower the learning rate or turn clipping on" in result.stderr and "Traceback" not in result.stderr


def test_train_refuses_to_overwrite_a_model_unless_told(trained, tmp_path):
    """A model folder (no checkpoint, a card beside it): `train --out` there refuses and changes nothing;
    `--overwrite` replaces the model and removes the old card."""
    folder = copy_of(trained[0], tmp_path / "m")
    (folder / STATE_FILE).unlink()
    (folder / "README.md").write_text("the old model's card")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    result = zoo("train", "rnn", "--out", folder, "--epochs", 1, *SMALL, check=False)
    assert result.returncode == 1 and "already holds a model or a run (config.json, model.safetensors, " \
                                      "metrics.json, README.md)" in result.stderr and "--overwrite" in result.stderr
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    zoo("train", "rnn", "--out", folder, "--epochs", 1, "--overwrite", *SMALL)
    assert not (folder / "README.md").exists() and load_model(folder).info["recipe"]["epochs"] == 1


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
