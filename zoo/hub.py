"""Models from a folder or a Hugging Face Hub repo id, through huggingface_hub's own download machinery; push.

`load("runs/lstm")` reads a folder; `load("someone/rnn-zoo-lstm", revision="v1")` downloads the repo with
`snapshot_download` into the standard Hub cache (or reads it from there). Offline, whether by
`HF_HUB_OFFLINE=1` or because the Hub cannot be reached, only the cache is used, and a model that is not
cached fails in one line at once instead of after the client's ~20 s of retries.

`push(folder, "someone/rnn-zoo-lstm")` creates or updates the repo in one commit, and in none when the Hub
already holds the same files (compared by hash before anything is uploaded).
"""
from __future__ import annotations

import functools
import hashlib
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
from huggingface_hub import (CommitOperationAdd, CommitOperationDelete, HfApi, RepoFile, constants, get_token,
                             snapshot_download)
from huggingface_hub.errors import (LocalEntryNotFoundError, RepositoryNotFoundError,
                                    RevisionNotFoundError)
from huggingface_hub.utils.sha import git_hash

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


# ---------------------------------------------------------------------------- push

@dataclass
class PushResult:
    """What `push` did: the files it committed (none when the repo already held the folder's files)."""
    repo_id: str
    changed: list[str]            # paths uploaded or deleted, in FILES order
    commit: str | None = None     # the new commit's id; None when nothing changed

    @property
    def unchanged(self) -> bool:
        return not self.changed


def artefacts(folder: str | Path) -> dict[str, Path]:
    """The files of a model folder that belong on the Hub (FILES that exist; never the training checkpoint)."""
    return {name: Path(folder) / name for name in FILES if (Path(folder) / name).is_file()}


def remote_changes(api: HfApi, repo_id: str, files: dict[str, Path]) -> list[str]:
    """Paths whose Hub copy differs from the local file, or that exist on only one side (among FILES).

    Compared without uploading: the Hub's tree gives each file's git blob sha1, and for an LFS file also the
    sha256 of its content; the local hash is computed the same way.
    """
    remote = {e.path: e for e in api.get_paths_info(repo_id, FILES) if isinstance(e, RepoFile)}
    changed = []
    for name in FILES:
        entry, path = remote.get(name), files.get(name)
        if entry is None or path is None:
            if entry is not None or path is not None:
                changed.append(name)
            continue
        data = path.read_bytes()
        same = (entry.lfs.sha256 == hashlib.sha256(data).hexdigest() if entry.lfs
                else entry.blob_id == git_hash(data))
        if not same:
            changed.append(name)
    return changed


def push(folder: str | Path, repo_id: str, token: str | None = None, private: bool = False,
         message: str | None = None) -> PushResult:
    """Create or update the Hub model repo `repo_id` from a model folder, in one commit, or in none if unchanged.

    The token is `token`, else HF_TOKEN, else the login cache (`hf auth login`). Every Hub failure is one
    HubError line.
    """
    files = artefacts(folder)
    if CONFIG not in files or WEIGHTS not in files:
        raise CheckpointError(f"{folder} is not a model folder (expected {CONFIG} and {WEIGHTS} in it)")
    if not (token or get_token()):
        raise HubError("no Hub token: set HF_TOKEN or log in with `hf auth login`")
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        changed = remote_changes(api, repo_id, files)
        if not changed:
            return PushResult(repo_id, [])
        ops = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(files[name])) if name in files
               else CommitOperationDelete(path_in_repo=name) for name in changed]
        commit = api.create_commit(repo_id, ops, commit_message=message or f"Upload {', '.join(changed)}")
    except (OSError, ValueError) as e:   # Hub failures are OSErrors; metadata the Hub rejects is a ValueError
        raise HubError(f"cannot push to {repo_id}: {str(e).splitlines()[0]}") from None
    return PushResult(repo_id, changed, commit.oid)
