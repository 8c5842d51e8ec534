"""A local Hugging Face Hub for tests: real HTTP, the real `huggingface_hub` client, no internet.

`HubServer` speaks the part of the Hub API that huggingface_hub 2.4 calls to create a model repo, commit
files and download them (as read in its hf_api.py, _commit_api.py, _upload_pipeline.py, file_download.py,
_snapshot_download.py, utils/_http.py). Files are regular git blobs (no LFS, no Xet); one branch, `main`.
A new repo gets an initial commit holding `.gitattributes`, as on the Hub, so a push adds one commit.

    POST /api/repos/create                    create_repo (409 if it exists: exist_ok=True accepts that)
    POST /api/validate-yaml                   upload_folder/create_commit check README.md's metadata first
    GET  /api/models/<repo>[/revision/<rev>]  repo_info: `sha` (how snapshot_download pins a branch), `siblings`
    GET  /api/models/<repo>/tree/<rev>[/<dir>]  list_repo_tree/list_repo_files/snapshot_download (?recursive),
                                              entries `type`, `path`, `size`, `oid` (git blob sha1); one page
    POST /api/models/<repo>/paths-info/<rev>  get_paths_info (a form body: paths=...&expand=...)
    POST /api/models/<repo>/preupload/<rev>   uploadMode "regular" and each file's current `oid`
    POST /api/models/<repo>/commit/<rev>      NDJSON lines header/file (base64)/deletedFile/deletedFolder;
                                              answers commitUrl, commitOid
    HEAD|GET /<repo>/resolve/<rev>/<path>     X-Repo-Commit (required), ETag (the cache's blob name),
                                              Content-Length (the expected size; no X-Linked-* without LFS)

Errors carry `X-Error-Code` (RepoNotFound, RevisionNotFound, EntryNotFound) that `hf_raise_for_status`
turns into RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError. Pushes (create, preupload,
commit) need `Authorization: Bearer ...`, else 401. Xet stays off because nothing advertises it: no
`X-Xet-Hash` header or `xet-auth` link on resolve, no `xetHash` in the tree, no "lfs" upload mode.

Skipping unchanged files is client-side. preupload returns each file's git sha1 as `oid`; create_commit and
upload_folder/push_to_hub drop a file whose local git sha1 (`CommitOperationAdd._local_oid`) matches, and with
nothing left make no commit and return the head commit. To know before pushing:
`HfApi().verify_repo_checksums(repo_id, local_dir=folder)` compares the folder with the tree (git sha1
`blob_id`, or `lfs.sha256` for LFS files) and lists `mismatches`, `missing_paths` (e.g. `.gitattributes`)
and `extra_paths`.
"""

import base64
import hashlib
import http.client
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from re import fullmatch
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

