"""Train: pick one of the book's models (or an exercise's variant) and its hyperparameters, press Train and
watch it learn The Time Machine, or a text of your own pasted in, here and now: training and validation perplexity on a live plot (the previous run beside it to
compare), a greedy and a sampled continuation every few seconds, tokens/s; then use the model in the other
tabs and download it.

The loop is the library's: `zoo.train.Trainer.run()` yields a log every LOG_EVERY batches and this tab's
handler, a generator, passes the page an update at most every UPDATE_EVERY seconds. Stop sets the run's
stop flag, read between two logs, and the run ends as one that ran out of time does: the best weights, scored
on all three splits, saved. A closed page ends it without saving (Gradio closes the generator, and the
unload event sets the flag). Limits: `train_runs.Runs` (runs at once, one per visitor and address, seconds
per address an hour, the run folders kept), the time limit (the recipe's time budget) and MAX_PARAMETERS.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import gradio as gr
import torch
from device import DEVICE
from inputs import MAX_CHARS, check_number, check_text, refuse
from train_runs import COLOURS, Run, Runs, Session, Ticket, client_of

from zoo import create_model, list_models
from zoo.checkpoint import CONFIG, WEIGHTS, load_model
from zoo.data import Corpus, DataError, Splits, split
from zoo.evaluate import score
from zoo.fit import save_run
from zoo.generate import generate
from zoo.recipes import Recipe, recipe_for
from zoo.tokenizer import Tokenizer
from zoo.train import Trainer, TrainingError

ARCHITECTURES = [name for name in list_models() if name != "ngram"]
MAX_PARAMETERS = 2_000_000
VALID_TOKENS = 2_000        # validated on during training (the whole split at the end): ~5% of the time
EVAL_BATCHES = 16           # validate at the first epoch end at least this many batches after the last
UPDATE_EVERY = 0.25         # seconds between two updates of the page
SAMPLE_EVERY = 3.0          # seconds between two refreshes of the continuations
SAMPLE_LENGTH, TEMPERATURE, SEED = 100, 0.8, 0
LEARNING_RATES = {"sgd": None, "adamw": 4e-3}   # None: the book's rate for the model (1, or 2 for deep LSTMs)
LIMITS = {"hidden": (8, 1024), "layers": (1, 4), "lr": (1e-5, 10), "num_steps": (5, 100), "batch_size": (1, 64)}
TEXTS = {"book": 10_000, "all": 0, "yours": 0}   # the book trains on its first 10,000 characters; else a whole split
MAX_PASTED = 1_000_000                           # characters of a visitor's own text
# ZeroGPU (which sets SPACES_ZERO_GPU) lends a GPU to one decorated call at a time, in another process where
# the stop flag cannot reach: there the runs train on the CPU. Elsewhere on the GPU when there is one,
# logging less often (each log waits for the GPU).
ZERO_GPU = os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "t", "true")
DEVICE_TRAIN = torch.device("cpu") if ZERO_GPU else DEVICE
LOG_EVERY = 10 if DEVICE_TRAIN.type == "cuda" else 2


def book_lr(name: str, optimizer: str) -> float:
    """The default learning rate: the book's for SGD, the modern recipe's for AdamW."""
    return LEARNING_RATES[optimizer] or recipe_for("book", name).lr


def default_layers(name: str) -> int:
    """The registered model's number of layers (2 for the deep LSTMs)."""
    with torch.device("meta"):
        return create_model(name).config.num_layers


def parameters(name: str, vocab_size: int, hidden: int, layers: int) -> int:
    """The model's parameter count, without allocating it."""
    with torch.device("meta"):
        model = create_model(name, vocab_size=vocab_size, num_hiddens=hidden, num_layers=layers)
    return sum(p.numel() for p in model.parameters())


