"""Model cards: the Hub's format (YAML metadata and a model-index with the metrics), the book's equations per
architecture, the recipe, the numbers, repeatable samples, and how to load; the same folder, the same card."""
import inspect
import textwrap

import pytest
from huggingface_hub import ModelCard

from zoo import create_model, list_models
from zoo.card import README, closest_recipe, equations, model_card, write_card
from zoo.checkpoint import load_json, load_model
from zoo.fit import fit, fit_ngram_run
from zoo.generate import generate
from zoo.models import BOOK, ConciseLM
from zoo.recipes import recipe_for
from zoo.train import Trainer

NETWORKS = [name for name in list_models() if name != "ngram"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory, small_corpus):
    """A GRU trained for 2 epochs (modern recipe, small) and the n-gram, as train_all leaves them."""
    out = tmp_path_factory.mktemp("cards")
    corpus = small_corpus
    recipe = recipe_for("modern", "gru-scratch", epochs=2, train_tokens=2000, batch_size=8, num_steps=20,
                        warmup_steps=2)
    model = create_model("gru-scratch", vocab_size=len(corpus.tokenizer), num_hiddens=16, dropout=recipe.dropout,
                         weight_drop=recipe.weight_drop)
    fit(Trainer(model, corpus.splits, recipe, corpus.tokenizer, "gru-scratch"), out / "gru-scratch", progress=False,
        log=None, data=corpus.source)
    fit_ngram_run(corpus, out / "ngram", max_order=5, tune=False)
    return out


def results(card: ModelCard) -> dict:
    return {(r.dataset_split, r.metric_type): r.metric_value for r in card.data.eval_results}


@pytest.mark.parametrize("name", ["gru-scratch", "ngram"])
def test_card_parses_and_carries_the_metrics(folders, name):
    path = write_card(folders / name, f"test-ns/rnn-zoo-{name}")
    card = ModelCard.load(path)                       # huggingface_hub's own parser
    metrics = load_json(folders / name / "config.json")["metrics"]
    assert card.data.library_name == "rnn-zoo" and card.data.license == "mit"
    assert card.data.pipeline_tag == "text-generation" and "d2l" in card.data.tags
    assert card.data.model_name == f"rnn-zoo-{name}"
    assert results(card) == {(split, "perplexity"): round(metrics[f"{key}_perplexity"], 4)
                             for split, key in (("train", "train"), ("validation", "valid"), ("test", "test"))} | {
        ("test", "bits-per-char"): round(metrics["test_bits_per_token"], 4)}
    [entry] = card.data.to_dict()["model-index"]      # what the Hub reads to show evaluation results
    assert entry["name"] == f"rnn-zoo-{name}" and len(entry["results"]) == 3
    assert all(r["dataset"]["type"] == "text" and "small.txt" in r["dataset"]["name"] for r in entry["results"])


def test_network_card_describes_the_model_training_numbers_and_loading(folders):
    text = model_card(folders / "gru-scratch", "test-ns/rnn-zoo-gru-scratch").text
    info = load_json(folders / "gru-scratch" / "config.json")
    m = info["metrics"]
    assert "D2L 9.1: the book's GRU from scratch" in text and "16 hidden units" in text
    assert r"(\mathbf{R}_t \odot \mathbf{H}_{t-1}) \mathbf{W}_{hh}" in text      # the book's reset-before form
    assert ("The **modern** recipe, changed: `warmup_steps`, `batch_size`, `num_steps`, `epochs`, `train_tokens`"
            in text and "| `epochs` | **2** |" in text)
    assert "| `optimizer` | adamw |" in text and "dropout 0.25" in text
    for label, key in (("train perplexity", "train_perplexity"), ("validation perplexity", "valid_perplexity"),
                       ("test perplexity", "test_perplexity"), ("test bits/char", "test_bits_per_token")):
        assert f"| {label} | {m[key]:.3f} |" in text
    assert f"| parameters | {m['parameters']:,d} |" in text and f"| device | {m['device']} |" in text
    pretrained = load_model(folders / "gru-scratch")
    greedy = generate(pretrained.model, pretrained.tokenizer, "time traveller", 200).texts[0]
    sampled = generate(pretrained.model, pretrained.tokenizer, "time traveller", 200, temperature=0.8, seed=1).texts[0]
    assert f"```text\n{greedy}\n```" in text and f"```text\n{sampled}\n```" in text and greedy != sampled
    assert 'load("test-ns/rnn-zoo-gru-scratch")' in text and 'load("weights/gru-scratch")' in text
    assert "python -m zoo sample test-ns/rnn-zoo-gru-scratch" in text
    assert "python -m zoo sample weights/gru-scratch" in text


def test_ngram_card_has_kneser_ney_and_no_training_recipe(folders):
    text = model_card(folders / "ngram").text
    order = load_json(folders / "ngram" / "config.json")["metrics"]["order"]
    assert "Kneser-Ney" in text and r"\gamma_k(h)" in text and f"| order (chosen on validation) | {order} |" in text
    assert "| setting | value |" not in text and "NAMESPACE/rnn-zoo-ngram" in text   # no repo id: a placeholder


def test_the_same_folder_gives_the_same_card(folders):
    """Cards are rebuilt on every run; a byte-identical card is what lets an unchanged model skip its push."""
    first = write_card(folders / "gru-scratch", "a/b").read_bytes()
    assert write_card(folders / "gru-scratch", "a/b").read_bytes() == first
    assert write_card(folders / "gru-scratch", "a/c").read_bytes() != first
    assert (folders / "gru-scratch" / README).read_bytes().startswith(b"---\n")


@pytest.mark.parametrize("name", NETWORKS)
def test_equations_are_the_cells_own(name):
    model = create_model(name)
    text = equations(model)
    assert text.count("$$") == 2 and all(line in text for line in model.cell.equations)
    assert f"```python\n{textwrap.dedent(inspect.getsource(model.cell.step))}```" in text   # the code that runs
    assert ("torch.nn." in text) == isinstance(model, ConciseLM) and r"\mathrm{softmax}" in text
    assert (r"^{(l)}" in text) == (model.config.num_layers > 1)


@pytest.mark.parametrize("name", [n for n in BOOK if n != "ngram"])
def test_the_books_cells_and_the_two_gru_forms(name):
    text = equations(create_model(name))
    has = {"reset": r"\mathbf{R}_t" in text, "cell": r"\mathbf{C}_t" in text,
           "book-gru": r"(\mathbf{R}_t \odot \mathbf{H}_{t-1})" in text, "torch-gru": r"\mathbf{b}_{hn}))" in text}
    assert has == {"reset": "gru" in name, "cell": "lstm" in name, "book-gru": name == "gru-scratch",
                   "torch-gru": name == "gru"}


def test_closest_recipe_names_the_preset_and_the_changes():
    assert closest_recipe("deep-lstm", recipe_for("book", "deep-lstm").to_dict()) == ("book", {})
    assert closest_recipe("lstm", recipe_for("modern", "lstm", epochs=3, seed=7).to_dict()) == (
        "modern", {"epochs": 3, "seed": 7})
