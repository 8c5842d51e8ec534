"""Exercises: the book's exercises answered by experiment, from the results committed in docs/exercises/.

Pick one to see its question, what was run and on what, the numbers, the curves and the answer. Where one of
its runs fits the Train tab (a registered model, the book's characters, settings that tab has), a button sets
that tab up to train it now.
"""
from __future__ import annotations

import json
from pathlib import Path

import gradio as gr
from tab_train import ARCHITECTURES, MAX_PARAMETERS, default_layers, parameters

from zoo.exercises import EXERCISES
from zoo.exercises.docs import section
from zoo.recipes import recipe_for

TRAIN_TAB_SETTINGS = {"num_steps", "batch_size", "lr"}   # what the Train tab can set besides model and sizes
SET_UP = ("name", "hidden", "layers", "optimizer", "lr", "batching", "num_steps", "batch_size", "text")


def load(folder: Path) -> dict[str, dict]:
    """Every exercise's results found in `folder`, by id; an exercise without results has its question only."""
    found = {}
    for e in EXERCISES:
        path = folder / f"{e.id}.json"
        found[e.id] = json.loads(path.read_text()) if path.is_file() else {
            "id": e.id, "question": e.question, "section": e.section, "needs": e.needs or "its results",
            "answer": ""}
    return found


def train_tab_settings(spec: dict) -> dict | None:
    """The Train tab's settings for one run of an exercise, or None when that tab cannot train it."""
    name, sizes, changed = spec["model"], spec["sizes"], spec["settings"]
    if (name not in ARCHITECTURES or spec["tokens"] != "book" or spec["fraction"] != 1 or spec.get("mix")
            or sizes.get("embedding") or set(changed) - TRAIN_TAB_SETTINGS):
        return None
    recipe = recipe_for(spec["recipe"], name, **changed)
    hidden, layers = sizes.get("num_hiddens", 256), sizes.get("num_layers", default_layers(name))
    if recipe.num_steps > 100 or recipe.batch_size > 64 or hidden > 1024 or layers > 4 \
            or parameters(name, 28, hidden, layers) > MAX_PARAMETERS:
        return None
    return {"name": name, "hidden": hidden, "layers": layers, "optimizer": recipe.optimizer, "lr": recipe.lr,
            "batching": recipe.batching, "num_steps": recipe.num_steps, "batch_size": recipe.batch_size,
            "text": "book" if recipe.train_tokens == 10_000 else "all"}


def build(folder: Path, train: dict[str, gr.components.Component] | None, tabs: gr.Tabs) -> None:
    """The exercise picker, its page and plot, and the button that sets up the Train tab."""
    results = load(folder)
    gr.Markdown("Every exercise of D2L 8.5-9.3 that an experiment can answer, run with this project's trainer "
                "(`python -m zoo exercise ID` reruns one). The Train tab approximates a run with its own recipe "
                "(no dropout, no schedule), within its limits.")
    def view(id: str) -> tuple[str, str | None, list[str]]:
        """The exercise's page, its plot (if it trained anything) and the runs the Train tab can train."""
        if id not in results:
            raise gr.Error(f"No exercise {id!r}.", print_exception=False)
        png = folder / f"{id}.png"
        runnable = [s["label"] for s in results[id].get("spec", []) if train_tab_settings(s)]
        return section(results[id], None), str(png) if png.is_file() else None, runnable

    first, first_png, first_runs = view(EXERCISES[0].id)
    pick = gr.Dropdown([(f"{r['id']}: {r['question']}", id) for id, r in results.items()], value=EXERCISES[0].id,
                       label="Exercise", elem_id="exercise-pick")
    page = gr.Markdown(first, elem_id="exercise-page")
    plot = gr.Image(first_png, label="Validation perplexity per epoch", type="filepath", interactive=False,
                    visible=first_png is not None, elem_id="exercise-plot")
    with gr.Row():
        run = gr.Dropdown(first_runs, value=first_runs[0] if first_runs else None, label="One of its runs, to train now",
                          interactive=bool(first_runs), allow_custom_value=True,   # set_up checks the name
                          elem_id="exercise-run", scale=3)
        go = gr.Button("Set up the Train tab", elem_id="exercise-train", scale=1)

    def show(id: str):
        text, png, runnable = view(id)
        return (text, gr.Image(png, visible=png is not None),
                gr.Dropdown(runnable, value=runnable[0] if runnable else None, interactive=bool(runnable)))

    def set_up(id: str, label: str | None):
        """The Train tab's settings for that run, and that tab in front."""
        spec = next((s for s in results.get(id, {}).get("spec", []) if s["label"] == label), None)
        settings = train_tab_settings(spec) if spec else None
        if settings is None or train is None:
            raise gr.Error("Pick one of the exercise's runs that the Train tab can train.", print_exception=False)
        return *[settings[key] for key in SET_UP], gr.Tabs(selected="train")

    pick.change(show, pick, [page, plot, run], api_name="exercise", queue=False)
    if train is not None:
        go.click(set_up, [pick, run], [*(train[key] for key in SET_UP), tabs], api_name="exercise_to_train",
                 queue=False)
