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
def other_author(tmp_path_factory):
    """Another author's text for 9.3.4, longer than the book's training split: Tim Peters' Zen of Python."""
    import codecs
    import this  # noqa: F401 (prints the Zen once)
    path = tmp_path_factory.mktemp("other") / "zen.txt"
    path.write_text(codecs.decode(this.s, "rot13") * 300, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, other_author):
    out = tmp_path_factory.mktemp("smoke") / "exercises"
    run = subprocess.run([sys.executable, "-m", "zoo", "exercise", "all", "--smoke", "--budget", "5", "--jobs", "1",
                          "--device", "cpu", "--out", str(out), "--mix", str(other_author)],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
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
    mixing = json.loads((out / "9.3.4.json").read_text())
    assert all(r["other_test_perplexity"] > 1 for seeds in mixing["runs"].values() for r in seeds)
    assert "the other author's test ppl" in page and "--mix zen.txt" in page


def test_mixing_authors_needs_the_other_text(tmp_path):
    """Without --mix, 9.3.4 says what it needs and leaves the answer it had; a wrong path is one line."""
    kept = tmp_path / "exercises"
    kept.mkdir()
    before = json.dumps({"id": "9.3.4", "section": "9.3", "question": "an answer of an earlier run", "needs": "",
                         "answer": ""})
    (kept / "9.3.4.json").write_text(before)
    run = subprocess.run([sys.executable, "-m", "zoo", "exercise", "9.3.4", "--smoke", "--out", str(kept)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "9.3.4: not run: another author's text, given with --mix FILE" in run.stdout
    assert (kept / "9.3.4.json").read_text() == before
    missing = subprocess.run([sys.executable, "-m", "zoo", "exercise", "9.3.4", "--mix", str(tmp_path / "none.txt")],
                             cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert missing.returncode != 0 and missing.stderr.strip().splitlines() == [
        f"zoo exercise: --mix {tmp_path / 'none.txt'}: no such file"]


def test_runs_shared_between_exercises_train_once(smoke, other_author):
    out, _ = smoke
    setup = Setup(budget=5, smoke=True, mix=str(other_author))
    keys = {run.key(seed, setup) for e in EXERCISES for run in e.runs for seed in range(run.seeds)}
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
