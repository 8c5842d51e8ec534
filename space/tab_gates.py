"""Inside the gates: for a GRU or an LSTM and a text, each gate's activation at every character, averaged
over the units and for a few single units, as a heatmap over the text."""
from __future__ import annotations

import gradio as gr
import torch
from device import runs_models
from inputs import check_number, check_text, refuse
from loader import Slot, one_line
from matplotlib.figure import Figure

from zoo.gates import gate_activations, gate_names

SHOWN = 120        # characters in the heatmap
TOP_UNITS = 4      # units shown when none are chosen: those whose gate varies most over the text
ABOUT = """The book claims that *reset gates capture short-term dependencies and update gates long-term ones*.
In its GRU, `H_t = Z * H_(t-1) + (1 - Z) * candidate_t` and `candidate_t = tanh(X_t W_xh + (R * H_(t-1)) W_hh + b_h)`:
an update gate Z near 1 carries the old state on (memory), a reset gate R near 0 makes the candidate ignore it
(a fresh start). In an LSTM a forget gate near 1 keeps the memory cell, the input gate lets new content in and the
output gate decides what of the cell the next character sees. Each column below is one character read."""
DEFAULT_TEXT = "the time traveller smiled and held up the little machine so that we could all see it"


def parse_units(units: str, hidden: int) -> list[int]:
    """Unit indices from '3, 17 42' (empty: none chosen), each in [0, hidden)."""
    try:
        chosen = [int(u) for u in units.replace(",", " ").split()]
    except ValueError:
        raise refuse(f"Units must be whole numbers separated by commas or spaces, not {units!r}.") from None
    if any(not 0 <= u < hidden for u in chosen):
        raise refuse(f"Units must be from 0 to {hidden - 1}: this model has {hidden} hidden units per layer.")
    return list(dict.fromkeys(chosen))


def heatmap(gates: dict[str, torch.Tensor], chars: list[str], units: list[int], title: str) -> Figure:
    """One panel per gate: rows are the mean over units and the chosen units, columns the characters read."""
    figure = Figure(figsize=(max(8.0, 0.11 * len(chars) + 2), 1.0 + 1.5 * len(gates)), layout="constrained")
    axes = figure.subplots(len(gates), 1, squeeze=False)[:, 0]
    for ax, (name, g) in zip(axes, gates.items()):                   # g: (T, h)
        shown = units or g.var(0).topk(min(TOP_UNITS, g.shape[1])).indices.tolist()
        rows = torch.cat([g.mean(1, keepdim=True), g[:, shown]], dim=1).T   # (1 + units, T)
        image = ax.imshow(rows.numpy(), aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
        ax.set_yticks(range(len(rows)), ["mean"] + [f"unit {u}" for u in shown], fontsize=8)
        ax.set_xticks(range(len(chars)), [c if c.strip() else "·" for c in chars], fontsize=7, family="monospace")
        ax.set_title(f"{name} gate: mean {g.mean():.2f} over {g.shape[1]} units", fontsize=9, loc="left")
    figure.colorbar(image, ax=list(axes), label="activation", shrink=0.9)
    figure.suptitle(title, fontsize=10)
    return figure


def build(slots: dict[str, Slot]) -> None:
    """Model, text, layer and units in; a note and the heatmap out."""
    gated = [name for name, s in slots.items() if s.ok and gate_names(s.pretrained.model)]
    gr.Markdown(ABOUT)
    with gr.Row():
        model = gr.Dropdown(gated, value=gated[0] if gated else None, label="Model (GRU or LSTM)",
                            elem_id="gates-model")
        layer = gr.Number(1, precision=0, label="Layer", elem_id="gates-layer")
        units = gr.Textbox("", label="Units (e.g. 3, 17; empty: the 4 that vary most)", elem_id="gates-units")
    text = gr.Textbox(DEFAULT_TEXT, label=f"Text (the first {SHOWN} characters are shown)", lines=2,
                      elem_id="gates-text")
    run = gr.Button("Show the gates", variant="primary", elem_id="gates-run")
    status = gr.Markdown(elem_id="gates-status")
    plot = gr.Plot(label="Gate activations", elem_id="gates-plot")

    @runs_models
    def activations(name, ids, layer):
        """{gate: (T, h)} of one layer on the CPU."""
        return {g: a[layer - 1] for g, a in gate_activations(slots[name].pretrained.model, ids).items()}

    def gates(name, text, layer, units):
        """The heatmap of one layer's gates of one model reading the text from a fresh state."""
        if name not in gated:
            raise refuse(f"Pick one of the GRU or LSTM models: {', '.join(gated) or 'none is loaded'}.")
        text = check_text(text, "text")
        pretrained = slots[name].pretrained
        config = pretrained.model.config
        layer = check_number(layer, "layer", 1, config.num_layers)
        chosen = parse_units(units or "", config.num_hiddens)
        ids = torch.tensor(pretrained.tokenizer.encode(text)[:SHOWN], dtype=torch.long)
        if len(ids) == 0:
            raise refuse("The model reads this text as nothing at all: give it some letters.")
        tokens = pretrained.tokenizer.split(text)
        note = f"Showing the first {SHOWN} of {len(tokens):,} characters." if len(tokens) > SHOWN else ""
        try:
            maps = activations(name, ids, layer)
        except Exception as e:   # the model failed: say so in its place, as the other tabs' panels do
            raise refuse(f"{name} failed: {one_line(e)}") from None
        figure = heatmap(maps, tokens[:SHOWN], chosen, f"{name}, layer {layer} of {config.num_layers}")
        return note, figure

    gr.on([run.click, text.submit], gates, [model, text, layer, units], [status, plot], api_name="gates",
          concurrency_id="models", show_progress_on=status)
