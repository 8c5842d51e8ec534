"""Sample side by side: one prompt and one set of decoding controls, every model's continuation in its own
panel with its time and speed, and the spans it copied verbatim from the training text marked; the visitor's
own model, trained in the Train tab, in a panel of its own."""
from __future__ import annotations

import re

import time

import gradio as gr
from book import Memorised
from device import runs_models
from inputs import check_number, check_text, refuse, vocabulary_note
from loader import Slot, one_line
from train_runs import yours

from zoo.generate import generate

MAX_LENGTH = 2000
PER_ROW = 3
REFERENCE = "ngram"   # shown on request: it samples one Python step per character, ~5x slower than all 8 networks
COLORS = {"prompt": "#d1d5db", "copied": "#f59e0b"}
NO_MODEL_YET = "Train a model in the Train tab: it answers here too."


def marked(text: str, start: int, spans: list[tuple[int, int]]) -> list[tuple[str, str | None]]:
    """HighlightedText pieces: the prompt, then the continuation with the copied spans marked."""
    pieces, cursor = [(text[:start], "prompt")], start
    for a, b in spans:
        a = max(a, start)
        if b > a:
            pieces += [(text[cursor:a], None), (text[a:b], "copied")]
            cursor = b
    pieces.append((text[cursor:], None))
    # Plain text goes word by word: HighlightedText draws each piece as one box, and a long box would
    # start on a line of its own instead of flowing after the marked piece before it.
    return [(part, kind) for piece, kind in pieces if piece
            for part in (re.findall(r"\S+\s*|\s+", piece) if kind is None else [piece])]


def continuation(slot: Slot, prompt: str, length: int, temperature: float, top_k: int, top_p: float,
                 seed: int, memorised: Memorised | None) -> tuple[str, list | None]:
    """One model's panel: (a line with time, speed and copied share, the marked text); an error instead."""
    if not slot.ok:
        return f"⚠️ not loaded: {slot.error}", None
    model, tokenizer = slot.pretrained.model, slot.pretrained.tokenizer
    started = time.perf_counter()
    try:
        out = generate(model, tokenizer, prompt, length, temperature, top_k, top_p, seed=seed)
    except Exception as e:   # whatever one model raises is its panel's message; the other panels answer
        return f"⚠️ {one_line(e)}", None
    seconds = time.perf_counter() - started
    text, start = out.texts[0], len(out.prefix)
    new = len(text) - start                           # a sampled <unk> shows as 5 characters, counts as one
    line = f"{seconds * 1000:.0f} ms · {length / seconds:,.0f} chars/s"
    spans = memorised.spans(text) if memorised else []
    if memorised:
        copied = sum(max(0, b - max(a, start)) for a, b in spans)
        line += f" · {copied / max(new, 1):.0%} copied from the training text"
    return line, marked(text, start, spans)


