"""The model card of a model folder: the Hub's README.md, YAML metadata (with a `model-index` the Hub shows
as evaluation results) followed by what the model is, the book's equations it implements, how it was
trained, its numbers, a sample of its text and how to load it.

Everything comes from the folder itself (`config.json`, `metrics.json` and the weights, for the samples),
so a card can be rebuilt from any folder at any time, and the same folder always gives the same card.
"""
from __future__ import annotations

import inspect
import re
import textwrap
from dataclasses import fields
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from zoo.checkpoint import CONFIG, Pretrained, load_json, load_model
from zoo.data import BOOK_SHA1
from zoo.generate import generate
from zoo.models import ConciseLM, NGramLM, describe, list_models
from zoo.recipes import RECIPES, Recipe, recipe_for

README = "README.md"
LIBRARY = "rnn-zoo"
BOOK_CORPUS = "The Time Machine (H. G. Wells), the book's timemachine.txt"
PREFIX = "time traveller"
SAMPLE = dict(length=200, temperature=0.8, seed=1)   # the sampled text; the greedy one has the same length
D2L = "https://d2l.ai/chapter_"
BOOK_PAGES = {"8.5": "recurrent-neural-networks/rnn-scratch.html", "8.6": "recurrent-neural-networks/rnn-concise.html",
              "9.1": "recurrent-modern/gru.html", "9.2": "recurrent-modern/lstm.html",
              "9.3": "recurrent-modern/deep-rnn.html"}

# ---------------------------------------------------------------------------- the equations

OUTPUT = r"P(x_{t+1} \mid x_1, \dots, x_t) &= \mathrm{softmax}(\mathbf{H}_t \mathbf{W}_{hq} + \mathbf{b}_q)"
DEEP = (r"\mathbf{H}_t^{(l)} &= f_l(\mathbf{H}_t^{(l-1)}, \mathbf{H}_{t-1}^{(l)}), "
        r"\quad \mathbf{H}_t^{(0)} = \mathbf{X}_t")
KNESER_NEY = [
    r"p_k(w \mid h) &= \frac{c_k(hw) - D_k(c_k(hw)) + \gamma_k(h)\, p_{k-1}(w \mid h')}{c_k(h)}",
    r"\gamma_k(h) &= D_{k,1} N_1(h\bullet) + D_{k,2} N_2(h\bullet) + D_{k,3+} N_{3+}(h\bullet), \qquad p_0(w) = 1/V"]


def display(lines: list[str]) -> str:
    return "$$\n\\begin{aligned}\n" + " \\\\\n".join(lines) + "\n\\end{aligned}\n$$"


def book_section(name: str) -> str:
    """A link to the book's section that a registered model's docstring cites ("D2L 9.2: ..."), or ""."""
    section = re.match(r"D2L (\d\.\d)", describe(name)) if name in list_models() else None
    if not section or section[1] not in BOOK_PAGES:
        return ""
    return f"[D2L {section[1]}]({D2L}{BOOK_PAGES[section[1]]}), "


def equations(model) -> str:
    """The maths of a model, taken from the model itself: a network's cell gives its equations and the
    code that runs them (its `step`), with the notes that tie them to the weights."""
    if isinstance(model, NGramLM):
        return ("Interpolated modified Kneser-Ney (Chen & Goodman, 1998). For order k and history h (its last "
                "k-1 tokens; h' drops the oldest), with c_k the raw count at the top order and the continuation "
                "count N1+(.hw) below it:\n\n" + display(KNESER_NEY))
    c, cell = model.config, model.cell
    deep = c.num_layers > 1
    inputs = (f"an embedding of {c.embedding} dimensions of the token as inputs $\\mathbf{{X}}_t$" if c.embedding
              else "one-hot inputs $\\mathbf{X}_t$")
    text = [f"{book_section(c.name)}{inputs}, $\\sigma$ the logistic sigmoid, $\\odot$ the elementwise product:", "",
            display([*cell.equations, *([DEEP] if deep else []), OUTPUT]), "", inspect.cleandoc(cell.__doc__ or "")]
    if deep:
        text += ["", f"Each of the {c.num_layers} layers $l$ applies the equations above with its own weights to "
                     "the hidden states of the layer below (D2L 9.3); the output layer reads the top one."]
    if isinstance(model, ConciseLM):
        text += ["", f"The weights live in `torch.nn.{model.arch.upper()}` (`rnn.weight_ih_l0`, `rnn.weight_hh_l0`, "
                     "...) and `linear` (the output layer), exactly the parameters of the book's `RNNModel`: the "
                     "cell's `W_x`, `W_h` transposed, and `bias_ih + bias_hh` its `b`."]
    else:
        text += ["", f"Each layer's weights are the cell's `W_x`, `W_h` and `b` (`cells.0.W_x`, ...), each gate's "
                     f"block side by side so that one matmul computes all {cell.gates} of them, then the book's "
                     "output layer `W_hq`, `b_q`, with the book's initialisation."]
    if c.dropout or c.weight_drop:
        text += ["", f"Trained with dropout {c.dropout} on every layer's output and DropConnect {c.weight_drop} on the "
                     "recurrent weights $\\mathbf{W}_{h\\cdot}$ (both off at evaluation)."]
    code = textwrap.dedent(inspect.getsource(cell.step))
    what = (f"`torch.nn.{model.arch.upper()}` computes the maths of the cell's `{cell.__name__}.step`"
            if isinstance(model, ConciseLM) else
            f"What runs is the cell's `{cell.__name__}.step` (or an accelerator the tests prove equal to it)")
    return "\n".join(text + ["", f"{what}: one time step, whose input `XW` = $\\mathbf{{X}}_t \\mathbf{{W}}_x + "
                                  "\\mathbf{b}$ is computed for every step at once:", "", f"```python\n{code}```"])


