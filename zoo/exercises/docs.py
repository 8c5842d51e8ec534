"""The exercises' page: docs/exercises.md written from the results in docs/exercises/, and their plots."""
from __future__ import annotations

import json
from pathlib import Path

from zoo.exercises.catalog import EXERCISES
from zoo.exercises.runs import cell, mean
from zoo.report import log_axis

TITLE = "The book's exercises, answered by experiment"


def plot(results: dict, path: Path) -> Path:
    """Validation perplexity per epoch of every run (one line per seed), on a log scale."""
    from matplotlib.figure import Figure   # no pyplot: no global figure list (Agg renders)

    fig = Figure(figsize=(7.5, 4.2), dpi=100)
    ax = fig.subplots()
    for i, (label, seeds) in enumerate(results["runs"].items()):
        for j, r in enumerate(seeds):
            points = [(h["epoch"], h["valid_perplexity"]) for h in r["history"] if h.get("valid_perplexity")]
            if points:
                ax.plot(*zip(*points), color=f"C{i}", alpha=1 if j == 0 else 0.45, label=label if j == 0 else None)
    log_axis(ax)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation perplexity")
    ax.set_title(f"{results['id']}: {results['question'][:70]}" + ("..." if len(results["question"]) > 70 else ""),
                 fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})
    return path