def build(slots: dict[str, Slot], memorised: Memorised | None, book_note: str, visitor: gr.State | None = None) -> None:
    """The tab's controls, one panel per model (PER_ROW to a row), the visitor's model's, and its two events."""
    names = list(slots)
    with gr.Row():
        prompt = gr.Textbox("time traveller", label="Prompt", elem_id="prompt", scale=4)
        run = gr.Button("Generate", variant="primary", elem_id="generate", scale=1)
    with gr.Row():
        length = gr.Slider(1, MAX_LENGTH, 200, step=1, label="Length (characters)", elem_id="length")
        decoding = gr.Radio(["greedy", "sample"], value="sample", label="Decoding", elem_id="decoding")
        temperature = gr.Slider(0.05, 2.0, 0.8, step=0.05, label="Temperature", elem_id="temperature")
        top_k = gr.Slider(0, 100, 0, step=1, label="Top-k (0: off)", elem_id="top-k")
        top_p = gr.Slider(0.05, 1.0, 1.0, step=0.05, label="Top-p (1: off)", elem_id="top-p")
        seed = gr.Number(0, precision=0, label="Seed", elem_id="seed")
    shown = gr.CheckboxGroup(names, value=[n for n in names if n != REFERENCE], label="Models shown",
                             elem_id="shown")
    legend = ("<mark style='background:#f59e0b'>orange</mark>: at least 20 characters in a row that the "
              "training text contains verbatim (memorised)" if memorised else
              f"Memorised spans cannot be marked: the training text is not available ({book_note}).")
    gr.Markdown(legend)
    status = gr.Markdown(elem_id="sample-status")
    columns, infos, texts = [], [], []
    for row in range(0, len(names), PER_ROW):
        with gr.Row(equal_height=False):
            for name in names[row:row + PER_ROW]:
                with gr.Column(elem_id=f"panel-{name}", min_width=280, visible=name != REFERENCE) as column:
                    gr.Markdown(f"**{name}**  \n<small>{slots[name].source}</small>")
                    infos.append(gr.Markdown("" if slots[name].ok else f"⚠️ not loaded: {slots[name].error}",
                                             elem_id=f"info-{name}"))
                    texts.append(gr.HighlightedText(elem_id=f"sample-{name}", show_label=False, color_map=COLORS,
                                                    show_inline_category=False))
                columns.append(column)
    with gr.Column(elem_id="panel-yours", min_width=280):
        gr.Markdown("**your model**  \n<small>trained in the Train tab during this visit</small>")
        your_info = gr.Markdown(NO_MODEL_YET, elem_id="info-yours")
        your_text = gr.HighlightedText(elem_id="sample-yours", show_label=False, color_map=COLORS,
                                       show_inline_category=False)

    @runs_models
    def run_models(prompt, length, temperature, top_k, top_p, seed, shown, own: Slot | None):
        """Each model's panel as plain data, the visitor's model's last."""
        panels = [continuation(slots[name], prompt, length, temperature, top_k, top_p, seed, memorised)
                  if name in shown else ("", None) for name in names]
        if own is None:
            return panels + [(NO_MODEL_YET, None)]
        info, text = continuation(own, prompt, length, temperature, top_k, top_p, seed, memorised)
        return panels + [(f"**{own.name}**: {own.source}  \n{info}", text)]

    def sample(prompt, length, decoding, temperature, top_k, top_p, seed, shown, visitor=None):
        """Every shown model continues the same prompt with the same settings and seed."""
        prompt = check_text(prompt, "prompt")
        length = check_number(length, "length", 1, MAX_LENGTH)
        seed = check_number(seed, "seed", 0, 2**31 - 1)
        if not shown:
            raise refuse("No model is chosen: tick at least one under 'Models shown'.")
        temperature = 0.0 if decoding == "greedy" else \
            check_number(temperature, "temperature", 0.05, 2.0, integer=False)
        top_k = check_number(top_k, "top-k", 0, 100)
        top_p = check_number(top_p, "top-p", 0.05, 1.0, integer=False)
        tokenizers = [s.pretrained.tokenizer for s in slots.values() if s.ok]
        if tokenizers and not tokenizers[0].encode(prompt):
            raise refuse(f"The models read this prompt as nothing at all. {vocabulary_note(tokenizers, prompt)}")
        *panels, own = run_models(prompt, length, temperature, top_k, top_p, seed, shown, yours(visitor))
        return [vocabulary_note(tokenizers, prompt)] + [info for info, _ in panels] + [text for _, text in panels] \
            + list(own)

    # Progress and errors show on the status line: a refused input leaves the last answers in place. The
    # visitor's model comes last in the outputs, so the bundled models' keep their places in the API.
    gr.on([run.click, prompt.submit], sample,
          [prompt, length, decoding, temperature, top_k, top_p, seed, shown] + ([visitor] if visitor else []),
          [status, *infos, *texts, your_info, your_text], api_name="sample", concurrency_id="models",
          show_progress_on=status)
    shown.change(lambda chosen: [gr.Column(visible=name in chosen) for name in names], shown, columns,
                 api_name="show_models", queue=False)
