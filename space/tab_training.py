"""Training: every model's training and validation perplexity per epoch on one plot, and a table of what
its folder records (size, training cost, held-out perplexity)."""
from __future__ import annotations

import gradio as gr
import pandas as pd
from loader import Slot
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


def curves(slots: dict[str, Slot]) -> Figure:
    """Perplexity per epoch, one colour per model: solid validation, dashed training; the n-gram dotted."""
    figure = Figure(figsize=(10, 5), layout="constrained")
    ax = figure.subplots()
    for i, (name, slot) in enumerate(slots.items()):
        epochs = [h for h in slot.history if h.get("end_of_epoch", True)]
        if epochs:
            ax.plot([h["epoch"] for h in epochs], [h["train_perplexity"] for h in epochs],
                    color=f"C{i}", linestyle="--", alpha=0.6)
            valid = [(h["epoch"], h["valid_perplexity"]) for h in epochs if h["valid_perplexity"] is not None]
            ax.plot(*zip(*valid), color=f"C{i}", label=name)
        elif slot.ok and "valid_perplexity" in slot.pretrained.info.get("metrics", {}):
            ax.axhline(slot.pretrained.info["metrics"]["valid_perplexity"], color="black", linestyle=":",
                       label=f"{name} (validation; counted, not trained)")
    ax.set(yscale="log", xlabel="epoch", ylabel="perplexity",
           title="Validation (solid) and training (dashed) perplexity per epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, ncol=2)
    return figure


COLUMNS = ["model", "parameters", "hidden", "layers", "epochs", "training time (s)", "tokens/s",
           "valid perplexity", "test perplexity"]


def row(name: str, slot: Slot) -> dict:
    """One line of the table, from the model itself and the metrics its config.json records."""
    if not slot.ok:
        return {**dict.fromkeys(COLUMNS, ""), "model": name, "parameters": "not loaded"}
    model, metrics = slot.pretrained.model, slot.pretrained.info.get("metrics", {})
    config = model.config
    counted = hasattr(config, "order")      # the n-gram: counts, an order, no hidden layer
    return {
        "model": name,
        "parameters": f"{sum(config.ngrams):,} n-grams" if counted else
                      f"{sum(p.numel() for p in model.parameters()):,}",
        "hidden": "" if counted else config.num_hiddens,
        "layers": f"order {config.order}" if counted else config.num_layers,
        "epochs": metrics.get("epochs", ""),
        "training time (s)": round(metrics["train_seconds"], 1) if "train_seconds" in metrics else "",
        "tokens/s": f"{metrics['tokens_per_sec']:,.0f}" if "tokens_per_sec" in metrics else "",
        "valid perplexity": round(metrics["valid_perplexity"], 3) if "valid_perplexity" in metrics else "",
        "test perplexity": round(metrics["test_perplexity"], 3) if "test_perplexity" in metrics else "",
    }


def training(slots: dict[str, Slot]) -> tuple[Figure, pd.DataFrame]:
    """The plot and the table for the models as they are now."""
    return curves(slots), pd.DataFrame([row(name, slot) for name, slot in slots.items()], columns=COLUMNS)


def build(slots: dict[str, Slot]) -> None:
    """The plot and the table, drawn at start-up; Refresh draws them again from the models loaded now."""
    plot_value, table_value = training(slots)
    plot = gr.Plot(plot_value, label="Perplexity per epoch", elem_id="training-plot")
    table = gr.Dataframe(table_value, label="The models", elem_id="training-table", interactive=False)
    refresh = gr.Button("Refresh", elem_id="training-refresh")
    refresh.click(lambda: training(slots), None, [plot, table], api_name="training", queue=False)
