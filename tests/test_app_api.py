"""The app's API through gradio_client against the launched app: every tab's endpoint, bad inputs, seeds,
a model that fails to load, and where the models come from (the Hub, or the bundled weights)."""
import importlib.util
import json
import math
import sys
import time
from pathlib import Path

import gradio
import pytest
import torch
import yaml
from app_fixtures import CORRUPTED, SPACE
from gradio_client import Client
from gradio_client.exceptions import AppError
from huggingface_hub import constants, create_repo, upload_folder

from zoo import create_model
from zoo.card import repo_name
from zoo.checkpoint import load_json, load_model, save_model
from zoo.evaluate import score
from zoo.hub import hub_reachable
from zoo.models import BOOK

if str(SPACE) not in sys.path:
    sys.path.insert(0, str(SPACE))

from book import Memorised  # noqa: E402
from loader import Pin, Slot, hub_pins, load_slot, load_zoo  # noqa: E402
from tab_sample import marked  # noqa: E402

NETWORKS = [name for name in BOOK if name not in ("ngram", CORRUPTED)]
_spec = importlib.util.spec_from_file_location("pin_space", SPACE.parent / "scripts" / "pin_space.py")
pin_space = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pin_space)
SETTINGS = dict(length=200, decoding="sample", temperature=0.8, top_k=0, top_p=1.0, seed=1)


@pytest.fixture(scope="module")
def client(app):
    return Client(app.url, verbose=False)


def sample(client, prompt="time traveller", shown=None, **settings):
    s = {**SETTINGS, **settings}
    out = client.predict(prompt, s["length"], s["decoding"], s["temperature"], s["top_k"], s["top_p"], s["seed"],
                         BOOK if shown is None else shown, api_name="/sample")
    n = len(BOOK)
    status, infos, texts = out[0], dict(zip(BOOK, out[1:n + 1])), dict(zip(BOOK, out[n + 1:]))
    return status, infos, texts


def joined(pieces) -> str:
    """The panel's text, a sampled <unk> as one character."""
    return "".join(piece["token"] for piece in pieces or []).replace("<unk>", "?")


