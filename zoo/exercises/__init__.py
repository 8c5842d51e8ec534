"""The book's exercises, answered by experiment: one command per exercise, results as JSON and a plot, and
docs/exercises.md written from them.

    python -m zoo exercise list
    python -m zoo exercise 9.1.4 [--device D] [--budget S] [--jobs J]
    python -m zoo exercise all --smoke --out /tmp/exercises        # every exercise in seconds: it runs

`run` trains an exercise's runs with the shared trainer (or makes its own measurement), keeps each run's
result in OUT/runs (exercises that share a run train it once), writes OUT/<id>.json and OUT/<id>.png, and
rewrites the markdown page from every result in OUT.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from zoo import kernels
from zoo.exercises.catalog import BY_ID, EXERCISES, Exercise, agreement, describe
from zoo.exercises.docs import plot, write_docs
from zoo.exercises.runs import Run, Setup, train_all

__all__ = ["EXERCISES", "BY_ID", "Exercise", "Run", "Setup", "run", "runnable", "write_docs", "machine"]


def machine(device: str) -> str:
    """What the numbers were measured on: the GPU's name, or the CPU's model and core count."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"{kernels.cpu_model()}, {os.cpu_count()} cores"


def runnable(exercise: Exercise, setup: Setup) -> bool:
    """Whether this setup can run it: it has runs or a measurement, and the other text it mixes in, if any."""
    return bool(exercise.runs or exercise.measure) and bool(setup.mix or not exercise.mixes)


def run(exercise: Exercise, setup: Setup, out: str | Path, command: str = "", log=print) -> dict:
    """Run one exercise; write OUT/<id>.json (and a plot of its training curves) and OUT's markdown page."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    setup = replace(setup, cache=setup.cache or str(out / "runs"))
    started = time.perf_counter()
    results = {"id": exercise.id, "section": exercise.section, "question": exercise.question,
               "command": command or f"python -m zoo exercise {exercise.id}", "needs": exercise.needs,
               "setup": {k: v for k, v in asdict(setup).items() if k != "cache"}, "machine": machine(setup.device),
               "date": time.strftime("%Y-%m-%d"), **describe(exercise)}
    if not runnable(exercise, setup):   # an answer committed earlier stays
        write_docs(out)
        return {**results, "answer": ""}
    if exercise.runs:
        results["runs"] = train_all(exercise.runs, setup, log)
    if exercise.measure:
        results["measured"] = exercise.measure(setup)
    results["seconds"] = time.perf_counter() - started
    results["answer"] = exercise.answer(results)
    results["agreement"] = agreement(exercise, results)
    (out / f"{exercise.id}.json").write_text(json.dumps(results, indent=1))
    if exercise.runs:
        plot(results, out / f"{exercise.id}.png")
    write_docs(out)
    return results
