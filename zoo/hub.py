"""Models from a folder or a Hugging Face Hub repo id, through huggingface_hub's own download machinery.

`load("runs/lstm")` reads a folder; `load("someone/rnn-zoo-lstm", revision="v1")` downloads the repo with
`snapshot_download` into the standard Hub cache (or reads it from there). Offline, whether by
`HF_HUB_OFFLINE=1` or because the Hub cannot be reached, only the cache is used, and a model that is not
cached fails in one line at once instead of after the client's ~20 s of retries.
"""
from __future__ import annotations

import functools
import re
import socket
from pathlib import Path
from urllib.parse import urlparse

import torch
from huggingface_hub import constants, snapshot_download
from huggingface_hub.errors import (LocalEntryNotFoundError, RepositoryNotFoundError,
                                    RevisionNotFoundError)

from zoo.checkpoint import CONFIG, WEIGHTS, CheckpointError, Pretrained, load_model

REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
FILES = [CONFIG, WEIGHTS, "README.md", "metrics.json"]


class HubError(CheckpointError):
    """A Hub id that cannot be resolved (unknown repo or revision, offline and not cached)."""


@functools.lru_cache(maxsize=None)
def hub_reachable(endpoint: str, timeout: float = 2.0) -> bool:
    """Whether a TCP connection to the Hub endpoint opens within `timeout` seconds (checked once per process)."""
    url = urlparse(endpoint)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout).close()
        return True
    except OSError:
        return False


def offline() -> bool:
    return constants.HF_HUB_OFFLINE or not hub_reachable(constants.ENDPOINT)


def download(repo_id: str, revision: str | None = None) -> Path:
    """The folder of a Hub model repo in the local cache, downloaded first unless offline."""
    local_only = offline()
    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=FILES, local_files_only=local_only))
    except RepositoryNotFoundError:
        raise HubError(f"no model repo {repo_id!r} on the Hub (or it is private: set HF_TOKEN)") from None
    except RevisionNotFoundError:
        raise HubError(f"{repo_id} has no revision {revision!r}") from None
    except LocalEntryNotFoundError:
        why = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else f"{constants.ENDPOINT} cannot be reached"
        raise HubError(f"{repo_id} is not in the local Hub cache and {why}") from None
    except OSError as e:   # every other Hub failure is an OSError subclass
        raise HubError(f"cannot download {repo_id}: {str(e).splitlines()[0]}") from None


def load(source: str, revision: str | None = None, device: str | torch.device = "cpu") -> Pretrained:
    """A model from a local folder, or else from a Hub repo id `owner/name` (optionally at `revision`)."""
    path = Path(source).expanduser()
    if path.exists() or not REPO_ID.match(source):
        if not path.exists():
            raise CheckpointError(f"{source}: no such folder, and not a Hub repo id (owner/name)")
        return load_model(path, device)
    pretrained = load_model(download(source, revision), device)
    pretrained.source = source if revision is None else f"{source}@{revision}"
    return pretrained
