"""Perplexity: how surprised each model is by a text, in all (a table and a chart, the n-gram as the line to
beat) and where (per model, the text coloured by each character's surprisal); the visitor's own model, trained
in the Train tab, among them."""
from __future__ import annotations

import math

import gradio as gr
import pandas as pd
import torch
from device import runs_models
from inputs import check_text, refuse, vocabulary_note
from loader import Slot, one_line
from matplotlib.figure import Figure
from train_runs import Session, yours

from zoo.evaluate import Score, surprisal

REFERENCE = "ngram"
SHOWN_TOKENS = 2000   # the coloured text stops here (the scores cover the whole text)


def colour(slot: Slot, text: str) -> tuple[Score, list[tuple[str, float]]]:
    """The model's score of `text` and its tokens with a colour each: 0 (white) for no surprise up to 1 (red)
    for as much as a blind guess among the whole vocabulary; -1 (purple) outside the vocabulary."""
    tokenizer = slot.pretrained.tokenizer
    tokens = tokenizer.split(text)
    ids = torch.tensor(tokenizer.encode(text), dtype=torch.long)
    if len(ids) < 2:
        raise ValueError("needs at least two characters it can read")
    nats = surprisal(slot.pretrained.model, ids)                     # (N-1,): -log p(token t | tokens < t)
    blind = math.log(len(tokenizer))                                 # a uniform guess costs log V nats
    scores = [0.0] + (nats / blind).clamp(max=1).tolist()           # the first token is not predicted
    sep = " " if tokenizer.mode == "words" else ""
    pieces = [(token + sep, round(s, 2) if token in tokenizer.index else -1.0)
              for token, s in zip(tokens[:SHOWN_TOKENS], scores)]
    return Score(float(nats.double().mean()), len(nats)), pieces


def chart(table: pd.DataFrame) -> Figure:
    """Perplexity and bits/char per model as bars, the n-gram's value as a dashed line across."""
    figure = Figure(figsize=(10, 0.35 * len(table) + 1.4), layout="constrained")
    rows = table.iloc[::-1]                                          # best at the top
    for ax, column in zip(figure.subplots(1, 2, sharey=True), ("perplexity", "bits/char")):
        colours = ["#9ca3af" if m == REFERENCE else "#4f46e5" for m in rows["model"]]
        ax.barh(rows["model"], rows[column], color=colours)
        ax.set_xlabel(column)
        reference = table.loc[table["model"] == REFERENCE, column]
        if len(reference):
            ax.axvline(reference.iloc[0], color="#dc2626", linestyle="--", label="n-gram: the line to beat")
            ax.legend(loc="lower right")
    return figure


def build(slots: dict[str, Slot], examples: dict[str, str], visitor: gr.State | None = None) -> None:
    """The text box, its examples, the table, the chart and one coloured text per model, the visitor's last."""
    names = list(slots)
    with gr.Row():
        text = gr.Textbox(label="Text", lines=6, max_lines=16, elem_id="text", scale=4)
        with gr.Column(scale=1):
            example = gr.Dropdown(list(examples), value=None, label="Or pick an example", elem_id="example")
            run = gr.Button("Score", variant="primary", elem_id="score")
    status = gr.Markdown(elem_id="ppl-status")
    table = gr.Dataframe(label="Per model (lower is better)", elem_id="ppl-table", interactive=False)
    plot = gr.Plot(show_label=False, elem_id="ppl-chart")
    gr.Markdown("Each character coloured by the model's surprise at it: white = expected, red = as surprising "
                "as a blind guess; purple = outside the model's vocabulary.")
    coloured = [gr.HighlightedText(label=name, elem_id=f"surprisal-{name}", elem_classes="surprisal",
                                   show_legend=False, show_inline_category=False) for name in names]
    your_coloured = gr.HighlightedText(label="your model (train one in the Train tab)", elem_id="surprisal-yours",
                                       elem_classes="surprisal", show_legend=False, show_inline_category=False)

    @runs_models
    def score_all(text, own: Slot | None):
        """Each loaded model's (score, coloured pieces), the visitor's too, and why the others have none."""
        scored, failed = {}, []
        for name, slot in {**slots, **({own.name: own} if own else {})}.items():
            if not slot.ok:
                failed.append(f"{name}: not loaded ({slot.error})")
                continue
            try:
                scored[name] = colour(slot, text)
            except Exception as e:   # one model's failure is its line; the others are scored
                failed.append(f"{name}: {one_line(e)}")
        return scored, failed

    def perplexity(text, visitor: Session | None = None):
        """Score the text with every loaded model; a model that cannot read it says so in its own label."""
        text = check_text(text, "text")
        own = yours(visitor)
        scored, failed = score_all(text, own)
        if not scored:
            raise refuse("No model could score this text: " + "; ".join(failed))
        frame = pd.DataFrame([(name, s.perplexity, s.bits_per_token, s.tokens) for name, (s, _) in scored.items()],
                             columns=["model", "perplexity", "bits/char", "characters scored"])
        frame = frame.sort_values("perplexity").round(3)
        notes = [vocabulary_note([s.pretrained.tokenizer for s in slots.values() if s.ok], text)]
        notes += [f"⚠️ {line}" for line in failed]
        if max(score.tokens for score, _ in scored.values()) >= SHOWN_TOKENS:
            notes.append(f"The colours stop after {SHOWN_TOKENS:,} characters; the numbers cover the whole text.")
        labels = [gr.HighlightedText(scored[name][1], label=f"{name}: perplexity {scored[name][0].perplexity:.2f}")
                  if name in scored else gr.HighlightedText(None, label=f"{name}: no score") for name in names]
        if own:
            labels.append(gr.HighlightedText(scored[own.name][1], label=f"{own.name} ({own.source}): perplexity "
                                             f"{scored[own.name][0].perplexity:.2f}") if own.name in scored else
                          gr.HighlightedText(None, label=f"{own.name}: no score"))
        else:
            labels.append(gr.HighlightedText(None, label="your model (train one in the Train tab)"))
        return ["\n\n".join(n for n in notes if n), frame, chart(frame), *labels]

    # The visitor's model comes last in the outputs, so the bundled models' keep their places in the API.
    gr.on([run.click, text.submit], perplexity, [text] + ([visitor] if visitor else []),
          [status, table, plot, *coloured, your_coloured], api_name="perplexity", concurrency_id="models",
          show_progress_on=status)
    example.change(lambda name: examples.get(name, gr.skip()), example, text, api_name="example", queue=False)
