"""Model folders: save, load, identical logits; every way a file can be wrong gives one clear error, before
anything the file asks for is allocated."""
import hashlib
import importlib.util
import json

import pytest
import torch

from conftest import ROOT
from zoo import create_model, list_models
from zoo.checkpoint import (CONFIG, SHA256, WEIGHTS, CheckpointError, atomic_write, load_model, remove_temporaries,
                            save_model, save_tensors)
from zoo.tokenizer import Tokenizer
from zoo.hub import load
from zoo.models.ngram import ngram_from_ids

TOKENIZER = Tokenizer.fit("the time traveller")
_spec = importlib.util.spec_from_file_location("stamp_weights", ROOT / "scripts" / "stamp_weights.py")
stamp_weights = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(stamp_weights)
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


# ---------------------------------------------------------------------------- what a folder may not hold

def rewrite_config(folder, **changes):
    info = json.loads((folder / CONFIG).read_text())
    for key, value in changes.items():
        target, _, leaf = key.rpartition("__")
        (info[target] if target else info)[leaf] = value
    (folder / CONFIG).write_text(json.dumps(info))
    return info


def test_config_records_the_weights_checksum_and_is_written_last(saved):
    folder, _ = saved
    info = json.loads((folder / CONFIG).read_text())
    assert info[SHA256] == hashlib.sha256((folder / WEIGHTS).read_bytes()).hexdigest()
    assert (folder / CONFIG).stat().st_mtime_ns >= (folder / WEIGHTS).stat().st_mtime_ns


def test_new_weights_under_an_old_config_are_refused(saved):
    """What a kill between the two writes of save_model leaves: the next run's weights, the last run's config."""
    folder, _ = saved
    save_tensors(folder / WEIGHTS, create_model("lstm", num_hiddens=16).state_dict(), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        load_model(folder)


def test_weights_without_a_recorded_checksum_are_refused_until_stamped(saved):
    folder, model = saved
    info = json.loads((folder / CONFIG).read_text())
    del info[SHA256]
    (folder / CONFIG).write_text(json.dumps(info))
    with pytest.raises(CheckpointError, match=f"records no {SHA256}.*stamp_weights.py"):
        load_model(folder)
    assert stamp_weights.main([str(folder)]) == 0
    X = torch.randint(0, 28, (1, 9))
    assert torch.equal(load_model(folder).model(X)[0], model(X)[0])


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nan_or_infinite_weights_are_refused(saved, value):
    folder, model = saved
    state = model.state_dict()
    state["linear.bias"][3] = value
    rewrite_config(folder, **{SHA256: save_tensors(folder / WEIGHTS, state)})
    with pytest.raises(CheckpointError, match="linear.bias holds 1 NaN or infinite value"):
        load_model(folder)
    config = (folder / CONFIG).read_text()
    assert stamp_weights.main([str(folder)]) == 1                 # stamping refuses it and changes nothing
    assert (folder / CONFIG).read_text() == config


@pytest.mark.parametrize("change, message", [
    ({"model__num_hiddens": 100_000}, "num_hiddens 100,000 is beyond the bound of 8,192"),
    ({"model__num_layers": 10**9}, "num_layers 1,000,000,000 is beyond the bound of 16"),
    ({"model__vocab_size": 2**40}, "vocab_size 1,099,511,627,776 is beyond the bound"),
    ({"model__num_hiddens": 6000, "model__num_layers": 16}, "would take .* MiB; the bound is 1,024 MiB"),
    ({"model__num_hiddens": 1e300}, "beyond the bound"),
    ({"model__num_hiddens": "many"}, "does not describe a model"),
    ({"name": 5}, "names no model"),
    ({"tokenizer__tokens": ["<unk>", " ", 7]}, "bad tokenizer: token 2 is 7, not a string"),
    ({"tokenizer": None}, "bad tokenizer"),
    ({"model": [1, 2]}, "does not describe a model"),
])
def test_configs_beyond_bounds_or_malformed_are_one_line(saved, change, message):
    folder, _ = saved
    rewrite_config(folder, **change)
    with pytest.raises(CheckpointError, match=message):
        load_model(folder)


def test_an_ngram_config_asking_for_huge_tables_is_refused(tmp_path):
    model = small_model("ngram")
    save_model(tmp_path, "ngram", model, TOKENIZER)
    info = json.loads((tmp_path / CONFIG).read_text())
    info["model"]["contexts"][0] = 10**12
    (tmp_path / CONFIG).write_text(json.dumps(info))
    with pytest.raises(CheckpointError, match="the bound is 1,024 MiB"):
        load_model(tmp_path)


def test_a_config_without_a_name_or_not_an_object(saved):
    folder, _ = saved
    info = json.loads((folder / CONFIG).read_text())
    del info["name"]
    (folder / CONFIG).write_text(json.dumps(info))
    with pytest.raises(CheckpointError, match="names no model"):
        load_model(folder)
    (folder / CONFIG).write_text("[]")
    with pytest.raises(CheckpointError, match="names no model"):
        load_model(folder)


def test_temporary_files_of_killed_writes_are_recognised(tmp_path):
    atomic_write(tmp_path / "x.json", b"{}")
    ours = [tmp_path / ".checkpoint.safetensors.k3j_a9zq.tmp", tmp_path / ".config.json.abcdefgh.tmp"]
    theirs = [tmp_path / ".notes.tmp", tmp_path / "draft.tmp", tmp_path / "x.json"]
    for path in ours + theirs:
        path.write_bytes(b"partial")
    assert sorted(remove_temporaries(tmp_path)) == sorted(ours)
    assert all(p.exists() for p in theirs) and not any(p.exists() for p in ours)
