"""The local Hub server, driven by the real huggingface_hub client: push, download, skip unchanged, offline."""

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    HfApi,
    PyTorchModelHubMixin,
    RepoFile,
    RepoFolder,
    create_commit,
    create_repo,
    get_paths_info,
    hf_hub_download,
    list_repo_files,
    list_repo_tree,
    snapshot_download,
    upload_folder,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils.sha import git_hash
from safetensors.torch import load_file, save_file
from torch import nn

from hubserver import GITATTRIBUTES, HubServer, hub_env, set_offline, use_hub

REPO = "zoo/gru"


@pytest.fixture
def server():
    with HubServer() as hub:
        yield hub
    assert hub.unhandled == []  # the client called no endpoint that the server lacks


@pytest.fixture
def hub(server, monkeypatch, tmp_path):
    use_hub(monkeypatch, server, tmp_path / "cache")
    return server


def write_model(folder: Path, seed: int = 0) -> dict[str, bytes]:
    """config.json + model.safetensors (about 3 MB of real weights) + README.md; returns path -> bytes."""
    folder.mkdir(exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    weights = {"rnn.weight": torch.randn(768, 768, generator=gen), "linear.weight": torch.randn(256, 768, generator=gen)}
    save_file(weights, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({"rnn_type": "GRU", "num_hiddens": 768}))
    (folder / "README.md").write_text("---\nlicense: mit\ntags: [rnn]\n---\n# GRU\n")
    return read_dir(folder)


def read_dir(folder) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


@pytest.fixture
def model(tmp_path) -> tuple[Path, dict[str, bytes]]:
    return tmp_path / "gru", write_model(tmp_path / "gru")


def test_start_waits_for_the_port_and_stop_frees_it():
    server = HubServer().start()
    port = int(server.url.rsplit(":", 1)[1])
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"{server.url}/api/models/nobody/nothing", timeout=5)
    info.value.close()
    assert (info.value.code, info.value.headers["X-Error-Code"]) == (404, "RepoNotFound")
    server.stop()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1)


def test_push_then_download_round_trip(hub, model, tmp_path):
    folder, local = model
    assert create_repo(REPO).repo_id == REPO
    commit = upload_folder(repo_id=REPO, folder_path=folder, commit_message="Add GRU")

    assert hub.commits(REPO)[1:] == [commit.oid]  # the initial commit, then one commit for the push
    assert hub.files(REPO) == {**local, ".gitattributes": GITATTRIBUTES}
    assert sorted(list_repo_files(REPO)) == sorted([*local, ".gitattributes"])
    info = HfApi().model_info(REPO)
    assert info.sha == commit.oid and {s.rfilename for s in info.siblings} == {*local, ".gitattributes"}

    snapshot = snapshot_download(REPO, cache_dir=tmp_path / "fresh")
    assert Path(snapshot).parts[-2:] == ("snapshots", commit.oid)
    assert read_dir(snapshot) == {**local, ".gitattributes": GITATTRIBUTES}
    weights = load_file(Path(snapshot) / "model.safetensors")
    assert torch.equal(weights["rnn.weight"], load_file(folder / "model.safetensors")["rnn.weight"])

    config = hf_hub_download(REPO, "config.json")  # into the default cache, which use_hub moved
    assert config.startswith(str(tmp_path / "cache")) and Path(config).read_bytes() == local["config.json"]


def test_unchanged_files_make_no_commit(hub, model):
    folder, local = model
    create_repo(REPO)
    first = upload_folder(repo_id=REPO, folder_path=folder)

    check = HfApi().verify_repo_checksums(REPO, local_dir=folder)  # the pre-push check: tree blob ids
    assert (check.mismatches, check.extra_paths, check.missing_paths) == ([], [], [".gitattributes"])
    [entry] = get_paths_info(REPO, ["model.safetensors"])
    assert entry.blob_id == git_hash(local["model.safetensors"]) and entry.lfs is None

    assert upload_folder(repo_id=REPO, folder_path=folder).oid == first.oid  # preupload's oid = local sha1
    ops = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=data) for name, data in local.items()]
    assert create_commit(REPO, operations=ops, commit_message="again").oid == first.oid
    assert hub.commits(REPO)[1:] == [first.oid]


def test_changed_file_makes_a_commit_and_old_revision_still_downloads(hub, model, tmp_path):
    folder, old = model
    create_repo(REPO)
    first = upload_folder(repo_id=REPO, folder_path=folder)
    new = write_model(folder, seed=1)
    [mismatch] = HfApi().verify_repo_checksums(REPO, local_dir=folder).mismatches
    assert mismatch["path"] == "model.safetensors"

    second = upload_folder(repo_id=REPO, folder_path=folder)
    assert hub.commits(REPO)[1:] == [first.oid, second.oid]
    assert hub.files(REPO, first.oid)["model.safetensors"] == old["model.safetensors"]
    assert hub.files(REPO) == {**new, ".gitattributes": GITATTRIBUTES}

    old_snapshot = snapshot_download(REPO, revision=first.oid)
    assert read_dir(old_snapshot)["model.safetensors"] == old["model.safetensors"]
    assert Path(hf_hub_download(REPO, "model.safetensors", revision=first.oid)).read_bytes() == old["model.safetensors"]
    assert Path(hf_hub_download(REPO, "model.safetensors")).read_bytes() == new["model.safetensors"]


