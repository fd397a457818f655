"""A Hub-compatible HTTP server on 127.0.0.1 for tests (test infrastructure, not product code).

It implements what huggingface_hub and datasets call for dataset and model repositories: repo
create (409 with ``url`` when it exists), repo info by revision, preupload, commit (NDJSON, with
the LFS batch protocol and uploads for large files), refs, tags, branches, tree, paths-info,
resolve (with Range) and validate-yaml. Repositories live in memory (datasets in ``repos``, models
in ``models``); every commit is a full snapshot.

Clients need ``HF_ENDPOINT`` set to :attr:`HubServer.url`, ``HF_HUB_DISABLE_XET=1`` and a token
(any string); a private repository answers 404 to requests without one.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse


@dataclass
class Commit:
    sha: str
    parent: str | None
    files: dict[str, bytes]  # path -> content
    title: str
    date: float


@dataclass
class Repo:
    repo_id: str
    private: bool
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def resolve(self, revision: str) -> Commit | None:
        revision = unquote(revision)
        sha = self.branches.get(revision) or self.tags.get(revision)
        if sha is None and revision.startswith("refs/heads/"):
            sha = self.branches.get(revision[len("refs/heads/"):])
        if sha is None and revision.startswith("refs/tags/"):
            sha = self.tags.get(revision[len("refs/tags/"):])
        if sha is None and revision in self.commits:
            sha = revision
        return self.commits.get(sha) if sha else None


def is_lfs(path: str, size: int) -> bool:
    return path.endswith((".parquet", ".arrow", ".bin", ".safetensors")) or size > 10 * 1024 * 1024


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "HubServer._Server"

    def log_message(self, *args) -> None:
        pass

    # --- plumbing ----------------------------------------------------------------------------

    def _read(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body=None, headers: dict | None = None, raw: bytes | None = None, content_type="application/json"):
        data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _error(self, status: int, message: str, code: str | None = None, **extra):
        headers = {"X-Error-Message": message, **({"X-Error-Code": code} if code else {})}
        self._send(status, {"error": message, **extra}, headers=headers)

    @property
    def hub(self) -> "HubServer":
        return self.server.owner

    def _faulted(self) -> bool:
        """Apply the hub's injected faults to this request: a delay, or the server's death
        (this request's connection dropped unanswered, and every later one)."""
        hub = self.hub
        for pattern, seconds in hub.delays.items():
            if re.search(pattern, f"{self.command} {self.path}"):
                time.sleep(seconds)
        if hub.dead or (hub.kill_on and re.search(hub.kill_on, f"{self.command} {self.path}")):
            hub.dead = True
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return True
        return False

    def _authorized(self) -> bool:
        return (self.headers.get("Authorization") or "").startswith("Bearer ")

    def _at(self, repo_id: str, revision: str) -> tuple[Repo | None, Commit | None]:
        """The repository and the commit a revision names, or an error answer and ``None``."""
        repo = self._repo(repo_id)
        if repo is None:
            return None, None
        commit = repo.resolve(revision)
        if commit is None:
            self._error(404, f"Invalid rev id: {unquote(revision)}", code="RevisionNotFound")
        return repo, commit

    @property
    def _store(self) -> dict[str, Repo]:
        return self.hub.models if getattr(self, "kind", "dataset") == "model" else self.hub.repos

    def _route(self, path: str, pattern: str) -> re.Match | None:
        """Match ``pattern`` (written for datasets: ``/api/datasets/...``, ``/datasets/...``)
        against ``path`` for a dataset or a model repository, and remember which."""
        if m := re.fullmatch(pattern, path):
            self.kind = "dataset"
            return m
        model_pattern = pattern.replace("/api/datasets/", "/api/models/")
        if model_pattern.startswith("/datasets/"):
            model_pattern = model_pattern[len("/datasets"):]
        if m := re.fullmatch(model_pattern, path):
            self.kind = "model"
            return m
        return None

    def _repo(self, repo_id: str) -> Repo | None:
        repo = self._store.get(repo_id)
        if repo is None or (repo.private and not self._authorized()):
            self._error(404, "Repository not found", code="RepoNotFound")
            return None
        return repo

    # --- routes ------------------------------------------------------------------------------

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        self.hub.calls.append(("GET", self.path))
        if self._faulted():
            return None
        url = urlparse(self.path)
        path = url.path
        query = parse_qs(url.query)
        if m := self._route(path, r"/api/datasets/([^/]+/[^/]+)/refs"):
            return self._refs(m.group(1))
        if m := self._route(path, r"/api/datasets/([^/]+/[^/]+)/tree/([^/]+)(?:/(.*))?"):
            return self._tree(m.group(1), m.group(2), unquote(m.group(3) or ""), query.get("recursive", ["false"])[0] in ("true", "True", "1"))
        if m := self._route(path, r"/api/datasets/([^/]+/[^/]+)(?:/revision/(.+))?"):
            return self._info(m.group(1), m.group(2) or "main")
        if m := self._route(path, r"/datasets/([^/]+/[^/]+)/resolve/([^/]+)/(.+)"):
            return self._resolve(m.group(1), m.group(2), unquote(m.group(3)))
        if path == "/api/whoami-v2":
            return self._send(200, {"type": "user", "name": "symgen", "orgs": [], "auth": {"accessToken": {"role": "write"}}})
        self._error(404, f"no route GET {path}")

    def do_PUT(self):
        self.hub.calls.append(("PUT", self.path))
        body = self._read()
        if self._faulted():
            return None
        if m := re.fullmatch(r"/lfs-upload/([0-9a-f]{64})", urlparse(self.path).path):
            if hashlib.sha256(body).hexdigest() != m.group(1):
                return self._error(400, "LFS upload: sha256 mismatch")
            self.hub.lfs[m.group(1)] = body
            return self._send(200, {})
        self._error(404, f"no route PUT {self.path}")

    def do_DELETE(self):
        self.hub.calls.append(("DELETE", self.path))
        self._read()
        if m := self._route(urlparse(self.path).path, r"/api/datasets/([^/]+/[^/]+)/tag/(.+)"):
            repo = self._repo(m.group(1))
            if repo is not None:
                if repo.tags.pop(unquote(m.group(2)), None) is None:
                    return self._error(404, "Tag not found")
                return self._send(200, {})
            return None
        self._error(404, f"no route DELETE {self.path}")

    def do_POST(self):
        self.hub.calls.append(("POST", self.path))
        body = self._read()
        if self._faulted():
            return None
        path = urlparse(self.path).path
        with self.hub.lock:
            if path == "/api/repos/create":
                return self._create(json.loads(body))
            if path == "/api/validate-yaml":
                return self._send(200, {"errors": [], "warnings": []})
            if m := self._route(path, r"/api/datasets/([^/]+/[^/]+)/preupload/(.+)"):
                return self._preupload(m.group(1), m.group(2), json.loads(body))
            if m := self._route(path, r"/datasets/([^/]+/[^/]+)\.git/info/lfs/objects/batch"):
                return self._lfs_batch(m.group(1), json.loads(body))
            if m := self._route(path, r"/api/datasets/([^/]+/[^/]+)/commit/(.+)"):
                return self._commit(m.group(1), m.group(2), body)
            if m := self._route(path, r"/api/datasets/([^/]+/[^/]+)/tag/(.+)"):
                return self._tag(m.group(1), m.group(2), json.loads(body or b"{}"))
            if m := self._route(path, r"/api/datasets/([^/]+/[^/]+)/branch/(.+)"):
                return self._branch(m.group(1), unquote(m.group(2)), json.loads(body or b"{}"))
            if m := self._route(path, r"/api/datasets/([^/]+/[^/]+)/paths-info/(.+)"):
                return self._paths_info(m.group(1), m.group(2), body)
        self._error(404, f"no route POST {path}")

    # --- handlers ----------------------------------------------------------------------------

    def _url(self, repo_id: str) -> str:
        return f"{self.hub.url}/{repo_id}" if getattr(self, "kind", "dataset") == "model" else f"{self.hub.url}/datasets/{repo_id}"

    def _create(self, payload: dict):
        if payload.get("type") not in ("dataset", "model", None):
            return self._error(400, "this test Hub serves dataset and model repositories only")
        self.kind = payload.get("type") or "model"
        repo_id = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else f"symgen/{payload['name']}"
        if repo_id in self._store:
            return self._error(409, f"You already created this {self.kind} repo", url=self._url(repo_id))
        private = payload.get("private") or payload.get("visibility") == "private"
        repo = Repo(repo_id, bool(private))
        initial = self.hub.new_commit(None, {".gitattributes": b"*.parquet filter=lfs diff=lfs merge=lfs -text\n"}, "initial commit")
        repo.commits[initial.sha] = initial
        repo.branches["main"] = initial.sha
        self._store[repo_id] = repo
        self._send(200, {"url": self._url(repo_id), "name": repo_id, "id": repo_id})

    def _entry(self, path: str, content: bytes, expand: bool = False) -> dict:
        entry = {"type": "file", "path": path, "size": len(content), "oid": hashlib.sha1(content).hexdigest()}
        if is_lfs(path, len(content)):
            entry["lfs"] = {"oid": hashlib.sha256(content).hexdigest(), "size": len(content), "pointerSize": 130}
        if expand:
            entry["lastCommit"] = {"id": "0" * 40, "title": "", "date": "2026-01-01T00:00:00.000Z"}
        return entry

    def _info(self, repo_id: str, revision: str):
        repo, commit = self._at(repo_id, revision)
        if commit is None:
            return None
        card = commit.files.get("README.md", b"").decode()
        card_data = {}
        if card.startswith("---"):
            import yaml

            card_data = yaml.safe_load(card.split("---")[1]) or {}
        self._send(200, {
            "_id": repo_id, "id": repo_id, "author": repo_id.split("/")[0], "sha": commit.sha, "private": repo.private,
            "gated": False, "disabled": False, "downloads": 0, "likes": 0, "tags": card_data.get("tags", []),
            "cardData": card_data, "lastModified": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(commit.date)),
            "createdAt": "2026-01-01T00:00:00.000Z",
            "siblings": [{"rfilename": p, "size": len(c)} for p, c in sorted(commit.files.items())],
        })

    def _refs(self, repo_id: str):
        repo = self._repo(repo_id)
        if repo is None:
            return None
        self._send(200, {
            "branches": [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": s} for n, s in repo.branches.items()],
            "tags": [{"name": n, "ref": f"refs/tags/{n}", "targetCommit": s} for n, s in repo.tags.items()],
            "converts": [],
        })

    def _tree(self, repo_id: str, revision: str, folder: str, recursive: bool):
        repo, commit = self._at(repo_id, revision)
        if commit is None:
            return None
        prefix = folder.strip("/") + "/" if folder.strip("/") else ""
        entries, folders = [], set()
        for path, content in sorted(commit.files.items()):
            if not path.startswith(prefix):
                continue
            rest = path[len(prefix):]
            if "/" in rest and not recursive:
                folders.add(prefix + rest.split("/")[0])
                continue
            if recursive:
                parts = rest.split("/")[:-1]
                for i in range(1, len(parts) + 1):
                    folders.add(prefix + "/".join(parts[:i]))
            entries.append(self._entry(path, content))
        if prefix and not entries and not folders:
            return self._error(404, f"{folder} does not exist on {revision}")
        listing = [{"type": "directory", "path": f, "oid": hashlib.sha1(f.encode()).hexdigest(), "size": 0} for f in sorted(folders)]
        self._send(200, listing + entries)

    def _paths_info(self, repo_id: str, revision: str, body: bytes):
        repo, commit = self._at(repo_id, revision)
        if commit is None:
            return None
        if self.headers.get("Content-Type", "").startswith("application/json"):
            payload = json.loads(body)
            paths, expand = payload.get("paths", []), payload.get("expand", False)
        else:
            form = parse_qs(body.decode())
            paths, expand = form.get("paths", []), form.get("expand", ["false"])[0] in ("true", "True", "1")
        result = []
        for path in paths:
            path = path.strip("/")
            if path in commit.files:
                result.append(self._entry(path, commit.files[path], expand))
            elif any(p.startswith(path + "/") for p in commit.files):
                result.append({"type": "directory", "path": path, "oid": hashlib.sha1(path.encode()).hexdigest()})
        self._send(200, result)

    def _resolve(self, repo_id: str, revision: str, path: str):
        repo, commit = self._at(repo_id, revision)
        if commit is None:
            return None
        if path not in commit.files:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("X-Error-Message", "Entry not found")
            self.send_header("X-Repo-Commit", commit.sha)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        content = commit.files[path]
        etag = hashlib.sha256(content).hexdigest() if is_lfs(path, len(content)) else hashlib.sha1(content).hexdigest()
        headers = {"X-Repo-Commit": commit.sha, "ETag": f'"{etag}"', "Accept-Ranges": "bytes"}
        if is_lfs(path, len(content)):
            headers.update({"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(len(content))})
        status = 200
        if (span := self.headers.get("Range")) and (m := re.fullmatch(r"bytes=(\d+)-(\d*)", span)):
            start = int(m.group(1))
            end = min(int(m.group(2)) if m.group(2) else len(content) - 1, len(content) - 1)
            headers["Content-Range"] = f"bytes {start}-{end}/{len(content)}"
            content = content[start:end + 1]
            status = 206
        self._send(status, raw=content, headers=headers, content_type="application/octet-stream")

    def _preupload(self, repo_id: str, revision: str, payload: dict):
        repo = self._repo(repo_id)
        if repo is None:
            return None
        commit = repo.resolve(revision)
        files = [
            {"path": f["path"], "uploadMode": "lfs" if is_lfs(f["path"], f.get("size", 0)) else "regular", "shouldIgnore": False}
            for f in payload.get("files", [])
        ]
        self._send(200, {"files": files, "commitOid": commit.sha if commit else None})

    def _lfs_batch(self, repo_id: str, payload: dict):
        if self._repo(repo_id) is None:
            return None
        objects = []
        for obj in payload.get("objects", []):
            entry = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in self.hub.lfs:
                entry["actions"] = {"upload": {"href": f"{self.hub.url}/lfs-upload/{obj['oid']}", "header": {}, "expires_in": 3600}}
            objects.append(entry)
        self._send(200, {"transfer": "basic", "objects": objects, "hash_algo": "sha256"}, content_type="application/vnd.git-lfs+json")

    def _commit(self, repo_id: str, revision: str, body: bytes):
        repo = self._repo(repo_id)
        if repo is None:
            return None
        branch = unquote(revision)
        if branch not in repo.branches:
            return self._error(404, f"Invalid rev id: {branch}")
        parent = repo.commits[repo.branches[branch]]
        files = dict(parent.files)
        title = ""
        for line in body.decode().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                title = value.get("summary", "")
                if value.get("parentCommit") and value["parentCommit"] != parent.sha:
                    return self._error(412, "A commit has happened since. Please refresh and try again.")
            elif key == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "lfsFile":
                if value["oid"] not in self.hub.lfs:
                    return self._error(422, f"LFS object {value['oid']} was not uploaded")
                files[value["path"]] = self.hub.lfs[value["oid"]]
            elif key == "deletedFile":
                files.pop(value["path"], None)
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                files = {p: c for p, c in files.items() if not p.startswith(prefix)}
            else:
                return self._error(400, f"unsupported commit operation {key}")
        commit = self.hub.new_commit(parent.sha, files, title)
        repo.commits[commit.sha] = commit
        repo.branches[branch] = commit.sha
        self.hub.commit_count += 1
        self._send(200, {"commitOid": commit.sha, "commitUrl": f"{self._url(repo_id)}/commit/{commit.sha}", "pullRequestUrl": None})

    def _tag(self, repo_id: str, revision: str, payload: dict):
        repo, commit = self._at(repo_id, revision)
        if commit is None:
            return None
        tag = payload["tag"]
        if tag in repo.tags:
            return self._error(409, f"Tag {tag} already exists")
        repo.tags[tag] = commit.sha
        self._send(200, {})

    def _branch(self, repo_id: str, branch: str, payload: dict):
        repo = self._repo(repo_id)
        if repo is None:
            return None
        if branch in repo.branches:
            return self._error(409, f"Branch {branch} already exists")
        start = repo.resolve(payload.get("startingPoint") or "main")
        repo.branches[branch] = start.sha
        self._send(200, {})


class HubServer:
    """The in-memory Hub on a free port of 127.0.0.1; use as a context manager.

    Attributes:
        url: the endpoint to put in ``HF_ENDPOINT``.
        repos: dataset repo id -> :class:`Repo`.
        models: model repo id -> :class:`Repo`.
        calls: ``(method, path)`` of every request, in order.
        commit_count: commits made through the API (repo creation excluded).
        delays: injected delays, ``{regex on "METHOD PATH": seconds}``.
        kill_on: a regex on ``"METHOD PATH"``: the first matching request kills the server (its
            connection and every later one dropped unanswered), as a Hub dying mid-push.
    """

    class _Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 256  # the listen backlog: many clients connect at once
        owner: "HubServer"

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.models: dict[str, Repo] = {}
        self.lfs: dict[str, bytes] = {}
        self.calls: list[tuple[str, str]] = []
        self.commit_count = 0
        self.delays: dict[str, float] = {}
        self.kill_on: str | None = None
        self.dead = False
        self.lock = threading.RLock()
        self._server = self._Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._counter = 0

    def new_commit(self, parent: str | None, files: dict[str, bytes], title: str) -> Commit:
        self._counter += 1
        digest = hashlib.sha1(f"{parent}|{self._counter}|{title}|{sorted(files)}".encode()).hexdigest()
        return Commit(digest, parent, files, title, time.time())

    def __enter__(self) -> "HubServer":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._server.shutdown()
        self._server.server_close()


def symgen_on_hub(hub: HubServer, *args: str) -> subprocess.CompletedProcess:
    """Run ``symgen ARGS`` in a subprocess against ``hub`` (its ``env``, from the ``hub`` fixture
    of tests/conftest.py), capturing its output (900 s at most)."""
    return subprocess.run([sys.executable, "-m", "symgen_datasets.cli", *args], env=hub.env, capture_output=True,
                          text=True, timeout=900)


if __name__ == "__main__":  # a Hub for trying the CLI by hand: python -m tests.hub_server
    import time

    with HubServer() as hub:
        print(f"HF_ENDPOINT={hub.url} HF_HUB_DISABLE_XET=1 HF_TOKEN=hf_test_token", flush=True)
        while True:
            time.sleep(3600)
