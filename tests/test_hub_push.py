"""zoo.hub against tests/hubserver.py, through the real huggingface_hub client: push a model folder, download it
into a fresh cache, load it with the same logits; an unchanged folder makes no commit; offline loads come from
the cache; a missing repo is one line, in the library and through `python -m zoo sample`."""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard, constants

from conftest import ROOT
from hubserver import GITATTRIBUTES, hub_env, set_offline, use_hub
from zoo import create_model
from zoo.card import README, write_card
from zoo.checkpoint import CheckpointError, save_model
from zoo.data import Tokenizer
from zoo.hub import FILES, HubError, hub_reachable, load, push

REPO = "test-ns/rnn-zoo-lstm"
TOKENIZER = Tokenizer.fit("the time traveller for so it will be convenient to speak of him")
X = torch.randint(0, len(TOKENIZER), (2, 17), generator=torch.Generator().manual_seed(0))


@pytest.fixture
def folder(tmp_path):
    """A model folder as train_all writes it (random weights): weights, config, history and card."""
    torch.manual_seed(0)
    model = create_model("lstm", vocab_size=len(TOKENIZER), num_hiddens=16).eval()
    path = tmp_path / "lstm"
    save_model(path, "lstm", model, TOKENIZER, metrics={"train_perplexity": 9.0, "valid_perplexity": 10.0,
                                                       "test_perplexity": 11.0, "test_bits_per_token": 3.46,
                                                       "parameters": 10, "device": "cpu", "train_seconds": 1.0})
    (path / "metrics.json").write_text('{"name": "lstm", "history": []}\n')
    write_card(path, REPO)
    return path, model


def logits(model) -> torch.Tensor:
    return model(X)[0]


def fresh_cache(monkeypatch, tmp_path, name: str) -> Path:
    """Point the Hub cache at a new, empty folder."""
    cache = tmp_path / name
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_folder_and_hub_loads_give_identical_logits(local_hub, folder, monkeypatch, tmp_path):
    folder, model = folder
    assert torch.equal(logits(load(str(folder)).model), logits(model))

    result = push(folder, REPO)
    assert result.changed == FILES and result.commit == local_hub.commits(REPO)[-1]
    assert len(local_hub.commits(REPO)) == 2          # the repo's initial commit, then one for the model
    assert local_hub.files(REPO) == {**{f: (folder / f).read_bytes() for f in FILES}, ".gitattributes": GITATTRIBUTES}

    cache = fresh_cache(monkeypatch, tmp_path, "fresh")
    pretrained = load(REPO)
    assert pretrained.source == REPO and pretrained.name == "lstm"
    assert torch.equal(logits(pretrained.model), logits(model))
    assert list(cache.glob("models--test-ns--rnn-zoo-lstm/snapshots/*/config.json"))
    assert ModelCard.load(next(cache.glob("models--*/snapshots/*/README.md"))).data.eval_results  # the card survived
    assert torch.equal(logits(load(REPO, revision=result.commit).model), logits(model))


def test_an_unchanged_folder_makes_no_commit_and_uploads_nothing(local_hub, folder):
    folder, model = folder
    first = push(folder, REPO)
    local_hub.requests.clear()
    again = push(folder, REPO)
    assert again.unchanged and again.commit is None and local_hub.commits(REPO)[1:] == [first.commit]
    assert not [r for r in local_hub.requests if "/preupload/" in r or "/commit/" in r]   # decided before uploading

    write_card(folder, "test-ns/another-name")        # one file changes: one commit with that file only
    changed = push(folder, REPO)
    assert changed.changed == [README] and local_hub.commits(REPO)[1:] == [first.commit, changed.commit]
    assert local_hub.files(REPO)[README] == (folder / README).read_bytes()

    (folder / "metrics.json").unlink()                # a file gone from the folder goes from the repo too
    assert push(folder, REPO).changed == ["metrics.json"] and "metrics.json" not in local_hub.files(REPO)


def test_loads_from_the_cache_when_offline_or_unreachable(local_hub, folder, monkeypatch):
    folder, model = folder
    push(folder, REPO)
    load(REPO)                                         # downloads into the cache
    local_hub.stop()
    hub_reachable.cache_clear()
    started = time.perf_counter()
    assert torch.equal(logits(load(REPO).model), logits(model))      # the endpoint cannot be reached
    with pytest.raises(HubError, match="not in the local Hub cache and .* cannot be reached"):
        load("test-ns/never-downloaded")
    set_offline(monkeypatch)                                                 # HF_HUB_OFFLINE=1
    assert torch.equal(logits(load(REPO).model), logits(model))
    with pytest.raises(HubError, match="not in the local Hub cache and HF_HUB_OFFLINE is set"):
        load("test-ns/never-downloaded")
    assert time.perf_counter() - started < 5          # no retries anywhere


def test_a_missing_repo_is_one_line(local_hub, tmp_path):
    with pytest.raises(HubError, match="no model repo 'owner/missing' on the Hub"):
        load("owner/missing")
    env = {**os.environ, **hub_env(local_hub, tmp_path / "child-cache")}
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "zoo", "sample", "owner/missing"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and out.stdout == ""
    assert out.stderr.splitlines() == ["zoo sample: no model repo 'owner/missing' on the Hub (or it is private: "
                                       "set HF_TOKEN)"]
    assert "GET /api/models/owner/missing/revision/main" in local_hub.requests
    assert time.perf_counter() - started < 30


def test_push_needs_a_token_and_a_model_folder(local_hub, folder, monkeypatch, tmp_path):
    folder, model = folder
    with pytest.raises(CheckpointError, match="not a model folder"):
        push(tmp_path, REPO)
    use_hub(monkeypatch, local_hub, tmp_path / "cache", token=None)
    local_hub.requests.clear()
    with pytest.raises(HubError, match="no Hub token: set HF_TOKEN"):
        push(folder, REPO)
    assert local_hub.requests == []


def test_a_hub_refusal_is_one_line(local_hub, folder):
    folder, model = folder
    (folder / README).write_text("---\n- not a mapping\n---\n# lstm\n")    # the Hub rejects this metadata
    with pytest.raises(HubError, match=r"^cannot push to test-ns/rnn-zoo-lstm: .*Invalid metadata") as info:
        push(folder, REPO)
    assert "\n" not in str(info.value) and len(local_hub.commits(REPO)) == 1
