"""The comparison of a folder of model folders: `REPORT.md` (one table, the n-gram as the line to beat) and
PNG plots of validation perplexity per epoch and against wall-clock time.

It reads only what the model folders hold (`config.json` metrics, `metrics.json` history), so it can be
rebuilt at any time from whatever folders exist.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from zoo.card import duration, fmt, unit
from zoo.checkpoint import CONFIG, CheckpointError, load_json
from zoo.fit import METRICS

REPORT = "REPORT.md"
BY_EPOCH, BY_TIME = "valid_perplexity_by_epoch.png", "valid_perplexity_by_time.png"
BASELINE = "ngram"
TICKS = [m * 10 ** e for e in range(-1, 4) for m in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8)]   # on the log axis


@dataclass
class Row:
    """One model folder's final numbers and validation curve."""
    name: str
    metrics: dict
    unit: str = "char"
    history: list[dict] = field(default_factory=list)   # per-epoch logs; [] for the n-gram
    ngrams: int = 0                                      # what the n-gram stores instead of parameters

    def get(self, key: str):
        return self.metrics.get(key)


def collect(out: str | Path) -> list[Row]:
    """Every finished model folder under `out` (one whose config.json holds metrics), best validation first."""
    rows = []
    for config in sorted(Path(out).glob(f"*/{CONFIG}")):
        try:
            info = load_json(config)
        except CheckpointError:
            continue
        if "metrics" not in info:
            continue
        history_file = config.parent / METRICS
        history = load_json(history_file).get("history", []) if history_file.is_file() else []
        rows.append(Row(info.get("name", config.parent.name), info["metrics"], unit(info["tokenizer"]), history,
                        sum(info["model"].get("ngrams", []))))
    return sorted(rows, key=lambda r: r.get("valid_perplexity") or math.inf)


def table(rows: list[Row]) -> str:
    """The markdown comparison table; the n-gram's line is marked as the line to beat."""
    per = rows[0].unit if rows else "char"
    head = ["model", "parameters", "train ppl", "valid ppl", "test ppl", f"test bits/{per}", "tokens/s",
            "training time", "device"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        name = f"**{r.name}** (line to beat)" if r.name == BASELINE else r.name
        size = f"{r.ngrams:,d} n-grams" if r.ngrams else fmt(r.get("parameters"))
        cells = [name, size, fmt(r.get("train_perplexity")), fmt(r.get("valid_perplexity")),
                 fmt(r.get("test_perplexity")), fmt(r.get("test_bits_per_token")),
                 fmt(r.get("tokens_per_sec")) if r.get("tokens_per_sec") else "-",
                 duration(r.get("train_seconds")) or "-", r.get("device") or "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdict(rows: list[Row]) -> str:
    """Which networks beat the n-gram on test perplexity."""
    base = next((r for r in rows if r.name == BASELINE), None)
    nets = [r for r in rows if r.name != BASELINE and r.get("test_perplexity") is not None]
    if base is None or not nets:
        return "No n-gram to compare with." if base is None else "No networks yet."
    better = [r.name for r in nets if r.get("test_perplexity") < base.get("test_perplexity")]
    return (f"{len(better)} of {len(nets)} networks beat the n-gram's test perplexity "
            f"({fmt(base.get('test_perplexity'))})" + (f": {', '.join(better)}." if better else "."))


def plot(rows: list[Row], x: str, path: Path) -> Path:
    """Validation perplexity against `x` ("epoch" or "elapsed") for every model; the n-gram as a line."""
    from matplotlib.figure import Figure   # no pyplot: no global backend or figure list to manage (Agg renders)
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(8, 5), dpi=100)
    ax = fig.subplots()
    for r in rows:
        points = [(h[x], h["valid_perplexity"]) for h in r.history if h.get("valid_perplexity")]
        if points:
            ax.plot(*zip(*points), marker="." if len(points) < 30 else None, label=r.name)
        elif r.name == BASELINE and r.get("valid_perplexity"):
            ax.axhline(r.get("valid_perplexity"), color="black", linestyle="--", label=f"{r.name} (line to beat)")
    log_axis(ax)
    if x == "epoch":
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch" if x == "epoch" else "wall-clock training time (s)")
    ax.set_ylabel("validation perplexity")
    ax.set_title("Validation perplexity " + ("per epoch" if x == "epoch" else "against training time"))
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})   # no version stamp: the same numbers give the same file
    return path


def log_axis(ax) -> None:
    """A log-scale y axis labelled with plain numbers (3, 4, 5, 6, 8, 10) instead of powers of ten."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    ax.set_yscale("log")
    low, high = ax.get_ylim()
    ax.yaxis.set_major_locator(FixedLocator([t for t in TICKS if low <= t <= high]))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def write_report(out: str | Path, title: str = "RNN Zoo: the comparison") -> Path:
    """Write REPORT.md and the two plots into `out` from its model folders; return the report's path."""
    out = Path(out)
    rows = collect(out)
    plot(rows, "epoch", out / BY_EPOCH)
    plot(rows, "elapsed", out / BY_TIME)
    per = rows[0].unit if rows else "char"
    text = f"""# {title}

Exact perplexity on each whole split (token-weighted, state carried), sorted by validation perplexity;
bits/{per} on the test split; tokens/s is the median training epoch's throughput. Each model's folder holds
its card (`README.md`), weights and per-epoch history.

{table(rows)}

{verdict(rows)}

![validation perplexity per epoch]({BY_EPOCH})

![validation perplexity against training time]({BY_TIME})
"""
    path = out / REPORT
    path.write_text(text, encoding="utf-8")
    return path
