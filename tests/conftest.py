"""Shared test setup: the corpus from ../shared, no Hub telemetry, small models, the device to test on."""
import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("ZOO_DATA") or ROOT.parent / "shared" / "data" / "timemachine.txt")

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("ZOO_DATA", str(CORPUS))
# ZOO_TEST_DEVICE=cuda runs the model, training, generation and evaluation tests on a GPU (scripts/check_gpu.py).
DEVICE = torch.device(os.environ.get("ZOO_TEST_DEVICE", "cpu"))
if DEVICE.type == "cuda":   # the equality tests compare full float32, which TF32 matmuls are not
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False


@pytest.fixture(scope="session")
def device() -> torch.device:
    """Where the device-aware tests run their models: $ZOO_TEST_DEVICE, else the CPU."""
    if DEVICE.type == "cuda" and not torch.cuda.is_available():
        pytest.fail("ZOO_TEST_DEVICE=cuda, but no CUDA device is available")
    return DEVICE


@pytest.fixture(scope="session")
def timemachine() -> Path:
    """The book's corpus, which tests may read but the project must not copy."""
    if not CORPUS.is_file():
        pytest.fail(f"the tests need the Time Machine corpus at {CORPUS}")
    return CORPUS


@pytest.fixture(scope="session")
def corpus(timemachine):
    from zoo.data import load_corpus
    return load_corpus(timemachine)


# ---------------------------------------------------------------------------- the app (space/)

@pytest.fixture(scope="session")
def app_weights(tmp_path_factory, corpus):
    """A bundled-weights folder of tiny models, every registered one, with one deliberately corrupted."""
    from app_fixtures import CORRUPTED, corrupt, make_weights
    weights = make_weights(tmp_path_factory.mktemp("weights"), corpus)
    corrupt(weights / CORRUPTED)
    return weights


@pytest.fixture(scope="session")
def app_exercises(tmp_path_factory):
    """A results folder of two exercises run in smoke mode, for the Exercises tab."""
    from app_fixtures import make_exercises
    return make_exercises(tmp_path_factory.mktemp("docs") / "exercises")


@pytest.fixture(scope="session")
def app(app_weights, app_exercises):
    """space/app.py launched once per test session on those weights (Hub off): `.module`, `.url`."""
    from app_fixtures import running_app
    with running_app(app_weights, app_exercises) as running:
        yield running


# ---------------------------------------------------------------------------- small runs, model cards, the Hub

@pytest.fixture(scope="session")
def small_text(tmp_path_factory, timemachine) -> Path:
    """The corpus's first 12,000 characters: a text to train and count on in seconds."""
    path = tmp_path_factory.mktemp("data") / "small.txt"
    path.write_text(timemachine.read_text(encoding="utf-8")[:12_000], encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def small_corpus(small_text):
    from zoo.data import load_corpus
    return load_corpus(small_text)


@pytest.fixture
def local_hub(monkeypatch, tmp_path):
    """tests/hubserver.py's Hub, which the imported huggingface_hub and `zoo.hub` talk to (token "hf_test",
    cache in tmp_path/cache)."""
    from hubserver import HubServer, use_hub

    from zoo.hub import hub_reachable
    with HubServer() as server:
        use_hub(monkeypatch, server, tmp_path / "cache")
        hub_reachable.cache_clear()
        yield server
    hub_reachable.cache_clear()
    assert server.unhandled == []   # the client called no endpoint that the server lacks
