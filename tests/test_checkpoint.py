"""Model folders: save, load, identical logits; every way a file can be wrong gives one clear error."""
import json

import pytest
import torch

from zoo import create_model, list_models
from zoo.checkpoint import CONFIG, WEIGHTS, CheckpointError, load_model, save_model
from zoo.data import Tokenizer
from zoo.hub import load
from zoo.models.ngram import ngram_from_ids

TOKENIZER = Tokenizer.fit("the time traveller")
TEXT = "the time traveller for so it will be convenient to speak of him was expounding a recondite matter to us"


def small_model(name):
    """A small model: random weights, or for the n-gram (empty until counted) the counts of a sentence."""
    if name == "ngram":
        return ngram_from_ids(torch.tensor(TOKENIZER.encode(TEXT)), len(TOKENIZER), order=3)
    return create_model(name, num_hiddens=16).eval()


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = create_model("lstm", num_hiddens=16).eval()
    save_model(tmp_path / "m", "lstm", model, TOKENIZER, metrics={"test_perplexity": 5.0})
    return tmp_path / "m", model


@pytest.mark.parametrize("name", list_models())
def test_round_trip_gives_identical_logits(name, tmp_path):
    torch.manual_seed(0)
    model = small_model(name)
    save_model(tmp_path, name, model, TOKENIZER)
    loaded = load_model(tmp_path)
    X = torch.randint(0, 28, (2, 9))
    assert loaded.name == name and loaded.tokenizer.tokens == TOKENIZER.tokens
    assert torch.equal(loaded.model(X)[0], model(X)[0])
    assert not loaded.model.training


def test_folder_holds_safetensors_and_json_only(saved):
    folder, _ = saved
    assert sorted(p.name for p in folder.iterdir()) == [CONFIG, WEIGHTS]
    info = json.loads((folder / CONFIG).read_text())
    assert info["model"]["name"] == "lstm" and info["metrics"]["test_perplexity"] == 5.0
    assert (folder / WEIGHTS).read_bytes()[8:9] == b"{"        # safetensors: 8-byte length, JSON header


def test_missing_folder_and_files(tmp_path, saved):
    with pytest.raises(CheckpointError, match="no such folder"):
        load(str(tmp_path / "nowhere"))
    folder, _ = saved
    (folder / WEIGHTS).unlink()
    with pytest.raises(CheckpointError, match=f"missing {WEIGHTS}"):
        load_model(folder)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_weights(saved, damage):
    folder, _ = saved
    path = folder / WEIGHTS
    data = path.read_bytes()
    path.write_bytes({"truncate": data[:len(data) // 2], "garbage": b"\x00" * 64, "empty": b""}[damage])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_model(folder)


def test_corrupt_config(saved):
    folder, _ = saved
    (folder / CONFIG).write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_model(folder)
    (folder / CONFIG).write_text(json.dumps({"name": "x", "model": {"arch": "transformer", "impl": "scratch"},
                                             "tokenizer": TOKENIZER.to_dict()}))
    with pytest.raises(CheckpointError, match="does not describe a model"):
        load_model(folder)


def test_weights_that_do_not_match_the_config(saved):
    folder, _ = saved
    info = json.loads((folder / CONFIG).read_text())
    info["model"]["num_hiddens"] = 32
    (folder / CONFIG).write_text(json.dumps(info))
    with pytest.raises(CheckpointError, match="has shape"):
        load_model(folder)
    info["model"].update(num_hiddens=16, name="lstm-scratch")
    (folder / CONFIG).write_text(json.dumps(info))
    with pytest.raises(CheckpointError, match="does not match the config"):
        load_model(folder)


def test_no_pickle_in_the_weights(saved):
    folder, _ = saved
    assert b"pickle" not in (folder / WEIGHTS).read_bytes() and not (folder / WEIGHTS).read_bytes().startswith(b"PK")