# ---------------------------------------------------------------------------- the parts of the card

def repo_name(name: str, pattern: str = "rnn-zoo-{model}") -> str:
    """A model's Hub repo name (without the namespace)."""
    return pattern.format(model=name)


def closest_recipe(name: str, recipe: dict) -> tuple[str, dict]:
    """The preset ("book" | "modern") a recipe departs least from, and the settings that differ from it."""
    diffs = {}
    for preset in RECIPES:
        base = recipe_for(preset, name).to_dict()
        diffs[preset] = {k: v for k, v in recipe.items() if base.get(k) != v}
    preset = min(diffs, key=lambda p: len(diffs[p]))
    return preset, diffs[preset]


def recipe_table(name: str, recipe: dict) -> str:
    preset, changed = closest_recipe(name, recipe)
    helps = {f.name: f.metadata["help"] for f in fields(Recipe)}
    rows = [f"| `{k}` | {'**' if k in changed else ''}{v}{'**' if k in changed else ''} | {helps.get(k, '')} |"
            for k, v in recipe.items()]
    note = (f"changed: {', '.join(f'`{k}`' for k in changed)} (in bold)" if changed else "unchanged")
    return "\n".join([f"The **{preset}** recipe, {note}.", "", "| setting | value | meaning |", "|---|---|---|", *rows])


def unit(tokenizer: dict) -> str:
    return "word" if tokenizer["mode"] == "words" else "char"


def numbers_table(info: dict) -> str:
    m, per = info.get("metrics", {}), unit(info["tokenizer"])
    rows = [("train perplexity", m.get("train_perplexity")), ("validation perplexity", m.get("valid_perplexity")),
            ("test perplexity", m.get("test_perplexity")), (f"test bits/{per}", m.get("test_bits_per_token"))]
    if info["model"].get("arch") == "ngram":
        rows += [("order (chosen on validation)", m.get("order")),
                 ("stored n-grams", sum(info["model"].get("ngrams", [])))]
    else:
        rows += [("parameters", m.get("parameters")), ("training tokens/s (median epoch)", m.get("tokens_per_sec")),
                 ("epochs (best on validation)", f"{m.get('epochs')} ({m.get('best_epoch')})")]
    rows += [("training time", duration(m.get("train_seconds"))), ("device", m.get("device"))]
    return "\n".join(["| | |", "|---|---|", *(f"| {k} | {fmt(v)} |" for k, v in rows if v is not None)])


def fmt(value) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return f"{value:,d}" if isinstance(value, int) else f"{value:,.3f}" if value < 1000 else f"{value:,.0f}"