@dataclass(frozen=True)
class Settings:
    """What the visitor chose, checked."""
    name: str
    hidden: int
    layers: int
    optimizer: str
    lr: float
    batching: str
    num_steps: int
    batch_size: int
    text: str            # "book" | "all": The Time Machine; "yours": the visitor's pasted text
    seconds: int

    @property
    def tokens(self) -> int:
        """Train on the first N characters; 0: the whole training split."""
        return TEXTS[self.text]

    @property
    def label(self) -> str:
        """The settings in a few words, for the status line."""
        shape = f"{self.hidden} hidden" + (f" × {self.layers} layers" if self.layers > 1 else "")
        text = {"book": "the book's 10k characters", "all": "the whole training text",
                "yours": "your text"}[self.text]
        return (f"{self.name}, {shape}, {self.optimizer} lr {self.lr:g}, {self.batching}, batch {self.batch_size} "
                f"× {self.num_steps} steps, {text}")

    def recipe(self, train_tokens: int) -> Recipe:
        """The book's recipe with these settings, a time budget, a log every LOG_EVERY batches and a
        validation every EVAL_BATCHES batches or so."""
        per_epoch = max(1, ((self.tokens or train_tokens) - 1) // (self.batch_size * self.num_steps))
        return recipe_for("book", self.name, optimizer=self.optimizer, lr=self.lr, batching=self.batching,
                          num_steps=self.num_steps, batch_size=self.batch_size, train_tokens=self.tokens,
                          time_budget=self.seconds, log_every=LOG_EVERY, eval_every=-(-EVAL_BATCHES // per_epoch))


def check_settings(corpus: Corpus, name, hidden, layers, optimizer, lr, batching, num_steps, batch_size, text,
                   seconds, max_seconds: int) -> Settings:
    """The settings, or a refusal that says what is wrong (Gradio itself checks the choices and slider ranges)."""
    if name not in ARCHITECTURES:
        raise refuse(f"Pick one of the models: {', '.join(ARCHITECTURES)}.")
    settings = Settings(name, check_number(hidden, "hidden size", *LIMITS["hidden"]),
                        check_number(layers, "layers", *LIMITS["layers"]), optimizer,
                        check_number(lr, "learning rate", *LIMITS["lr"], integer=False), batching,
                        check_number(num_steps, "sequence length", *LIMITS["num_steps"]),
                        check_number(batch_size, "batch size", *LIMITS["batch_size"]), text,
                        check_number(seconds, "time limit", 1, max_seconds))
    size = parameters(name, len(corpus.tokenizer), settings.hidden, settings.layers)
    if size > MAX_PARAMETERS:
        layers = f"{settings.layers} layer" + "s" * (settings.layers > 1)
        raise refuse(f"{name} with {settings.hidden} hidden units and {layers} has {size:,} parameters; the limit "
                     f"here is {MAX_PARAMETERS:,}: use fewer hidden units or layers.")
    return settings


def pasted_corpus(text: str | None, mode: str) -> Corpus:
    """A visitor's own text as a corpus: its own vocabulary (the book's 28 tokens, or every character) and
    its own contiguous 90/5/5 split; or a refusal that says what is wrong with it."""
    if text is None or not text.strip():
        raise refuse("Your text is empty: paste the text to train on into the box below the choice.")
    if len(text) > MAX_PASTED:
        raise refuse(f"Your text has {len(text):,} characters; the limit here is {MAX_PASTED:,}.")
    check_text(text[:MAX_CHARS], "text")                  # plain text, not binary data
    tokenizer = Tokenizer.fit(text, mode)
    try:
        splits = split(tokenizer.ids(text))
    except DataError as e:
        raise refuse(f"Your text is too short to train on: {e}.") from None
    return Corpus(tokenizer, splits, {"name": "your text", "sha1": hashlib.sha1(text.encode()).hexdigest(),
                                      "characters": len(text)})


def continuations(model, tokenizer, prompt: str) -> tuple[str, str]:
    """The greedy and the sampled continuation of the prompt by the model as it is now."""
    greedy = generate(model, tokenizer, prompt, SAMPLE_LENGTH).texts[0]
    sampled = generate(model, tokenizer, prompt, SAMPLE_LENGTH, TEMPERATURE, seed=SEED).texts[0]
    return greedy, sampled


def plotted(visitor: Session | None):
    """The plot's data; None before the first run."""
    return visitor.frame() if visitor and visitor.runs else None


def previous(visitor: Session) -> str:
    """A line about the previous run when the plot shows it."""
    runs = visitor.runs
    return f"  \n**previous run**: {runs[-2].summary or runs[-2].name}" if visitor.compare and len(runs) > 1 else ""


def compared(visitor: Session | None, compare: bool):
    """The plot with or without the previous run, now and for the rest of a run in progress."""
    if visitor:
        visitor.compare = compare
    return plotted(visitor)


def progress(run: Run, log, valid: float | None, seconds: int) -> str:
    """The status line during a run."""
    shown = f" · validation {valid:.2f}" if valid is not None else ""
    return (f"**{run.name}** ({run.label}) · epoch {log.epoch:.2f} · step {log.step:,} · training perplexity "
            f"{log.train_perplexity:.2f}{shown} · {log.tokens_per_sec:,.0f} tokens/s · {log.elapsed:.0f} of "
            f"{seconds} s on {DEVICE_TRAIN.type}")


def stream(corpus: Corpus, settings: Settings, prompt: str, visitor: Session, ticket: Ticket, runs: Runs):
    """Train, yielding the page's (status, plot, greedy, sampled, files, session) at most every UPDATE_EVERY
    seconds (the continuations every SAMPLE_EVERY), until the time limit, Stop or a closed page."""
    torch.set_num_threads(1)    # one core per run: the other tabs keep the rest (see device.py)
    run = visitor.new_run(settings.label)
    s = corpus.splits
    model = create_model(settings.name, vocab_size=len(corpus.tokenizer), num_hiddens=settings.hidden,
                         num_layers=settings.layers)
    try:
        trainer = Trainer(model, Splits(s.train, s.valid[:VALID_TOKENS], s.test), settings.recipe(len(s.train)),
                          corpus.tokenizer, settings.name, device=DEVICE_TRAIN)
    except TrainingError as e:
        raise refuse(f"Cannot train this way: {e}.") from None
    yield (f"**{run.name}** ({run.label}): starting…{previous(visitor)}", plotted(visitor), "", "",
           None, visitor)
    valid, shown, sampled, failed = None, 0.0, -SAMPLE_EVERY, ""
    logs = trainer.run()
    try:
        for log in logs:
            run.add(log)
            valid = log.valid_perplexity or valid
            if ticket.stop.is_set():
                break
            if time.monotonic() - shown < UPDATE_EVERY:
                continue
            shown, texts = time.monotonic(), (gr.skip(), gr.skip())
            if shown - sampled >= SAMPLE_EVERY:
                texts, sampled = continuations(trainer.model, corpus.tokenizer, prompt), shown
            yield (progress(run, log, valid, settings.seconds) + previous(visitor), plotted(visitor),
                   *texts, gr.skip(), gr.skip())
            torch.set_num_threads(1)    # each step of a generator may run in another worker thread
    except TrainingError as e:          # a non-finite loss: keep the best weights, if a validation saw any
        failed = str(e)
    finally:
        logs.close()
    if ticket.closed or (failed and trainer.best_state is None):
        yield (f"**{run.name}** ({run.label}): ⚠️ {failed or 'abandoned'}", gr.skip(), gr.skip(), gr.skip(), None,
               visitor)
        return
    yield (f"**{run.name}** ({run.label}): scoring the best weights on all three splits…", *[gr.skip()] * 5)
    torch.set_num_threads(1)
    why = "stopped" if ticket.stop.is_set() else f"⚠️ ended: {failed}" if failed else None
    finish(corpus, settings, trainer, run, why, runs)
    done = f"**{run.summary}**. It is now *your model* in the Sample and Perplexity tabs, and below to download."
    yield (done + previous(visitor), plotted(visitor),
           *continuations(run.pretrained.model, corpus.tokenizer, prompt), run.files, visitor)


def finish(corpus: Corpus, settings: Settings, trainer: Trainer, run: Run, why: str | None, runs: Runs) -> None:
    """The best weights scored on the three splits (validation: the whole split), saved as a model folder in a
    folder of the run's under `runs.root` (counted against the server's caps), and loaded back from it: the
    run's model, files and summary."""
    metrics = trainer.finish()
    metrics["valid_perplexity"] = score(trainer.model, corpus.splits.valid).perplexity
    run.folder = tempfile.mkdtemp(dir=runs.root)
    folder = save_run(Path(run.folder) / f"{run.name.replace(' ', '-')}-{settings.name}", trainer, metrics,
                      {**corpus.source, "train_tokens": settings.tokens or len(corpus.splits.train)})
    run.size = sum(path.stat().st_size for path in folder.iterdir())
    runs.keep(run)
    run.pretrained = replace(load_model(folder, DEVICE_TRAIN), source=run.label)
    run.files = [str(folder / WEIGHTS), str(folder / CONFIG)]
    why = why or ("time is up" if metrics["train_seconds"] >= settings.seconds else "done")
    run.summary = (f"{run.name} ({run.label}), {why} after {metrics['epochs']} epochs, {metrics['steps']:,} steps, "
                   f"{metrics['train_seconds']:.0f} s, {metrics['tokens_per_sec']:,.0f} tokens/s; best weights "
                   f"(epoch {metrics['best_epoch']}): perplexity train {metrics['train_perplexity']:.2f}, "
                   f"validation {metrics['valid_perplexity']:.2f}, test {metrics['test_perplexity']:.2f}")


def build(corpus: Corpus | None, book_note: str, runs: Runs, session: gr.State, max_seconds: int) -> dict:
    """The settings, Train and Stop, the live plot, the continuations and the download; returns the settings'
    components by name (the Exercises tab sets them)."""
    train_text = len(corpus.splits.train) if corpus else 0
    gr.Markdown(f"Train one of the book's models, or a variant from its exercises, on *The Time Machine* or on a "
                f"text of your own, here and now, and watch it learn. Each run "
                f"trains for up to {max_seconds} s (Stop ends it sooner) with at most {MAX_PARAMETERS:,} "
                f"parameters; one run per visitor, {runs.limit} at a time on this server. The defaults are the "
                f"book's recipe. The trained model joins the Sample and Perplexity tabs as *your model*.")
    with gr.Row():
        name = gr.Dropdown(ARCHITECTURES, value="gru", label="Model", elem_id="train-model")
        hidden = gr.Slider(*LIMITS["hidden"], 256, step=8, label="Hidden units", elem_id="train-hidden")
        layers = gr.Slider(*LIMITS["layers"], 1, step=1, label="Layers", elem_id="train-layers")
        seconds = gr.Slider(1, max_seconds, max_seconds, step=1, label="Time limit (s)", elem_id="train-seconds")
    with gr.Row():
        optimizer = gr.Radio(["sgd", "adamw"], value="sgd", label="Optimizer", elem_id="train-optimizer")
        lr = gr.Number(1.0, label="Learning rate", elem_id="train-lr")
        batching = gr.Radio(["sequential", "random"], value="sequential", label="Batching (the book's two)",
                            elem_id="train-batching")
        num_steps = gr.Slider(*LIMITS["num_steps"], 35, step=1, label="Sequence length (steps)", elem_id="train-steps")
        batch_size = gr.Slider(*LIMITS["batch_size"], 32, step=1, label="Batch size", elem_id="train-batch")
    with gr.Row():
        text = gr.Radio([("the book's: the first 10,000 characters", "book"),
                         (f"the whole training split ({train_text:,} characters)", "all"),
                         ("your own text, pasted below (its own 90/5/5 split)", "yours")], value="book",
                        label="Training text", elem_id="train-text", scale=2)
        prompt = gr.Textbox("time traveller", label="Prompt for the continuations", elem_id="train-prompt", scale=2)
        with gr.Column(scale=1):
            start = gr.Button("Train", variant="primary", elem_id="train-start")
            stop = gr.Button("Stop", variant="stop", elem_id="train-stop")
    with gr.Row(visible=False) as own:
        pasted = gr.Textbox(label=f"Your text (up to {MAX_PASTED:,} characters)", lines=6, max_lines=12,
                            elem_id="train-pasted", scale=3)
        mode = gr.Radio([("the book's 28 tokens (a-z and space)", "book"), ("every character", "chars")],
                        value="book", label="Read as", elem_id="train-mode", scale=1)
    status = gr.Markdown("" if corpus else f"⚠️ Training needs The Time Machine, which could not be loaded: "
                                           f"{book_note}", elem_id="train-status")
    with gr.Row():
        x_axis = gr.Radio(["epoch", "seconds"], value="epoch", label="Plot against", elem_id="train-x")
        compare = gr.Checkbox(True, label="Show the previous run too", elem_id="train-compare")
    plot = gr.LinePlot(x="epoch", y="perplexity", color="curve", color_map=COLOURS, color_title="",
                       y_title="perplexity",
                       label=f"Training (running over the epoch) and validation (first {VALID_TOKENS:,} "
                             f"characters) perplexity", elem_id="train-plot")
    with gr.Row():
        greedy = gr.Textbox(label="Greedy continuation", lines=3, elem_id="train-greedy")
        sampled = gr.Textbox(label=f"Sampled continuation (temperature {TEMPERATURE}, seed {SEED})", lines=3,
                             elem_id="train-sampled")
    files = gr.File(label="Download the trained model (model.safetensors + config.json; zoo.hub.load(folder) "
                          "rebuilds it)", file_count="multiple", interactive=False, elem_id="train-files")

    def train(name, hidden, layers, optimizer, lr, batching, num_steps, batch_size, text, seconds, prompt, compare,
              pasted, mode, visitor: Session, request: gr.Request):
        """Train one model, streaming the status, the plot and every few seconds the continuations."""
        if text == "yours":
            data = pasted_corpus(pasted, mode)
        elif corpus is None:
            raise refuse(f"Training needs The Time Machine, which this server could not load: {book_note}")
        else:
            data = corpus
        settings = check_settings(data, name, hidden, layers, optimizer, lr, batching, num_steps, batch_size, text,
                                  seconds, max_seconds)
        prompt = check_text(prompt, "prompt")
        if not data.tokenizer.encode(prompt):
            raise refuse("The model would read this prompt as nothing at all: give it some letters.")
        ticket = runs.start(request.session_hash, client_of(request), settings.seconds)
        try:
            visitor = visitor or Session()
            visitor.compare = compare
            yield from stream(data, settings, prompt, visitor, ticket, runs)
        finally:
            runs.end(ticket)

    def stop_training(request: gr.Request) -> None:
        """Ask this visitor's run to stop; it then finishes as a run that ran out of time does. Said in a
        toast: a message in the status line could arrive after the run's last one and hide it."""
        stopping = runs.stop(request.session_hash, client_of(request))
        gr.Info("Stopping: the best weights are scored and saved…" if stopping else "No run of yours is training.")

    settings = [name, hidden, layers, optimizer, lr, batching, num_steps, batch_size, text, seconds, prompt, compare,
                pasted, mode, session]
    # `runs` refuses what is over its limits, at once and with a message: the handlers must be let in to do
    # that (two more than run at once), rather than wait in the queue for a free place.
    start.click(train, settings, [status, plot, greedy, sampled, files, session], api_name="train",
                concurrency_id="train", concurrency_limit=runs.limit + 2, show_progress="hidden")
    stop.click(stop_training, None, None, api_name="stop_training", queue=False)
    x_axis.change(lambda x: gr.LinePlot(x=x, x_title=x), x_axis, plot, queue=False, api_visibility="private")
    compare.change(compared, [session, compare], plot, queue=False, api_visibility="private")
    name.change(lambda name, optimizer: (book_lr(name, optimizer), default_layers(name)), [name, optimizer],
                [lr, layers], queue=False, api_visibility="private")
    optimizer.change(book_lr, [name, optimizer], lr, queue=False, api_visibility="private")
    text.change(lambda text: gr.Row(visible=text == "yours"), text, own, queue=False, api_visibility="private")
    return {"name": name, "hidden": hidden, "layers": layers, "optimizer": optimizer, "lr": lr, "batching": batching,
            "num_steps": num_steps, "batch_size": batch_size, "text": text, "seconds": seconds}