def test_every_action_is_a_named_endpoint(client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert set(endpoints) == {"/sample", "/show_models", "/perplexity", "/example", "/training", "/gates",
                              "/train", "/stop_training", "/exercise", "/exercise_to_train"}


# ---------------------------------------------------------------------------- sample side by side

def test_every_model_answers_the_prompt_in_its_panel(client):
    status, infos, texts = sample(client)
    for name in NETWORKS + ["ngram"]:
        text = joined(texts[name])
        assert text.startswith("time traveller") and len(text) == len("time traveller") + 200, name
        assert texts[name][0] == {"token": "time traveller", "class_or_confidence": "prompt"}
        assert " ms · " in infos[name] and "chars/s" in infos[name] and "copied" in infos[name]
    assert texts[CORRUPTED] is None
    assert "not loaded" in infos[CORRUPTED] and "corrupt or truncated" in infos[CORRUPTED]
    assert status == ""


def test_the_same_seed_gives_the_same_text(client):
    first, second, other = (sample(client, seed=seed)[2] for seed in (7, 7, 8))
    assert all(joined(first[n]) == joined(second[n]) for n in NETWORKS)
    assert any(joined(first[n]) != joined(other[n]) for n in NETWORKS)
    greedy = [sample(client, decoding="greedy", seed=seed)[2] for seed in (1, 2)]
    assert all(joined(greedy[0][n]) == joined(greedy[1][n]) for n in NETWORKS)


def test_only_the_chosen_models_run(client):
    _, infos, texts = sample(client, shown=["gru", "ngram"], length=30)
    assert {n for n in BOOK if texts[n]} == {"gru", "ngram"}
    assert {n for n in BOOK if infos[n]} == {"gru", "ngram"}


def test_spans_copied_from_the_training_text_are_marked(client, corpus):
    _, _, texts = sample(client, prompt="the time traveller", decoding="greedy", shown=["ngram"])
    pieces = texts["ngram"]
    copied = [p["token"] for p in pieces if p["class_or_confidence"] == "copied"]
    assert copied, "the n-gram's greedy continuation repeats the book"
    train = corpus.tokenizer.decode(corpus.splits.train)
    text = joined(texts["ngram"])
    for span in copied:                       # each marked piece ends a 20-character run found in training
        end = text.index(span) + len(span)
        assert text[end - 20:end] in train


def test_memorised_spans_are_maximal_and_marked_after_the_prompt():
    memory = Memorised("abcdefghijklmnopqrstuvwxyz" * 2, span=5)
    text = "xx" + "cdefghij" + "!!" + "klmno" + "yy"
    assert memory.spans(text) == [(2, 10), (12, 17)]
    assert marked(text, 4, memory.spans(text)) == [
        ("xxcd", "prompt"), ("efghij", "copied"), ("!!", None), ("klmno", "copied"), ("yy", None)]
    # unmarked text comes word by word, so that the page wraps it like prose around the marked pieces
    assert marked("the time one two", 8, []) == [("the time", "prompt"), (" ", None), ("one ", None), ("two", None)]


@pytest.mark.parametrize("prompt, settings, message", [
    ("", {}, "prompt is empty"),
    ("   \n ", {}, "prompt is empty"),
    ("a" * 10_001, {}, "limit is 10,000"),
    ("time", {"length": 0}, "Value 0 is less than minimum value 1"),              # Gradio checks the sliders
    ("time", {"length": 5000}, "Value 5000 is greater than maximum value 2000"),
    ("time", {"length": 2.5}, "length must be a whole number"),
    ("time", {"seed": -1}, "seed must be a whole number from 0 to 2147483647"),
    ("time", {"temperature": 0}, "less than minimum value 0.05"),
    ("time", {"top_p": 0}, "less than minimum value 0.05"),
    ("time", {"decoding": "beam"}, "not in the list of choices"),
    ("\x00\x01\x02binary\x7f", {}, "looks like binary data"),
    ("1895 !!! 42", {}, "read this prompt as nothing at all"),
])
def test_bad_sampling_input_gets_a_clear_message(client, prompt, settings, message):
    with pytest.raises(AppError, match=message):
        sample(client, prompt, **settings)


def test_no_model_chosen_gets_a_clear_message_and_the_page_still_works(client):
    with pytest.raises(AppError, match="No model is chosen"):
        sample(client, shown=[])
    assert joined(sample(client, shown=["gru"], length=10)[2]["gru"])


def test_non_ascii_prompt_is_read_and_the_page_says_how(client):
    status, _, texts = sample(client, prompt="Café in Zürich, 1895!", length=20)
    assert "'é'" in status and "'ü'" in status and "'1'" in status
    assert joined(texts["gru"]).startswith("caf in z rich")


# ---------------------------------------------------------------------------- perplexity

def perplexity(client, text):
    out = client.predict(text, api_name="/perplexity")
    return out[0], out[1], out[2], dict(zip(BOOK, out[3:]))


def test_perplexity_table_chart_and_coloured_text(client, app):
    text = "It was the best of times, it was the worst of times; the time traveller smiled."
    status, table, chart, coloured = perplexity(client, text)
    rows = {row[0]: dict(zip(table["headers"], row)) for row in table["data"]}
    assert set(rows) == set(NETWORKS) | {"ngram"}
    perplexities = [row[1] for row in table["data"]]
    assert perplexities == sorted(perplexities)
    for name in rows:                              # the table holds the library's exact numbers
        pretrained = app.module.slots[name].pretrained
        expected = score(pretrained.model, torch.tensor(pretrained.tokenizer.encode(text)))
        assert rows[name]["perplexity"] == pytest.approx(expected.perplexity, abs=1e-3)
        assert rows[name]["bits/char"] == pytest.approx(math.log2(expected.perplexity), abs=1e-3)
        assert rows[name]["characters scored"] == len(pretrained.tokenizer.encode(text)) - 1
        scores = [p["class_or_confidence"] for p in coloured[name]["value"]]
        assert all(0 <= s <= 1 for s in scores) and max(scores) > 0
        assert coloured[name]["label"].startswith(f"{name}: perplexity ")
    assert chart["type"] == "matplotlib" and chart["plot"].startswith("data:image/")
    assert coloured[CORRUPTED]["label"] == f"{CORRUPTED}: no score"
    assert f"{CORRUPTED}: not loaded" in status and "',' ';' '.'" in status


def test_a_long_text_is_scored_whole_and_coloured_in_part(client):
    status, table, _, coloured = perplexity(client, "the time traveller smiled " * 300)
    assert {row[3] for row in table["data"]} == {len("the time traveller smiled " * 300) - 2}
    assert len(coloured["gru"]["value"]) == 2000 and "colours stop after 2,000 characters" in status


def test_perplexity_of_bad_text_gets_a_clear_message(client):
    for text, message in [("", "text is empty"), ("x" * 10_001, "limit is 10,000"),
                          ("ab\x00\x00cd", "binary"), ("a", "No model could score this text")]:
        with pytest.raises(AppError, match=message):
            perplexity(client, text)


def test_examples_fill_the_text_box(client, corpus):
    passage = client.predict("The Time Machine, held out (test split)", api_name="/example")
    assert len(passage) > 500 and passage in corpus.tokenizer.decode(corpus.splits.test)
    assert client.predict("A Tale of Two Cities, Charles Dickens (1859, public domain)",
                          api_name="/example").startswith("It was the best of times")
    _, table, _, _ = perplexity(client, passage)
    assert {row[0] for row in table["data"]} == set(NETWORKS) | {"ngram"}


# ---------------------------------------------------------------------------- training and gates

def test_training_plot_and_table(client, app):
    plot, table = client.predict(api_name="/training")
    assert plot["type"] == "matplotlib"
    rows = {row[0]: dict(zip(table["headers"], row)) for row in table["data"]}
    assert list(rows) == BOOK
    gru = app.module.slots["gru"].pretrained
    assert rows["gru"]["parameters"] == f"{sum(p.numel() for p in gru.model.parameters()):,}"
    assert rows["gru"]["hidden"] == 32 and rows["deep-lstm"]["layers"] == 2 and rows["gru"]["epochs"] == 3
    assert rows["gru"]["test perplexity"] == pytest.approx(gru.info["metrics"]["test_perplexity"], abs=1e-3)
    assert rows["ngram"]["layers"].startswith("order ")
    assert rows[CORRUPTED]["parameters"] == "not loaded"


@pytest.mark.parametrize("model, layer, units", [("gru", 1, ""), ("lstm-scratch", 1, "0, 3 31"), ("deep-lstm", 2, "")])
def test_gates_heatmap(client, model, layer, units):
    text = "the time traveller " * 10
    note, plot = client.predict(model, text, layer, units, api_name="/gates")
    assert plot["type"] == "matplotlib" and note == f"Showing the first 120 of {len(text.strip())} characters."
    assert client.predict(model, "the time traveller", layer, units, api_name="/gates")[0] == ""


@pytest.mark.parametrize("model, layer, units, message", [
    ("rnn", 1, "", "not in the list of choices"),
    (CORRUPTED, 1, "", "not in the list of choices"),
    ("gru", 2, "", "layer must be a whole number from 1 to 1"),
    ("gru", 1, "32", "Units must be from 0 to 31"),
    ("gru", 1, "three", "Units must be whole numbers"),
])
def test_gates_bad_input_gets_a_clear_message(client, model, layer, units, message):
    with pytest.raises(AppError, match=message):
        client.predict(model, "the time traveller", layer, units, api_name="/gates")


# ---------------------------------------------------------------------------- where the models come from

def test_the_space_card_lists_the_models_the_app_loads_and_pins_them(app):
    card = yaml.safe_load((SPACE / "README.md").read_text(encoding="utf-8").split("---")[1])
    assert card["sdk"] == "gradio" and card["sdk_version"] == gradio.__version__
    assert (SPACE / card["app_file"]).is_file()
    pins = app.module.PINS
    assert card.get("models", []) == [pin.repo for pin in pins.values()]
    assert all(pin.commit for pin in pins.values())                      # nothing from the Hub unpinned
    bundled = [name for name in BOOK if repo_name(name) not in pins]
    assert all("bundled weights" in app.module.slots[name].source for name in bundled)


def test_corrupted_folder_fails_in_its_own_slot_only(app):
    slots = app.module.slots
    assert not slots[CORRUPTED].ok and "corrupt or truncated" in slots[CORRUPTED].error
    assert all(slots[name].ok for name in NETWORKS + ["ngram"])


def test_a_page_without_any_model_still_builds(app):
    slots = {name: Slot(name, "nowhere", error="missing model.safetensors") for name in BOOK}
    demo = app.module.build_demo(slots)
    assert "0 of 9 models loaded" in demo.config["components"][0]["props"]["value"]


def test_offline_start_falls_back_to_the_bundled_weights_at_once(monkeypatch, tmp_path, app_weights):
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")     # nothing listens on port 9
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    hub_reachable.cache_clear()
    pins = {repo_name(name): Pin(f"ns/{repo_name(name)}", "a" * 40) for name in BOOK}
    started = time.perf_counter()
    slots = load_zoo(BOOK, pins, app_weights, torch.device("cpu"))
    assert time.perf_counter() - started < 5
    assert all(s.ok for name, s in slots.items() if name != CORRUPTED)
    assert "bundled weights" in slots["gru"].source and "cannot be reached" in slots["gru"].source


def pin_to_the_hub(tmp_path, *args) -> dict:
    """space/README.md copied and pinned by scripts/pin_space.py, as a deployment does; its pins."""
    readme = tmp_path / "README.md"
    readme.write_text((SPACE / "README.md").read_text(encoding="utf-8"), encoding="utf-8")
    assert pin_space.main([*args, "--readme", str(readme)]) == 0
    return hub_pins(readme)


def test_only_a_pinned_commit_is_loaded_from_the_hub(local_hub, app_weights, tmp_path, corpus):
    """The README pins gru at its commit: the app loads that commit, not a newer one pushed later, and loads
    the other models (no repo, or listed without a commit) from the bundled weights."""
    create_repo("test-ns/rnn-zoo-gru")
    upload_folder(repo_id="test-ns/rnn-zoo-gru", folder_path=app_weights / "gru")
    pins = pin_to_the_hub(tmp_path, "test-ns")
    commit = local_hub.commits("test-ns/rnn-zoo-gru")[-1]
    assert pins == {"rnn-zoo-gru": Pin("test-ns/rnn-zoo-gru", commit)}
    assert "test-ns/rnn-zoo-gru config.json,model.safetensors,metrics.json " + commit in \
        (tmp_path / "README.md").read_text()

    pinned = load_model(app_weights / "gru")
    other = create_model("gru", vocab_size=len(corpus.tokenizer), num_hiddens=32)     # what a later push holds
    save_model(tmp_path / "later", "gru", other, corpus.tokenizer)
    upload_folder(repo_id="test-ns/rnn-zoo-gru", folder_path=tmp_path / "later")
    gru = load_slot("gru", pins["rnn-zoo-gru"], app_weights, torch.device("cpu"))
    assert gru.ok and gru.source == f"from the Hub: test-ns/rnn-zoo-gru@{commit[:10]}" and len(gru.history) == 3
    X = torch.randint(0, 28, (1, 20))
    assert torch.equal(gru.pretrained.model(X)[0], pinned.model(X)[0])

    lstm = load_slot("lstm", pins.get("rnn-zoo-lstm"), app_weights, torch.device("cpu"))
    assert lstm.ok and lstm.source.startswith("bundled weights") and "no Hub commit is pinned" in lstm.source
    unpinned = load_slot("gru", Pin("test-ns/rnn-zoo-gru", None), app_weights, torch.device("cpu"))
    assert unpinned.ok and "listed without a commit, so it is not trusted" in unpinned.source


def test_a_hub_config_that_would_exhaust_memory_falls_back_in_one_line(local_hub, app_weights, tmp_path):
    """A pinned repo whose config.json asks for 100,000 hidden units (120 GB): refused from the config, the
    bundled weights load instead, and the page says why."""
    folder = tmp_path / "huge"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        (folder / name).write_bytes((app_weights / "gru" / name).read_bytes())
    info = load_json(folder / "config.json")
    info["model"]["num_hiddens"] = 100_000
    (folder / "config.json").write_text(json.dumps(info))
    create_repo("test-ns/rnn-zoo-gru")
    upload_folder(repo_id="test-ns/rnn-zoo-gru", folder_path=folder)
    gru = load_slot("gru", pin_to_the_hub(tmp_path, "test-ns")["rnn-zoo-gru"], app_weights, torch.device("cpu"))
    assert gru.ok and gru.source.startswith("bundled weights")
    assert "num_hiddens 100,000 is beyond the bound of 8,192" in gru.source


def test_unpin_returns_to_the_bundled_weights(local_hub, app_weights, tmp_path):
    create_repo("test-ns/rnn-zoo-gru")
    upload_folder(repo_id="test-ns/rnn-zoo-gru", folder_path=app_weights / "gru")
    assert pin_to_the_hub(tmp_path, "test-ns")
    assert pin_to_the_hub(tmp_path, "--unpin") == {}
    card = yaml.safe_load((tmp_path / "README.md").read_text().split("---")[1])
    assert "models" not in card and "preload_from_hub" not in card


# ---------------------------------------------------------------------------- exercises

def test_an_exercise_shows_its_question_numbers_plot_and_answer(client):
    page, plot, runs = client.predict("9.1.4", api_name="/exercise")
    assert "## 9.1.4: Only a reset gate, or only an update gate" in page and "**Answer.**" in page
    assert "| reset gate only | `gru-reset-only` |" in page and Path(plot["value"]).name == "9.1.4.png"
    assert {"GRU", "reset gate only", "update gate only"} <= set(c[0] for c in runs["choices"])
    page, plot, runs = client.predict("9.2.3", api_name="/exercise")        # a measurement, no curves
    assert "gate blocks" in page and not plot["visible"] and runs["choices"] == []
    page, _, _ = client.predict("8.5.2", api_name="/exercise")               # no results in that folder
    assert "Not run: it needs its results" in page


def test_a_run_of_an_exercise_sets_up_the_train_tab(client):
    settings = client.predict("9.1.4", "update gate only", api_name="/exercise_to_train")   # the tabs are no data
    assert list(settings) == ["gru-update-only", 256, 1, "adamw", 0.016, "sequential", 64, 32, "all"]
    with pytest.raises(AppError, match="that the Train tab can train"):
        client.predict("9.1.4", "no such run", api_name="/exercise_to_train")
