"""Exercises: the book's exercises answered by experiment, from the results committed in docs/exercises/.

Pick one to see its question, what was run and on what, the numbers, the curves and the answer. Where one of
its runs fits the Train tab (a registered model, the book's characters, settings that tab has), a button sets
that tab up to train it now.
"""
from __future__ import annotations

from pathlib import Path

import gradio as gr
from inputs import refuse
from tab_train import ARCHITECTURES, LIMITS, MAX_PARAMETERS, TEXTS, default_layers, parameters

from zoo.exercises import EXERCISES
from zoo.exercises.docs import results, section
from zoo.recipes import recipe_for

TRAIN_TAB_SETTINGS = {"num_steps", "batch_size", "lr"}   # what the Train tab can set besides model and sizes
SET_UP = ("name", "hidden", "layers", "optimizer", "lr", "batching", "num_steps", "batch_size", "text")


def train_tab_settings(spec: dict) -> dict | None:
    """The Train tab's settings for one run of an exercise, or None when that tab cannot train it."""
    name, sizes, changed = spec["model"], spec["sizes"], spec["settings"]
    if (name not in ARCHITECTURES or spec["tokens"] != "book" or spec["fraction"] != 1 or spec.get("mix")
            or sizes.get("embedding") or set(changed) - TRAIN_TAB_SETTINGS):
        return None
    recipe = recipe_for(spec["recipe"], name, **changed)
    hidden, layers = sizes.get("num_hiddens", 256), sizes.get("num_layers", default_layers(name))
    settings = {"name": name, "hidden": hidden, "layers": layers, "optimizer": recipe.optimizer, "lr": recipe.lr,
                "batching": recipe.batching, "num_steps": recipe.num_steps, "batch_size": recipe.batch_size,
                "text": "book" if recipe.train_tokens == TEXTS["book"] else "all"}
    within = all(low <= settings[key] <= high for key, (low, high) in LIMITS.items())
    return settings if within and parameters(name, 28, hidden, layers) <= MAX_PARAMETERS else None


def build(folder: Path, train: dict[str, gr.components.Component], tabs: gr.Tabs) -> None:
    """The exercise picker, its page and plot, and the button that sets up the Train tab."""
    found = {id: r if r["answer"] or r["needs"] else {**r, "needs": "its results"}
             for id, r in results(folder).items()}
    trainable = {id: {s["label"]: settings for s in r.get("spec", []) if (settings := train_tab_settings(s))}
                 for id, r in found.items()}    # the runs the Train tab can train, by exercise
    gr.Markdown("Every exercise of D2L 8.5-9.3 that an experiment can answer, run with this project's trainer "
                "(`python -m zoo exercise ID` reruns one). The Train tab approximates a run with its own recipe "
                "(no dropout, no schedule), within its limits.")
    def view(id: str) -> tuple[str, str | None, list[str]]:
        """The exercise's page, its plot (if it trained anything) and the runs the Train tab can train."""
        if id not in found:
            raise refuse(f"No exercise {id!r}.")
        png = folder / f"{id}.png"
        return section(found[id], None), str(png) if png.is_file() else None, list(trainable[id])

    first, first_png, first_runs = view(EXERCISES[0].id)
    pick = gr.Dropdown([(f"{r['id']}: {r['question']}", id) for id, r in found.items()], value=EXERCISES[0].id,
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
        settings = trainable.get(id, {}).get(label)
        if settings is None:
            raise refuse("Pick one of the exercise's runs that the Train tab can train.")
        return *[settings[key] for key in SET_UP], gr.Tabs(selected="train")

    pick.change(show, pick, [page, plot, run], api_name="exercise", queue=False)
    go.click(set_up, [pick, run], [*(train[key] for key in SET_UP), tabs], api_name="exercise_to_train",
             queue=False)
