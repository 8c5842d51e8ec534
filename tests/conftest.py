"""Shared test setup: the corpus from ../shared, no Hub telemetry, small models."""
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "data" / "timemachine.txt"

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("ZOO_DATA", str(CORPUS))


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