GITATTRIBUTES = b"*.bin filter=lfs diff=lfs merge=lfs -text\n*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
_R = r"(?P<repo>[^/]+/[^/]+)"
_ROUTES = [  # (method, regex on the still-quoted path, handler); GET routes also answer HEAD
    ("POST", r"/api/repos/create", "_create_repo"),
    ("POST", r"/api/validate-yaml", "_validate_yaml"),
    ("GET", rf"/api/models/{_R}(?:/revision/(?P<rev>[^/]+))?", "_info"),
    ("GET", rf"/api/models/{_R}/tree/(?P<rev>[^/]+)(?:/(?P<path>.+))?", "_tree"),
    ("POST", rf"/api/models/{_R}/paths-info/(?P<rev>[^/]+)", "_paths_info"),
    ("POST", rf"/api/models/{_R}/preupload/(?P<rev>[^/]+)", "_preupload"),
    ("POST", rf"/api/models/{_R}/commit/(?P<rev>[^/]+)", "_commit"),
    ("GET", rf"/{_R}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "_resolve"),
]
_PUSH = {"_create_repo", "_preupload", "_commit"}


def git_sha1(data: bytes) -> str:
    """The git blob id of `data` (`git hash-object`): the Hub's `oid` and `ETag` of a regular file."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _file(path: str, data: bytes) -> dict:
    return {"type": "file", "path": path, "size": len(data), "oid": git_sha1(data)}


def _folder(path: str) -> dict:
    return {"type": "directory", "path": path, "size": 0, "oid": git_sha1(path.encode())}


class HubError(Exception):
    def __init__(self, status: int, code: str | None, message: str, headers=None, body=None):
        super().__init__(message)
        self.status, self.headers, self.body = status, dict(headers or {}), body or {"error": message}
        self.headers["X-Error-Message"] = message
        if code:
            self.headers["X-Error-Code"] = code


@dataclass
class Commit:
    sha: str
    files: dict[str, bytes]  # path -> content: the whole snapshot
    date: str


class HubServer:
    """A real HTTP server on 127.0.0.1 (random free port) speaking the subset of the Hugging Face Hub API
    that huggingface_hub uses to create repos, commit files and download snapshots."""

    def __init__(self):
        self.url = ""
        self.repos: dict[str, list[Commit]] = {}  # repo id -> commits, oldest first; `main` is the last
        self.requests: list[str] = []  # "METHOD /path" of each request, to see what the client calls
        self.unhandled: list[str] = []  # requests with no route (an endpoint this server lacks) or a crash
        self._lock = threading.Lock()
        self._httpd = None

    def start(self) -> "HubServer":
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.hub = self
        port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{port}"
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("HEAD", "/")  # returns once serve_forever answers
        conn.getresponse()
        conn.close()
        self.requests.clear()
        self.unhandled.clear()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()  # closes the listening socket: the port is free again
            self._httpd = None

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def commits(self, repo_id: str) -> list[str]:
        """Commit shas of `repo_id`, oldest first (the first is the repo's initial commit)."""
        return [c.sha for c in self._commits(repo_id)]

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """Path -> bytes of every file of `repo_id` at `revision` ("main" or a commit sha)."""
        return dict(self._snapshot(repo_id, revision).files)

    # ---- storage

    def _commits(self, repo_id: str) -> list[Commit]:
        if repo_id not in self.repos:
            raise HubError(404, "RepoNotFound", f"Repository not found: {repo_id}")
        return self.repos[repo_id]

    def _snapshot(self, repo_id: str, rev: str) -> Commit:
        commits = self._commits(repo_id)
        found = [c for c in commits if c.sha == rev] or (commits[-1:] if rev == "main" else [])
        if not found:
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        return found[0]

    def _add_commit(self, repo_id: str, files: dict[str, bytes], summary: str) -> str:
        now = time.time()
        sha = hashlib.sha1(f"{repo_id}{len(self.repos[repo_id])}{summary}{now}".encode()).hexdigest()
        date = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
        self.repos[repo_id].append(Commit(sha, files, date))
        return sha

    # ---- endpoints: (args from the path, query, body) -> a JSON value, or (bytes, headers)

    def _create_repo(self, args, query, body):
        payload = json.loads(body)
        if payload.get("type", "model") != "model":
            raise HubError(400, None, "Only model repos are supported")
        repo_id = f"{payload.get('organization') or 'user'}/{payload['name']}"
        if repo_id in self.repos:  # exist_ok=True reads the url from this answer too
            raise HubError(409, None, "You already created this model repo",
                           body={"error": "You already created this model repo", "url": f"{self.url}/{repo_id}"})
        self.repos[repo_id] = []
        self._add_commit(repo_id, {".gitattributes": GITATTRIBUTES}, "initial commit")
        return {"url": f"{self.url}/{repo_id}", "name": repo_id, "id": repo_id}

    def _validate_yaml(self, args, query, body):
        content = json.loads(body)["content"]
        if content.startswith("---"):
            try:
                metadata = yaml.safe_load(content.split("---")[1])
            except yaml.YAMLError as e:
                metadata = str(e)
            if not isinstance(metadata, (dict, type(None))):  # the client raises ValueError on these errors
                raise HubError(400, None, "Invalid metadata", body={"errors": [{"message": str(metadata)}]})
        return {"errors": [], "warnings": []}

    def _info(self, args, query, body):
        commit = self._snapshot(args["repo"], args.get("rev", "main"))
        siblings = [{"rfilename": p, "size": len(d), "blobId": git_sha1(d)} for p, d in sorted(commit.files.items())]
        return {"id": args["repo"], "sha": commit.sha, "private": False, "lastModified": commit.date,
                "siblings": siblings}

    def _tree(self, args, query, body):
        files, top = self._snapshot(args["repo"], args["rev"]).files, args.get("path", "")
        recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
        prefix, entries = (f"{top}/" if top else ""), {}
        for path, data in sorted(files.items()):
            if path.startswith(prefix):
                parts = path[len(prefix) :].split("/")
                folders = parts[:-1] if recursive else parts[: min(1, len(parts) - 1)]
                for i in range(1, len(folders) + 1):
                    entries[prefix + "/".join(folders[:i])] = _folder(prefix + "/".join(folders[:i]))
                if recursive or len(parts) == 1:
                    entries[path] = _file(path, data)
        if top and not entries:
            raise HubError(404, "EntryNotFound", f"{top} does not exist on {args['rev']}")
        return list(entries.values())

    def _paths_info(self, args, query, body):
        files = self._snapshot(args["repo"], args["rev"]).files
        folders = {p.rsplit("/", n)[0] for p in files for n in range(1, p.count("/") + 1)}
        paths = parse_qs(body.decode()).get("paths", [])
        return [_file(p, files[p]) if p in files else _folder(p) for p in paths if p in files or p in folders]

    def _preupload(self, args, query, body):
        files = self._snapshot(args["repo"], args["rev"]).files
        return {"files": [
            {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
             "oid": git_sha1(files[f["path"]]) if f["path"] in files else None}
            for f in json.loads(body)["files"]
        ]}

    def _commit(self, args, query, body):
        if args["rev"] != "main":
            raise HubError(404, "RevisionNotFound", f"Can only commit to main, not {args['rev']}")
        head = self._snapshot(args["repo"], "main")
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        files = dict(head.files)
        for key, value in ((line["key"], line["value"]) for line in lines):
            if key == "header" and value.get("parentCommit") not in (None, head.sha):
                raise HubError(412, None, "A commit has happened since. Please refresh and try again.")
            elif key == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                if files.pop(value["path"], None) is None:
                    raise HubError(404, "EntryNotFound", f"A file with this name doesn't exist: {value['path']}")
            elif key == "deletedFolder":
                files = {p: d for p, d in files.items() if not p.startswith(value["path"].rstrip("/") + "/")}
            elif key != "header":
                raise HubError(400, None, f"Unsupported commit operation {key!r}: only regular files")
        sha = self._add_commit(args["repo"], files, lines[0]["value"]["summary"])
        return {"commitUrl": f"{self.url}/{args['repo']}/commit/{sha}", "commitOid": sha, "success": True}

    def _resolve(self, args, query, body):
        commit = self._snapshot(args["repo"], args["rev"])
        if args["path"] not in commit.files:  # X-Repo-Commit lets the client cache the file's absence
            raise HubError(404, "EntryNotFound", f"{args['path']} not found", {"X-Repo-Commit": commit.sha})
        data = commit.files[args["path"]]
        return data, {"X-Repo-Commit": commit.sha, "ETag": f'"{git_sha1(data)}"',
                      "Content-Type": "application/octet-stream"}


class _Server(ThreadingHTTPServer):
    request_queue_size = 64  # snapshot_download opens up to 8 connections at once
    daemon_threads = True


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def log_message(self, format, *args):
        pass

    def _dispatch(self, method: str) -> None:
        hub: HubServer = self.server.hub
        url = urlsplit(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        hub.requests.append(f"{method} {url.path}")
        status, headers = 200, {"Content-Type": "application/json"}
        try:
            route = next(((name, m) for verb, pattern, name in _ROUTES
                          if verb == method.replace("HEAD", "GET") and (m := fullmatch(pattern, url.path))), None)
            if route is None:
                hub.unhandled.append(f"{method} {url.path}")
                raise HubError(404, None, f"No route for {method} {url.path}")
            name, match = route
            if name in _PUSH and not self.headers.get("Authorization", "").startswith("Bearer "):
                raise HubError(401, None, "A token is required to push")
            args = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
            with hub._lock:
                result = getattr(hub, name)(args, parse_qs(url.query), body)
            payload, headers = result if isinstance(result, tuple) else (json.dumps(result).encode(), headers)
        except HubError as e:
            status, payload = e.status, json.dumps(e.body).encode()
            headers.update(e.headers)
        except Exception as e:  # a bug here: answer it rather than drop the connection, and record it
            hub.unhandled.append(f"{method} {url.path}: {e!r}")
            status, payload = 500, json.dumps({"error": repr(e)}).encode()
        self.send_response(status)
        for key, value in {**headers, "Content-Length": str(len(payload))}.items():
            self.send_header(key, value)
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(payload)


def hub_env(server: HubServer, cache_dir, token: str | None = "hf_test") -> dict[str, str]:
    """Environment variables that point a huggingface_hub imported later (e.g. in a subprocess) at `server`."""
    env = {"HF_ENDPOINT": server.url, "HF_HUB_CACHE": str(cache_dir), "HF_HUB_OFFLINE": "0",
           "HF_HUB_DISABLE_TELEMETRY": "1", "HF_TOKEN_PATH": f"{cache_dir}.token"}
    return env | ({"HF_TOKEN": token} if token is not None else {})


def use_hub(monkeypatch, server: HubServer, cache_dir, token: str | None = "hf_test") -> None:
    """Point the already imported huggingface_hub at `server`, its cache at `cache_dir`, its token at `token`.

    Settings are read at import time, so besides the env vars this patches their module-level copies:
    `constants.*` (read at call time by hf_hub_download, snapshot_download and every new HfApi), the
    module-level `hf_api.api` behind `huggingface_hub.create_repo`/`upload_folder`/..., and the cache
    manager's default cache. No token file is read: `token=None` really pushes without a token. Telemetry
    off also skips the user agent's lookup of `/api/agent-harnesses`.
    """
    from huggingface_hub import constants, hf_api
    from huggingface_hub.utils import _cache_manager

    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in hub_env(server, cache_dir, token).items():
        monkeypatch.setenv(name, value)
    patches = {
        "ENDPOINT": server.url,
        "HUGGINGFACE_CO_URL_TEMPLATE": server.url + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_HUB_CACHE": str(cache_dir),
        "HF_HUB_OFFLINE": False,
        "HF_HUB_DISABLE_TELEMETRY": True,
        "HF_HUB_DISABLE_IMPLICIT_TOKEN": False,
        "HF_TOKEN_PATH": f"{cache_dir}.token",
        "HF_STORED_TOKENS_PATH": f"{cache_dir}.stored_tokens",
    }
    for name, value in patches.items():
        monkeypatch.setattr(constants, name, value)
    monkeypatch.setattr(hf_api.api, "endpoint", server.url)
    monkeypatch.setattr(_cache_manager, "HF_HUB_CACHE", str(cache_dir))


def set_offline(monkeypatch) -> None:
    """Switch huggingface_hub to offline mode (`HF_HUB_OFFLINE=1`): it then loads from the cache only."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