def duration(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    minutes, s = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {s:02d}s" if hours else f"{minutes}m {s:02d}s" if minutes else f"{seconds:.1f}s"


def samples(pretrained: Pretrained) -> str:
    """Greedy and seeded sampled continuations of PREFIX, generated on the CPU (repeatable)."""
    greedy = generate(pretrained.model, pretrained.tokenizer, PREFIX, SAMPLE["length"]).texts[0]
    sampled = generate(pretrained.model, pretrained.tokenizer, PREFIX, **SAMPLE).texts[0]
    return (f"Greedy (the book's `predict_ch8`), {SAMPLE['length']} tokens after \"{PREFIX}\":\n\n"
            f"```text\n{greedy}\n```\n\n"
            f"Sampled at temperature {SAMPLE['temperature']}, seed {SAMPLE['seed']}:\n\n```text\n{sampled}\n```")


def how_to_load(repo_id: str, folder_hint: str) -> str:
    return f"""With the `rnn-zoo` package (this project's `zoo`) installed:

```python
from zoo.hub import load
from zoo.generate import generate

pretrained = load("{repo_id}")     # or revision="..."; or a local folder: load("{folder_hint}")
print(generate(pretrained.model, pretrained.tokenizer, "{PREFIX}", 100, temperature=0.8, seed=1).texts[0])
```

```bash
python -m zoo sample {repo_id} --prefix "{PREFIX}" --length 100 --temperature 0.8 --seed 1
python -m zoo sample {folder_hint} --prefix "{PREFIX}"     # from a local folder
python -m zoo eval {repo_id} --text-file some.txt           # perplexity and bits/char of any text
```

The repo holds `model.safetensors` (weights), `config.json` (architecture, vocabulary, recipe, final metrics)
and `metrics.json` (per-epoch history, for networks); loading is strict (every tensor present, none extra)."""


def eval_results(info: dict, corpus: str) -> list[EvalResult]:
    """The metrics as model-index entries: perplexity on each split, and test bits per token."""
    m = info.get("metrics", {})
    task = dict(task_type="text-generation", task_name=f"{'Word' if unit(info['tokenizer']) == 'word' else 'Character'}"
                "-level language modeling", dataset_type="timemachine" if corpus == BOOK_CORPUS else "text",
                dataset_name=corpus)
    results = [EvalResult(**task, dataset_split=split, metric_type="perplexity", metric_name=f"{label} perplexity",
                          metric_value=round(m[key], 4))
               for split, label, key in (("train", "Train", "train_perplexity"),
                                         ("validation", "Validation", "valid_perplexity"),
                                         ("test", "Test", "test_perplexity")) if key in m]
    if "test_bits_per_token" in m:
        per = unit(info["tokenizer"])
        results.append(EvalResult(**task, dataset_split="test", metric_type=f"bits-per-{per}",
                                  metric_name=f"Test bits/{per}", metric_value=round(m["test_bits_per_token"], 4)))
    return results


# ---------------------------------------------------------------------------- the card

def summary(info: dict, net) -> tuple[str, str]:
    """A sentence on what the model is, and how it was trained (the recipe table, for a network)."""
    name, model = info["name"], info["model"]
    what = describe(name) if name in list_models() else ""
    if model.get("arch") == "ngram":
        by_order = info.get("metrics", {}).get("valid_perplexity_by_order", {})
        orders = ", ".join(f"{k}: {v:.3f}" for k, v in by_order.items())
        return (f"{what} Order {model['order']}, {model['vocab_size']} tokens.",
                "Counted from the training split (no gradient training); the order with the lowest validation "
                "perplexity is kept and its discounts are fitted to the validation split."
                + (f" Validation perplexity by order: {orders}." if orders else ""))
    layers, impl = model["num_layers"], "concise" if isinstance(net, ConciseLM) else "scratch"
    size = (f"{layers} layer{'s' if layers > 1 else ''} of {model['num_hiddens']} hidden units over "
            f"{model['vocab_size']} tokens, `{impl}` implementation")
    return f"{what} {size[0].upper()}{size[1:]}.", recipe_table(name, info.get("recipe", {}))


def corpus_name(info: dict) -> str:
    """What the model was trained on, from the `data` record of its config.json."""
    data = info.get("data") or {}
    if not data or data.get("sha1") == BOOK_SHA1:
        return BOOK_CORPUS
    return f"`{data['name']}` ({data['characters']:,} characters, sha1 {data['sha1'][:12]})"


def model_card(folder: str | Path, repo_id: str | None = None) -> ModelCard:
    """The card of a model folder; `repo_id` is where it lives on the Hub (a placeholder namespace if None)."""
    folder = Path(folder)
    info = load_json(folder / CONFIG)
    pretrained = load_model(folder, "cpu")
    corpus = corpus_name(info)
    name, tokenizer = info["name"], info["tokenizer"]
    repo_id = repo_id or f"NAMESPACE/{repo_name(name)}"
    tags = ["rnn-zoo", "d2l", "safetensors", f"{unit(tokenizer)}-level", "text-generation"]
    net = pretrained.model
    tags += (["n-gram", "kneser-ney"] if isinstance(net, NGramLM) else
             ["pytorch", "recurrent-neural-network", net.cell.__name__.removesuffix("Cell").lower(),
              "concise" if isinstance(net, ConciseLM) else "scratch"])
    data = ModelCardData(library_name=LIBRARY, license="mit", language="en", pipeline_tag="text-generation",
                         tags=tags, model_name=repo_id.split("/")[-1], eval_results=eval_results(info, corpus))
    what, training = summary(info, net)
    metrics = info.get("metrics", {})
    body = f"""
# {repo_id.split("/")[-1]}

**`{name}`**: {what} A {unit(tokenizer)}-level language model, part of RNN Zoo: the recurrent language models
of *Dive into Deep Learning* (sections 8.5-9.3), written from the book's equations, trained by one shared
trainer and compared on held-out text with a Kneser-Ney n-gram as the line to beat.
Tokenizer: `{tokenizer["mode"]}` ({len(tokenizer["tokens"])} tokens). Data: {corpus}, split contiguously 90/5/5
into train / validation / test.

## The equations

{equations(pretrained.model)}

## Training

{training}

Trained on `{metrics.get("device", "?")}` in {duration(metrics.get("train_seconds")) or "?"}.

## Results

Exact perplexity, token-weighted over each whole split with the state carried from its first token to its last.

{numbers_table(info)}

## Samples

{samples(pretrained)}

## How to load

{how_to_load(repo_id, f"weights/{name}")}
"""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")


def write_card(folder: str | Path, repo_id: str | None = None) -> Path:
    """Write the folder's README.md (replacing any) and return its path."""
    path = Path(folder) / README
    model_card(folder, repo_id).save(path)
    return path