def test_offline_loads_from_cache_after_the_server_stops(hub, model, monkeypatch):
    folder, local = model
    create_repo(REPO)
    upload_folder(repo_id=REPO, folder_path=folder)
    snapshot = snapshot_download(REPO)
    hub.stop()
    set_offline(monkeypatch)

    start = time.perf_counter()
    assert snapshot_download(REPO) == snapshot
    assert Path(hf_hub_download(REPO, "config.json")).read_bytes() == local["config.json"]
    with pytest.raises(LocalEntryNotFoundError):
        hf_hub_download("zoo/never-downloaded", "config.json")
    assert time.perf_counter() - start < 2


def test_missing_repo_file_and_revision_raise_the_client_errors(hub, model):
    start = time.perf_counter()
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("zoo/missing", "config.json")
    with pytest.raises(RepositoryNotFoundError):
        snapshot_download("zoo/missing")
    assert time.perf_counter() - start < 2  # no retries: the 404 carries X-Error-Code

    create_repo(REPO)
    upload_folder(repo_id=REPO, folder_path=model[0])
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(REPO, "missing.json")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(REPO, "config.json", revision="dev")


def test_push_without_a_token_is_rejected(server, model, monkeypatch, tmp_path):
    use_hub(monkeypatch, server, tmp_path / "cache", token=None)
    with pytest.raises(HfHubHTTPError) as info:
        create_repo(REPO)
    assert info.value.response.status_code == 401

    HfApi(token="hf_owner").create_repo(REPO)
    with pytest.raises(HfHubHTTPError) as info:
        upload_folder(repo_id=REPO, folder_path=model[0])
    assert info.value.response.status_code == 401 and len(server.commits(REPO)) == 1
    assert Path(hf_hub_download(REPO, ".gitattributes")).read_bytes() == GITATTRIBUTES  # reads need no token


def test_folders_deletes_and_readme_metadata(hub):
    create_repo(REPO)
    create_commit(REPO, commit_message="logs", operations=[
        CommitOperationAdd(path_in_repo="logs/run1/metrics.json", path_or_fileobj=b"{}"),
        CommitOperationAdd(path_in_repo="notes.txt", path_or_fileobj=b"hi"),
    ])
    top = {e.path: type(e) for e in list_repo_tree(REPO)}
    assert top == {".gitattributes": RepoFile, "logs": RepoFolder, "notes.txt": RepoFile}
    assert {e.path for e in list_repo_tree(REPO, recursive=True)} == {*top, "logs/run1", "logs/run1/metrics.json"}
    assert [type(e) for e in get_paths_info(REPO, ["logs", "notes.txt", "nope"])] == [RepoFolder, RepoFile]

    create_commit(REPO, commit_message="rm", operations=[CommitOperationDelete(path_in_repo="logs/")])
    assert set(hub.files(REPO)) == {".gitattributes", "notes.txt"}
    with pytest.raises(EntryNotFoundError):
        create_commit(REPO, commit_message="rm", operations=[CommitOperationDelete(path_in_repo="gone.txt")])
    with pytest.raises(ValueError, match="Invalid metadata"):
        create_commit(REPO, commit_message="card", operations=[
            CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=b"---\n- a list\n---\n")])


class TinyLM(nn.Module, PyTorchModelHubMixin, library_name="rnn-zoo"):
    def __init__(self, vocab_size: int = 11, num_hiddens: int = 8):
        super().__init__()
        self.rnn = nn.GRU(vocab_size, num_hiddens, batch_first=True)
        self.linear = nn.Linear(num_hiddens, vocab_size)


def test_mixin_push_to_hub_and_from_pretrained(hub):
    model = TinyLM(num_hiddens=6)
    commit = model.push_to_hub("zoo/tiny")
    assert hub.commits("zoo/tiny")[1:] == [commit.oid]
    assert {"config.json", "model.safetensors", "README.md"} <= set(hub.files("zoo/tiny"))

    loaded = TinyLM.from_pretrained("zoo/tiny", strict=True)
    assert loaded.linear.out_features == 11 and loaded.rnn.hidden_size == 6
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    assert model.push_to_hub("zoo/tiny").oid == commit.oid  # unchanged: no second commit


CHILD = """
import hashlib, json, pathlib, huggingface_hub
from huggingface_hub import snapshot_download
folder = pathlib.Path(snapshot_download("zoo/gru"))
print(json.dumps({"endpoint": huggingface_hub.constants.ENDPOINT, "folder": str(folder),
                  "sha256": {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}}))
"""


def test_a_subprocess_downloads_through_hf_endpoint(hub, model, tmp_path):
    folder, local = model
    create_repo(REPO)
    upload_folder(repo_id=REPO, folder_path=folder)
    env = {**os.environ, **hub_env(hub, tmp_path / "child-cache")}
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=60, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["endpoint"] == hub.url and result["folder"].startswith(str(tmp_path / "child-cache"))
    assert result["sha256"] == {name: hashlib.sha256(data).hexdigest() for name, data in
                                {**local, ".gitattributes": GITATTRIBUTES}.items()}
