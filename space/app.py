"""RNN Zoo in the browser: the book's recurrent models side by side on one prompt, on one text, in training,
and inside their gates; and one that the visitor trains, live.

`python space/app.py` serves the page. The models are the bundled weights, except those that this folder's
README.md pins to a Hub commit (`preload_from_hub`; see loader.py). Configured by environment variables, read
here only:
    RNN_ZOO_WEIGHTS    the bundled weights, one folder per model (default: weights/ beside the zoo package,
                       i.e. <repo>/weights)
    RNN_ZOO_TRAIN_RUNS     runs the Train tab trains at once (default: 2 on a GPU, else 1 per 2 cores, at most 2)
    RNN_ZOO_TRAIN_SECONDS  the time limit of one run (default 60)
    RNN_ZOO_EXERCISES  the exercises' results (default: docs/exercises/ beside the zoo package)
    ZOO_BACKEND        what runs the recurrent layers: auto (default: the fastest, measured), step, torch, kernel
Nothing is uploaded (max_file_size 0: no component takes a file); SIGTERM ends the server as Ctrl-C does, so
the Train tab's run folders are removed either way.
"""
from __future__ import annotations

import importlib.util
import os
import signal
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if importlib.util.find_spec("zoo") is None:       # a checkout, zoo not installed: the library is next to space/
    sys.path.insert(0, str(HERE.parent))

import gradio as gr  # noqa: E402
import tab_exercises  # noqa: E402
import tab_gates  # noqa: E402
import tab_perplexity  # noqa: E402
import tab_sample  # noqa: E402
import tab_train  # noqa: E402
import tab_training  # noqa: E402
from book import Memorised, held_out_passage, load_book  # noqa: E402
from device import DEVICE  # noqa: E402
from gradio.utils import get_upload_folder  # noqa: E402
from loader import Slot, hub_pins, load_zoo  # noqa: E402
from train_runs import Runs, Session, client_of, forget  # noqa: E402

import zoo  # noqa: E402
from zoo import backends, kernels  # noqa: E402
from zoo.data import Corpus  # noqa: E402
from zoo.models import BOOK  # noqa: E402

PINS = hub_pins(HERE / "README.md")   # the Hub commits the deployment trusts; none: the bundled weights
WEIGHTS = Path(os.environ.get("RNN_ZOO_WEIGHTS") or Path(zoo.__file__).resolve().parents[1] / "weights")
EXERCISES = Path(os.environ.get("RNN_ZOO_EXERCISES") or
                 Path(zoo.__file__).resolve().parents[1] / "docs" / "exercises")
