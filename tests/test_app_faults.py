"""One model's bad folder never breaks the page: the app launched on weights where six of the nine models are
faulty, each in another way (truncated weights, tokens that are not strings, NaN weights, a huge size, a flipped
bit that the checksum catches, tables that fail only when the model runs). Each fault is one line in that
model's panel, in every tab, while the healthy models answer."""
import json
import shutil
import sys

import pytest
import torch
from app_fixtures import CORRUPTED, SPACE, running_app
from gradio_client import Client

from zoo.models import BOOK
from zoo.checkpoint import CONFIG, SHA256, WEIGHTS, load_model, save_model

if str(SPACE) not in sys.path:
    sys.path.insert(0, str(SPACE))

# model -> what its panel says (the fault made by `break_folder`)
LOAD_FAULTS = {
    CORRUPTED: "corrupt or truncated",
    "gru-scratch": "bad tokenizer: token 3 is 42, not a string",
    "rnn-scratch": "NaN or infinite value",
    "lstm": "num_hiddens 100,000 is beyond the bound of 8,192",
    "rnn": "sha256 mismatch",
}
RUN_FAULT = "ngram"        # loads (its checksum is right) but its tables point past their end
HEALTHY = [name for name in BOOK if name not in LOAD_FAULTS and name != RUN_FAULT]


def resave(folder, change) -> None:
    """Load a folder, change its model in place, and save it back with a checksum that matches."""
    pretrained = load_model(folder)
    with torch.no_grad():
        change(pretrained.model)
    info = {k: v for k, v in pretrained.info.items() if k not in ("name", "model", "tokenizer", SHA256)}
    save_model(folder, pretrained.name, pretrained.model, pretrained.tokenizer, **info)


def edit_config(folder, change) -> None:
    info = json.loads((folder / CONFIG).read_text())
    change(info)
    (folder / CONFIG).write_text(json.dumps(info))


def break_folders(weights) -> None:
    edit_config(weights / "gru-scratch", lambda info: info["tokenizer"]["tokens"].__setitem__(3, 42))
    resave(weights / "rnn-scratch", lambda model: next(model.parameters()).view(-1)[0].fill_(float("nan")))
    edit_config(weights / "lstm", lambda info: info["model"].update(num_hiddens=100_000))
    data = bytearray((weights / "rnn" / WEIGHTS).read_bytes())
    data[-3] ^= 0x40                                  # one bit flipped in the last tensor: a valid file still
    (weights / "rnn" / WEIGHTS).write_bytes(bytes(data))
    resave(weights / RUN_FAULT, lambda model: [level.starts.copy_(torch.arange(len(level.starts)) * 1000)
                                               for level in model.levels])


@pytest.fixture(scope="module")
def faulty(app_weights, tmp_path_factory):
    weights = tmp_path_factory.mktemp("faulty") / "weights"
    shutil.copytree(app_weights, weights)
    break_folders(weights)
    with running_app(weights) as running:
        yield running, Client(running.url, verbose=False)


def test_each_load_fault_is_one_line_in_its_own_slot(faulty):
    running, _ = faulty
    slots = running.module.slots
    for name, message in LOAD_FAULTS.items():
        assert not slots[name].ok and message in slots[name].error, (name, slots[name].error)
        assert "\n" not in slots[name].error and "Traceback" not in slots[name].error
    assert all(slots[name].ok for name in HEALTHY + [RUN_FAULT])


def test_sample_answers_in_the_healthy_panels_and_names_each_fault_in_its_own(faulty):
    _, client = faulty
    out = client.predict("time traveller", 50, "sample", 0.8, 0, 1.0, 1, BOOK, api_name="/sample")
    n = len(BOOK)
    infos, texts = dict(zip(BOOK, out[1:n + 1])), dict(zip(BOOK, out[n + 1:2 * n + 1]))
    for name in HEALTHY:
        assert "chars/s" in infos[name] and texts[name][0]["token"] == "time traveller", name
    for name, message in LOAD_FAULTS.items():
        assert infos[name].startswith("⚠️ not loaded: ") and message in infos[name] and texts[name] is None
    assert infos[RUN_FAULT].startswith("⚠️ IndexError: ") and texts[RUN_FAULT] is None


def test_perplexity_scores_the_healthy_models_and_lists_the_faults(faulty):
    _, client = faulty
    status, table, _, *coloured = client.predict("the time traveller smiled at us", api_name="/perplexity")
    assert {row[0] for row in table["data"]} == set(HEALTHY)
    for name, message in LOAD_FAULTS.items():
        assert f"{name}: not loaded (" in status and message in status
    assert f"{RUN_FAULT}: IndexError: " in status
    labels = dict(zip(BOOK, (c["label"] for c in coloured)))
    assert labels[RUN_FAULT] == f"{RUN_FAULT}: no score" and labels["gru"].startswith("gru: perplexity ")


def test_training_table_and_gates_work_beside_the_faults(faulty):
    _, client = faulty
    _, table = client.predict(api_name="/training")
    rows = {row[0]: row[1] for row in table["data"]}
    assert all(rows[name] == "not loaded" for name in LOAD_FAULTS) and rows["gru"] != "not loaded"
    note, plot = client.predict("gru", "the time traveller", 1, "", api_name="/gates")
    assert plot["type"] == "matplotlib"
