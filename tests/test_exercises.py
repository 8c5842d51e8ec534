"""The exercises: every one runs end to end in smoke mode through the CLI, writing its results, its plot and
its section of the page; the committed answer key covers every exercise."""
import json
import subprocess
import sys

import pytest

from conftest import ROOT
from zoo.exercises import BY_ID, EXERCISES
from zoo.exercises.runs import Setup

RUNNABLE = [e.id for e in EXERCISES if e.runs or e.measure]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke") / "exercises"
    run = subprocess.run([sys.executable, "-m", "zoo", "exercise", "all", "--smoke", "--budget", "5", "--jobs", "1",
                          "--device", "cpu", "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return out, run


def test_every_exercise_runs_and_writes_its_results(smoke):
    out, run = smoke
    for id in RUNNABLE:
        results = json.loads((out / f"{id}.json").read_text())
        assert results["answer"] and results["setup"]["smoke"] and results["machine"]
        assert (out / f"{id}.png").is_file() == bool(BY_ID[id].runs)
        for seeds in results.get("runs", {}).values():
            assert all(r["history"] and (r["failed"] or r["valid_perplexity"] > 1) for r in seeds)
        assert f"{id}: " in run.stdout
    page = (out.parent / "exercises.md").read_text()
    assert all(f"## {e.id}: " in page for e in EXERCISES) and page.count("Smoke run") == len(RUNNABLE)
    assert "Not run: it needs texts by other authors" in page


def test_runs_shared_between_exercises_train_once(smoke):
    out, _ = smoke
    keys = {run.key(seed, Setup(budget=5, smoke=True)) for e in EXERCISES for run in e.runs for seed in range(run.seeds)}
    assert {p.stem for p in (out / "runs").glob("*.json")} == keys
    assert len(keys) < sum(run.seeds for e in EXERCISES for run in e.runs)      # some are shared


def test_list_and_an_unknown_exercise():
    listed = subprocess.run([sys.executable, "-m", "zoo", "exercise", "list"], cwd=ROOT, capture_output=True, text=True)
    assert listed.returncode == 0 and all(e.id in listed.stdout for e in EXERCISES)
    unknown = subprocess.run([sys.executable, "-m", "zoo", "exercise", "1.2.3"], cwd=ROOT, capture_output=True,
                             text=True)
    assert unknown.returncode != 0 and unknown.stderr.strip().splitlines() == [
        "zoo exercise: no exercise '1.2.3'; `zoo exercise list` lists them"]


def test_a_diverging_run_is_a_result_not_a_crash():
    """A learning rate that blows the loss up: the run reports how it diverged, and the table shows '-'."""
    from zoo.exercises.runs import Run, cell, train_all
    run = Run("too fast", "rnn-scratch", "book", settings={"lr": 1e30, "clip": 0})
    [result] = train_all([run], Setup(budget=5, smoke=True), log=lambda line: None)["too fast"]
    assert result["stopped_by"] == "diverged" and "lower the learning rate" in result["failed"]
    assert cell([result], "valid_perplexity") == "-"


def test_the_committed_answer_key_covers_every_exercise():
    folder = ROOT / "docs" / "exercises"
    for id in RUNNABLE:
        results = json.loads((folder / f"{id}.json").read_text())
        assert results["answer"] and not results["setup"]["smoke"], id
        assert (folder / f"{id}.png").is_file() == bool(BY_ID[id].runs)
    page = (ROOT / "docs" / "exercises.md").read_text()
    assert "Smoke run" not in page and all(f"## {e.id}: " in page for e in EXERCISES)