MODEL_CONCURRENCY = os.cpu_count() or 2   # model calls at once, one core each (device.runs_models); more queue
QUEUE_SIZE = 500         # visitors waiting beyond this are told the queue is full, instead of waiting minutes
TRAIN_RUNS = int(os.environ.get("RNN_ZOO_TRAIN_RUNS") or
                 (2 if DEVICE.type == "cuda" else max(1, min(2, (os.cpu_count() or 2) // 2))))
TRAIN_SECONDS = int(os.environ.get("RNN_ZOO_TRAIN_SECONDS") or 60)
BACKEND = backends.check_name(os.environ.get(backends.ENV) or "auto")
SESSION_SECONDS = 3 * 3600   # a visitor's trained models and files are kept this long after their last run
MAX_UPLOAD_BYTES = 0         # no component takes a file: Gradio's upload route refuses any content
# Per-character colouring as running text: no gap, padding or rounding between the one-character tokens.
CSS = """
.surprisal .token-container, .surprisal .token {
    margin: 0 !important; padding: 0 !important; border-radius: 0 !important;
}
.surprisal .token .text { font-family: var(--font-mono); white-space: pre; }
"""


def examples(book: str) -> dict[str, str]:
    """Example texts by title: the held-out passage of the book, then space/examples/*.txt (title on line 1)."""
    found = {"The Time Machine, held out (test split)": book} if book else {}
    for path in sorted((HERE / "examples").glob("*.txt")):
        title, _, text = path.read_text(encoding="utf-8").partition("\n")
        found[title.strip()] = text.strip()
    return found


def build_demo(slots: dict[str, Slot], memorised: Memorised | None = None, book_note: str = "",
               texts: dict[str, str] | None = None, corpus: Corpus | None = None,
               runs: Runs | None = None) -> gr.Blocks:
    """The page: one tab per view, each built from the same loaded models (and the visitor's own, trained in
    the Train tab and kept in their session)."""
    loaded = sum(s.ok for s in slots.values())
    runs = runs or Runs(TRAIN_RUNS, get_upload_folder())
    with gr.Blocks(title="RNN Zoo", analytics_enabled=False, delete_cache=(3600, SESSION_SECONDS)) as demo:
        gr.Markdown(f"# RNN Zoo\nThe recurrent language models of *Dive into Deep Learning* (8.5-9.3), written "
                    f"from scratch and with `torch.nn`, and a Kneser-Ney n-gram as the line to beat: {loaded} of "
                    f"{len(slots)} models loaded, running on {DEVICE.type}.")
        yours = gr.State(Session(), time_to_live=SESSION_SECONDS, delete_callback=forget)
        with gr.Tabs() as tabs:
            with gr.Tab("Sample side by side", id="sample", elem_id="tab-sample"):
                tab_sample.build(slots, memorised, book_note, yours)
            with gr.Tab("Perplexity", id="perplexity", elem_id="tab-perplexity"):
                tab_perplexity.build(slots, texts or {}, yours)
            with gr.Tab("Training", id="training", elem_id="tab-training"):
                tab_training.build(slots)
            with gr.Tab("Train", id="train", elem_id="tab-train"):
                train_settings = tab_train.build(corpus, book_note, runs, yours, TRAIN_SECONDS)
            with gr.Tab("Inside the gates", id="gates", elem_id="tab-gates"):
                tab_gates.build(slots)
            with gr.Tab("Exercises", id="exercises", elem_id="tab-exercises"):
                tab_exercises.build(EXERCISES, train_settings, tabs)

        def page_closed(request: gr.Request) -> None:
            """A visitor who leaves stops their run (Gradio also closes its generator)."""
            runs.stop(request.session_hash, client_of(request), closed=True)
        demo.unload(page_closed)
    return demo.queue(default_concurrency_limit=MODEL_CONCURRENCY, max_size=QUEUE_SIZE)


def from_the_book(slots: dict[str, Slot]) -> tuple[Memorised | None, str, dict[str, str], Corpus | None]:
    """What the page takes from the book: the memorised-span finder, why it is missing, the example texts, and
    the corpus the Train tab trains on."""
    tokenizer = next((s.pretrained.tokenizer for s in slots.values() if s.ok), None)
    corpus, note = load_book(tokenizer) if tokenizer else (None, "no model is loaded")
    if corpus is None:
        return None, note, examples(""), None
    return (Memorised(tokenizer.decode(corpus.splits.train)), note, examples(held_out_passage(corpus, tokenizer)),
            corpus)


kernels.available()           # loads the C++ kernels, or starts building them in the background: nothing waits
slots = load_zoo(BOOK, PINS, WEIGHTS, DEVICE)
for slot in slots.values():
    if slot.ok and hasattr(slot.pretrained.model, "use_backend"):
        slot.pretrained.model.use_backend(BACKEND)
# The run folders live in Gradio's own cache folder, so that gr.File serves them without a second copy.
train_runs = Runs(TRAIN_RUNS, get_upload_folder())
demo = build_demo(slots, *from_the_book(slots), runs=train_runs)
LAUNCH = dict(css=CSS, max_file_size=MAX_UPLOAD_BYTES)

if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)   # a clean exit, as Ctrl-C: atexit removes the runs
    demo.launch(**LAUNCH)