def runs_table(results: dict) -> str:
    """Per run, mean ± half the range over its seeds: the best-validation weights' perplexities, the running
    training perplexity of the last epoch (the book's measure), speed, size, time, how it stopped."""
    other = any("other_test_perplexity" in r for seeds in results["runs"].values() for r in seeds)
    head = ["run", "model", "valid ppl", "test ppl"] + (["the other author's test ppl"] if other else []) + [
        "train ppl", "last epoch's train ppl", "tokens/s", "parameters", "seconds", "epochs", "stopped by"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, seeds in results["runs"].items():
        speed = mean(seeds, "tokens_per_sec")
        stopped = ", ".join(sorted({r["stopped_by"] for r in seeds}))
        lines.append("| " + " | ".join([
            label, f"`{seeds[0]['model']}`", cell(seeds, "valid_perplexity"), cell(seeds, "test_perplexity")]
            + ([cell(seeds, "other_test_perplexity")] if other else []) + [
            cell(seeds, "train_perplexity"), cell(seeds, "final_train_perplexity"),
            f"{speed / 1e3:.0f}k" if speed else "-", f"{seeds[0]['parameters']:,}",
            f"{mean(seeds, 'seconds'):.0f}", f"{mean(seeds, 'epochs'):.0f}", stopped]) + " |")
    return "\n".join(lines)


def measured_table(results: dict) -> str:
    """The table of an exercise that measures something of its own."""
    m = results["measured"]
    if results["id"] == "8.5.4":
        lines = ["| alpha | temperature | distinct 4-grams | words of the book | sample |", "|---|---|---|---|---|"]
        for alpha, r in m["rows"].items():
            sample = r["sample"][:90].replace("|", "/")
            lines.append(f"| {alpha} | {r['temperature']:.2f} | {r['distinct_4grams']:.0%} | {r['book_words']:.0%} "
                         f"| `{sample}` |")
        return "\n".join(lines)
    if results["id"] == "9.1.1":
        g = m["gates_by_step"]
        return "\n".join(["| step t | " + " | ".join(str(t) for t in range(len(g["update"]))) + " |",
                          "|---|" + "---|" * len(g["update"]),
                          "| update gate Z | " + " | ".join(f"{z:.2f}" for z in g["update"]) + " |",
                          "| reset gate R | " + " | ".join(f"{r:.2f}" for r in g["reset"]) + " |",
                          "", f"Copy task: {m['vocab']} tokens, sequences of {m['length']}, hidden {m['hidden']}, "
                          f"{m['steps']} steps; accuracy on the later steps {m['accuracy']:.1%}."])
    if results["id"] == "9.2.3":
        rows = m["rows"]
        keys = sorted({k for r in rows.values() for k in r if k.startswith(("train_", "infer_"))})
        head = ["model", "gate blocks", "parameters", "FLOPs/token"] + [k.replace("_", " (") + ")" for k in keys]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for name, r in rows.items():
            lines.append("| " + " | ".join([f"`{name}`", str(r["gates"]), f"{r['parameters']:,}",
                                            f"{r['flops_per_token']:,}"]
                                           + [f"{r[k] / 1e3:.1f}k" if k in r else "-" for k in keys]) + " |")
        s = m["sizes"]
        return "\n".join(lines) + (f"\n\nTokens/s per backend: training is forward + backward of one layer at batch "
                                   f"{s['batch']} x {s['steps']} steps; inference one step at batch 1.")
    return ""


def section(results: dict, folder: str | None) -> str:
    """An exercise's markdown: question, what ran, its tables, the plot (linked from `folder`; None: left out
    for the page that shows it itself) and the answer."""
    head = f"## {results['id']}: {results['question']}"
    if not results.get("answer"):
        return f"{head}\n\n*{results['section']}.* Not run: it needs {results['needs']}.\n"
    setup = results["setup"]
    trained = [r for seeds in results.get("runs", {}).values() for r in seeds]
    cost = (f"{len(trained)} training runs of at most {setup['budget']:g} s, {setup['jobs']} at a time, "
            f"{sum(r['seconds'] for r in trained) / 60:.1f} minutes of training in all" if trained
            else f"{results['seconds']:.0f} s")
    what = f"`{results['command']}`: on {results['machine']}, {results['date']}; {cost}"
    parts = [head, "", f"*{results['section']}.* {what}." + (" **Smoke run: tiny sizes, not an answer.**"
                                                              if setup["smoke"] else "")]
    if results.get("runs"):
        parts += ["", runs_table(results)]
        if folder:
            parts += ["", f"![{results['id']}]({folder}/{results['id']}.png)"]
    if results.get("measured"):
        parts += ["", measured_table(results)]
    parts += ["", f"**Answer.** {results['answer']}"]
    if results.get("needs"):
        parts += ["", f"*{results['needs']}*"]
    if results.get("agreement"):
        parts += ["", f"**The book:** {next(e.expectation for e in EXERCISES if e.id == results['id'])} "
                      f"**Measured:** {results['agreement']}"]
    return "\n".join(parts) + "\n"


def results(out: str | Path) -> dict[str, dict]:
    """Every exercise's results found in the folder OUT, by id; one without results has its question only."""
    out = Path(out)
    return {e.id: json.loads((out / f"{e.id}.json").read_text()) if (out / f"{e.id}.json").is_file() else
            {"id": e.id, "question": e.question, "section": e.section, "needs": e.needs, "answer": ""}
            for e in EXERCISES}


def write_docs(out: str | Path) -> Path:
    """OUT.md beside the folder OUT: every exercise, its results where OUT holds them."""
    out = Path(out)
    found = results(out)
    contents = [f"- [{r['id']}](#{anchor(r)}) {r['question']}" for r in found.values()]
    body = [section(found[e.id], out.name) for e in EXERCISES]
    text = (f"# {TITLE}\n\nEvery exercise of D2L 8.5-9.3 (the d2l 0.17 edition's numbering) that an experiment can "
            "answer, run with this project's shared trainer: the command, what it ran, the numbers, and an answer "
            "that says only what they show. `python -m zoo exercise ID` reruns one and rewrites this page; "
            "`python -m zoo exercise list` lists them.\n\n" + "\n".join(contents) + "\n\n" + "\n".join(body))
    page = out.parent / f"{out.name}.md"
    page.write_text(text, encoding="utf-8")
    return page


def anchor(results: dict) -> str:
    """GitHub's anchor of a section's heading."""
    heading = f"{results['id']}: {results['question']}".lower()
    return "".join(c for c in heading.replace(" ", "-") if c.isalnum() or c in "-_")
