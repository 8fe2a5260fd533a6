"""A loopback stand-in for the Hugging Face Hub, faithful enough for the real ``huggingface_hub`` client.

It serves the part of the Hub's HTTP API that publishing and reading a dataset use, shaped after what
huggingface_hub 2.4.0 sends and parses (read in its source: ``hf_api.py``, ``_commit_api.py``,
``lfs.py``, ``file_download.py``, ``hf_file_system.py``):

- ``POST /api/repos/create`` (409 when it exists), ``GET /api/{type}s/{id}[/revision/{rev}]``,
  ``GET /api/whoami-v2``, ``POST /api/validate-yaml``;
- ``POST /api/{type}s/{id}/preupload/{rev}`` (upload mode from the repo's ``.gitattributes`` LFS
  patterns, size and binary sample; the remote oid of files already there);
- the Git LFS batch API ``POST /{prefix}{id}.git/info/lfs/objects/batch`` with basic transfer: a
  ``PUT`` to a storage URL on a second port (another origin, like the Hub's storage), then ``verify``;
  objects already stored get no actions;
- ``POST /api/{type}s/{id}/commit/{rev}`` (ndjson: ``header`` first, then ``file`` base64 /
  ``lfsFile`` / ``deletedFile`` / ``deletedFolder``; ``parentCommit`` checked; LFS objects must exist);
- ``GET /api/{type}s/{id}/tree/{rev}[/{path}]`` (``recursive``, ``expand``), ``POST .../paths-info/{rev}``;
- ``GET``/``HEAD /{prefix}{id}/resolve/{rev}/{path}``: small git files answered directly with
  ``ETag`` (git blob sha1) and ``X-Repo-Commit``; LFS files as a 302 to the storage origin with
  ``X-Linked-Etag`` (sha256) and ``X-Linked-Size``; byte ranges honoured on both origins;
- errors carry ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``) as the Hub's do.

Private repos answer 404 ``RepoNotFound`` without the right token; writes need it. Every request is
logged (method, origin, path, whether it carried a token) so tests can check, for example, that the
token never travels to the storage origin. Xet storage is not emulated: clients run with
``HF_HUB_DISABLE_XET=1`` and use the LFS protocol. Set ``HF_ENDPOINT`` to :attr:`HubStandIn.endpoint`
before importing ``huggingface_hub`` (the client reads it at import).
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlsplit

import yaml

PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}
# the patterns a new Hub repo's .gitattributes sends to LFS (abridged to the file kinds that matter here)
LFS_PATTERNS = ["*.7z", "*.arrow", "*.bin", "*.bz2", "*.gz", "*.h5", "*.npy", "*.npz", "*.parquet", "*.pickle",
                "*.pkl", "*.pt", "*.pth", "*.safetensors", "*.tar", "*.tar.*", "*.tgz", "*.zip", "*.zst", "*.png",
                "*.jpg", "*.jpeg", "*.webp", "*.binvox"]
GITATTRIBUTES = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in LFS_PATTERNS).encode()
LFS_THRESHOLD = 10 * 1024 * 1024


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Entry:
    """A file in a commit: git-stored bytes, or an LFS pointer (sha256) into the storage."""

    size: int
    blob_id: str
    content: bytes | None = None
    sha256: str | None = None


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    commits: list[tuple[str, str, dict[str, Entry]]] = field(default_factory=list)  # (oid, title, tree)

    def head(self) -> tuple[str, str, dict[str, Entry]]:
        return self.commits[-1]

    def commit_at(self, revision: str) -> tuple[str, str, dict[str, Entry]] | None:
        if revision == "main":
            return self.head()
        return next((c for c in self.commits if c[0] == revision), None)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return  # a client that stopped reading a stream early (e.g. a streaming reader that had enough)
        super().handle_error(request, client_address)


class HubError(Exception):
    def __init__(self, status: int, code: str | None, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class HubStandIn:
    """Start with ``with HubStandIn(token=...) as hub:``; ``hub.endpoint`` is the URL for ``HF_ENDPOINT``."""

    def __init__(self, token: str = "hf_standin_secret_token", user: str = "tester") -> None:
        self.token, self.user = token, user
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs: dict[str, bytes] = {}
        self.log: list[dict] = []
        self.fail_on: dict[str, set[int]] = {}  # request kind -> which of its requests (1 = first) answer 500
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._api = _Server(("127.0.0.1", 0), self._handler("api"))
        self._storage = _Server(("127.0.0.1", 0), self._handler("storage"))
        self._threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in (self._api, self._storage)]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._api.server_address[1]}"

    @property
    def storage(self) -> str:
        return f"http://127.0.0.1:{self._storage.server_address[1]}"

    def __enter__(self) -> "HubStandIn":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        for server in (self._api, self._storage):
            server.shutdown()
            server.server_close()

    # ------------------------------------------------------------------ helpers for tests

    def files(self, repo_id: str, repo_type: str = "dataset", revision: str = "main") -> dict[str, bytes]:
        """Path -> content of a commit (LFS files resolved)."""
        _, _, tree = self.repos[(repo_type, repo_id)].commit_at(revision)
        return {p: e.content if e.content is not None else self.lfs[e.sha256] for p, e in tree.items()}

    def requests(self, kind: str | None = None) -> list[dict]:
        return [r for r in self.log if kind is None or r["kind"] == kind]

    # ------------------------------------------------------------------ HTTP plumbing

    def _handler(self, origin: str):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _handle(self) -> None:
                body = self._body() if self.command in ("POST", "PUT") else b""
                try:
                    status, headers, payload = hub._route(origin, self.command, self.path, self.headers, body)
                except HubError as error:
                    status, payload = error.status, json.dumps({"error": error.message}).encode()
                    headers = {"Content-Type": "application/json", "X-Error-Message": error.message}
                    if error.code:
                        headers["X-Error-Code"] = error.code
                self.send_response(status)
                headers.setdefault("Content-Length", str(len(payload)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_HEAD = do_POST = do_PUT = _handle

        return Handler

    def _authorized(self, headers) -> bool | None:
        """True: the right token; False: a wrong one; None: none sent."""
        value = headers.get("Authorization")
        if value is None:
            return None
        return value == f"Bearer {self.token}"

    def _repo(self, repo_type: str, repo_id: str, headers, write: bool = False) -> Repo:
        auth = self._authorized(headers)
        if auth is False:
            raise HubError(401, None, "Invalid credentials in Authorization header")
        repo = self.repos.get((repo_type, repo_id))
        if repo is None or (repo.private and not auth):
            raise HubError(404, "RepoNotFound", f"Repository not found: {repo_id}")
        if write and not auth:
            raise HubError(401, None, "You must be authenticated to write")
        return repo

    @staticmethod
    def _json(value, status: int = 200, headers: dict | None = None):
        return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(value).encode()

    def _route(self, origin: str, method: str, raw_path: str, headers, body: bytes):
        url = urlsplit(raw_path)
        path, query = url.path, parse_qs(url.query)
        kind = self._kind(origin, method, path)
        with self._lock:
            self.log.append({"origin": origin, "method": method, "path": path, "kind": kind,
                             "authorization": headers.get("Authorization"), "headers": dict(headers.items())})
            self._counts[kind] = self._counts.get(kind, 0) + 1
            if self._counts[kind] in self.fail_on.get(kind, ()):
                raise HubError(500, None, "injected server error")
        if origin == "storage":
            return self._storage_request(method, path, headers, body)
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if path == "/api/whoami-v2":
            if not self._authorized(headers):
                raise HubError(401, None, "Invalid credentials in Authorization header")
            return self._json({"type": "user", "name": self.user, "auth": {"accessToken": {"role": "write"}}})
        if path == "/api/repos/create" and method == "POST":
            return self._create(json.loads(body), headers)
        if path == "/api/validate-yaml" and method == "POST":
            return self._validate_yaml(json.loads(body))
        if parts[0] == "api" and len(parts) >= 4 and parts[1].endswith("s"):
            repo_type, repo_id, rest = parts[1][:-1], f"{parts[2]}/{parts[3]}", parts[4:]
            if not rest and method == "GET":
                return self._info(repo_type, repo_id, "main", headers, query)
            action = rest[0]
            if action == "revision" and method == "GET":
                return self._info(repo_type, repo_id, rest[1], headers, query)
            if action == "preupload" and method == "POST":
                return self._preupload(repo_type, repo_id, rest[1], json.loads(body), headers)
            if action == "commit" and method == "POST":
                return self._commit(repo_type, repo_id, rest[1], body, headers)
            if action == "tree" and method == "GET":
                # the client quotes the path with safe="": it arrives as one %2F-joined segment
                return self._tree(repo_type, repo_id, rest[1], "/".join(rest[2:]), headers, query)
            if action == "paths-info" and method == "POST":
                form = parse_qs(body.decode())
                return self._paths_info(repo_type, repo_id, rest[1], form.get("paths", []), headers,
                                        form.get("expand", ["False"])[0] == "True")
        repo_type, offset = ("dataset", 1) if parts[0] == "datasets" else ("space", 1) if parts[0] == "spaces" \
            else ("model", 0)
        if len(parts) >= offset + 2 and parts[offset + 1].endswith(".git") and path.endswith("/info/lfs/objects/verify"):
            self._repo(repo_type, f"{parts[offset]}/{parts[offset + 1][:-4]}", headers, write=True)
            return self._verify(json.loads(body))
        if len(parts) >= offset + 2 and parts[offset + 1].endswith(".git") and path.endswith("/info/lfs/objects/batch"):
            repo_id = f"{parts[offset]}/{parts[offset + 1][:-4]}"
            return self._lfs_batch(repo_type, repo_id, json.loads(body), headers)
        if len(parts) >= offset + 5 and parts[offset + 2] == "resolve" and method in ("GET", "HEAD"):
            repo_id = f"{parts[offset]}/{parts[offset + 1]}"
            return self._resolve(repo_type, repo_id, parts[offset + 3], "/".join(parts[offset + 4:]), headers)
        raise HubError(404, None, f"no route for {method} {path}")

    @staticmethod
    def _kind(origin: str, method: str, path: str) -> str:
        if origin == "storage":
            return "storage-upload" if method == "PUT" else "storage-download"
        for word in ("preupload", "commit", "tree", "paths-info", "resolve", "lfs/objects/batch", "repos/create",
                     "validate-yaml", "whoami", "verify"):
            if word in path:
                return word.split("/")[0] if word != "lfs/objects/batch" else "lfs-batch"
        return "info"

    # ------------------------------------------------------------------ endpoints

    def _create(self, payload: dict, headers):
        if not self._authorized(headers):
            raise HubError(401, None, "Invalid credentials in Authorization header")
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload.get('organization') or self.user}/{payload['name']}"
        url = f"{self.endpoint}/{PREFIXES[repo_type]}{repo_id}"
        with self._lock:
            if (repo_type, repo_id) in self.repos:
                return self._json({"error": "You already created this repo", "url": url}, 409)
            repo = Repo(repo_type, repo_id, private=payload.get("visibility") == "private")
            repo.commits.append((uuid.uuid4().hex + "00000000", "initial commit", {
                ".gitattributes": Entry(len(GITATTRIBUTES), git_blob_sha1(GITATTRIBUTES), content=GITATTRIBUTES)}))
            self.repos[(repo_type, repo_id)] = repo
        return self._json({"url": url, "name": repo_id, "id": uuid.uuid4().hex})

    @staticmethod
    def _validate_yaml(payload: dict):
        content = payload["content"]
        if content.startswith("---"):
            try:
                yaml.safe_load(content.split("---", 2)[1])
            except yaml.YAMLError as error:
                return HubStandIn._json({"errors": [{"message": str(error)}], "warnings": []}, 400)
        return HubStandIn._json({"errors": [], "warnings": []})

    def _commit_or_404(self, repo: Repo, revision: str):
        found = repo.commit_at(unquote(revision))
        if found is None:
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return found

    def _info(self, repo_type, repo_id, revision, headers, query):
        repo = self._repo(repo_type, repo_id, headers)
        oid, _, tree = self._commit_or_404(repo, revision)
        card = {}
        if "README.md" in tree and tree["README.md"].content.startswith(b"---"):
            card = yaml.safe_load(tree["README.md"].content.decode().split("---", 2)[1]) or {}
        siblings = [{"rfilename": p, **({"size": e.size, "blobId": e.blob_id} if query.get("blobs") else {}),
                     **({"lfs": {"size": e.size, "sha256": e.sha256, "pointerSize": 134}}
                        if e.sha256 and query.get("blobs") else {})} for p, e in sorted(tree.items())]
        return self._json({"id": repo_id, "_id": repo_id, "author": repo_id.split("/")[0], "sha": oid,
                           "private": repo.private, "gated": False, "disabled": False, "downloads": 0, "likes": 0,
                           "tags": [], "cardData": card, "siblings": siblings,
                           "lastModified": "2026-01-01T00:00:00.000Z", "createdAt": "2026-01-01T00:00:00.000Z"})

    @staticmethod
    def _is_lfs(path: str, size: int, sample: bytes) -> bool:
        name = path.rsplit("/", 1)[-1]
        return size >= LFS_THRESHOLD or b"\0" in sample or any(
            fnmatch.fnmatch(name, p) or fnmatch.fnmatch(path, p) for p in LFS_PATTERNS)

    def _preupload(self, repo_type, repo_id, revision, payload, headers):
        repo = self._repo(repo_type, repo_id, headers, write=True)
        _, _, tree = self._commit_or_404(repo, revision)
        files = []
        for item in payload["files"]:
            lfs = self._is_lfs(item["path"], item["size"], base64.b64decode(item["sample"]))
            existing = tree.get(item["path"])
            oid = None if existing is None else (existing.sha256 if lfs else existing.blob_id)
            files.append({"path": item["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                          "oid": oid})
        return self._json({"files": files, "commitOid": tree and repo.head()[0]})

    def _lfs_batch(self, repo_type, repo_id, payload, headers):
        self._repo(repo_type, repo_id, headers, write=True)
        if payload.get("operation") != "upload" or "basic" not in payload.get("transfers", ["basic"]):
            raise HubError(400, None, "only basic uploads are served here")
        objects = []
        for item in payload["objects"]:
            entry = {"oid": item["oid"], "size": item["size"], "authenticated": True}
            if self.lfs.get(item["oid"]) is None:
                verify = f"{self.endpoint}/{PREFIXES[repo_type]}{repo_id}.git/info/lfs/objects/verify"
                entry["actions"] = {"upload": {"href": f"{self.storage}/upload/{item['oid']}/{item['size']}",
                                               "header": {}},
                                    "verify": {"href": verify, "header": {}}}
            objects.append(entry)
        return self._json({"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
                          headers={"Content-Type": "application/vnd.git-lfs+json"})

    def _storage_request(self, method, path, headers, body):
        parts = path.strip("/").split("/")
        if method == "PUT" and parts[0] == "upload":
            oid, size = parts[1], int(parts[2])
            if len(body) != size or hashlib.sha256(body).hexdigest() != oid:
                raise HubError(400, None, "uploaded bytes do not match the announced oid/size")
            with self._lock:
                self.lfs[oid] = body
            return 200, {"ETag": f'"{oid[:32]}"'}, b""
        if method in ("GET", "HEAD") and parts[0] == "lfs" and parts[1] in self.lfs:
            return self._ranged(self.lfs[parts[1]], headers, {"ETag": f'"{parts[1]}"'})
        raise HubError(404, None, "no such object")

    def _verify(self, payload):
        if payload["oid"] not in self.lfs or len(self.lfs[payload["oid"]]) != payload["size"]:
            raise HubError(404, None, "object not uploaded")
        return self._json({"oid": payload["oid"], "size": payload["size"]})

    def _commit(self, repo_type, repo_id, revision, body, headers):
        repo = self._repo(repo_type, repo_id, headers, write=True)
        if headers.get("Content-Type", "").split(";")[0] != "application/x-ndjson":
            raise HubError(400, None, "commit payload must be application/x-ndjson")
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header" or not lines[0]["value"].get("summary"):
            raise HubError(400, None, "first ndjson line must be the commit header with a summary")
        with self._lock:
            head_oid, _, tree = self._commit_or_404(repo, revision)
            parent = lines[0]["value"].get("parentCommit")
            if parent and not head_oid.startswith(parent):
                raise HubError(412, None, f"parent commit {parent} is not the head ({head_oid})")
            tree = dict(tree)
            for line in lines[1:]:
                value = line["value"]
                if line["key"] == "file":
                    content = base64.b64decode(value["content"])
                    tree[value["path"]] = Entry(len(content), git_blob_sha1(content), content=content)
                elif line["key"] == "lfsFile":
                    stored = self.lfs.get(value["oid"])
                    if stored is None or ("size" in value and len(stored) != value["size"]):
                        raise HubError(422, None, f"LFS object {value['oid']} of {value['path']} was never uploaded")
                    pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{value['oid']}\nsize {len(stored)}\n"
                    tree[value["path"]] = Entry(len(stored), git_blob_sha1(pointer.encode()), sha256=value["oid"])
                elif line["key"] == "deletedFile":
                    if tree.pop(value["path"], None) is None:
                        raise HubError(404, "EntryNotFound", f"A file with this name doesn't exist: {value['path']}")
                elif line["key"] == "deletedFolder":
                    tree = {p: e for p, e in tree.items() if not p.startswith(value["path"].rstrip("/") + "/")}
                else:
                    raise HubError(400, None, f"unknown commit operation {line['key']}")
            oid = hashlib.sha1(f"{head_oid}{time.time_ns()}{uuid.uuid4()}".encode()).hexdigest()
            repo.commits.append((oid, lines[0]["value"]["summary"], tree))
        return self._json({"success": True, "commitOid": oid,
                           "commitUrl": f"{self.endpoint}/{PREFIXES[repo_type]}{repo_id}/commit/{oid}",
                           "pullRequestUrl": None})

    def _entries(self, tree: dict[str, Entry], commit: tuple, expand: bool) -> tuple[dict, dict]:
        """Files and folders (with sizes and LFS info) of a tree, keyed by path."""
        oid, title, _ = commit
        last = {"id": oid, "title": title, "date": "2026-01-01T00:00:00.000Z"} if expand else None
        files, folders = {}, {}
        for path, entry in tree.items():
            item = {"type": "file", "oid": entry.blob_id, "size": entry.size, "path": path}
            if entry.sha256:
                item["lfs"] = {"oid": entry.sha256, "size": entry.size, "pointerSize": 134}
            if last:
                item["lastCommit"] = last
            files[path] = item
            parts = path.split("/")
            for depth in range(1, len(parts)):
                folder = "/".join(parts[:depth])
                folders[folder] = {"type": "directory", "oid": hashlib.sha1(folder.encode()).hexdigest(),
                                   "size": 0, "path": folder, **({"lastCommit": last} if last else {})}
        return files, folders

    def _tree(self, repo_type, repo_id, revision, path, headers, query):
        repo = self._repo(repo_type, repo_id, headers)
        commit = self._commit_or_404(repo, revision)
        recursive = query.get("recursive", ["False"])[0].lower() == "true"
        files, folders = self._entries(commit[2], commit, query.get("expand", ["False"])[0].lower() == "true")
        path = path.strip("/")
        if path and path not in folders:
            raise HubError(404, "EntryNotFound", f"{path} does not exist on {revision}")
        prefix = f"{path}/" if path else ""
        listing = []
        for item in [*folders.values(), *files.values()]:
            if not item["path"].startswith(prefix):
                continue
            if recursive or "/" not in item["path"][len(prefix):]:
                listing.append(item)
        return self._json(sorted(listing, key=lambda i: i["path"]))

    def _paths_info(self, repo_type, repo_id, revision, paths, headers, expand):
        repo = self._repo(repo_type, repo_id, headers)
        commit = self._commit_or_404(repo, revision)
        files, folders = self._entries(commit[2], commit, expand)
        return self._json([files.get(p) or folders[p] for p in paths if p in files or p in folders])

    def _resolve(self, repo_type, repo_id, revision, path, headers):
        repo = self._repo(repo_type, repo_id, headers)
        oid, _, tree = self._commit_or_404(repo, revision)
        entry = tree.get(path)
        if entry is None:
            raise HubError(404, "EntryNotFound", f"Entry not found: {path}")
        if entry.sha256 is None:
            return self._ranged(entry.content, headers, {"ETag": f'"{entry.blob_id}"', "X-Repo-Commit": oid})
        location = f"{self.storage}/lfs/{entry.sha256}?name={quote(path)}"
        return 302, {"Location": location, "X-Repo-Commit": oid, "ETag": f'"{entry.blob_id}"',
                     "X-Linked-Etag": f'"{entry.sha256}"', "X-Linked-Size": str(entry.size)}, b""

    @staticmethod
    def _ranged(data: bytes, headers, extra: dict):
        """200 with the whole body, or 206 for ``Range: bytes=a-[b]`` (416 past the end)."""
        wanted = headers.get("Range")
        base = {"Accept-Ranges": "bytes", "Content-Type": "application/octet-stream", **extra}
        if not wanted or not wanted.startswith("bytes="):
            return 200, base, data
        first, _, last = wanted[len("bytes="):].partition("-")
        start = int(first) if first else max(0, len(data) - int(last))
        end = min(int(last), len(data) - 1) if (first and last) else len(data) - 1
        if start >= len(data):
            return 416, {"Content-Range": f"bytes */{len(data)}"}, b""
        return 206, {**base, "Content-Range": f"bytes {start}-{end}/{len(data)}"}, data[start:end + 1]
