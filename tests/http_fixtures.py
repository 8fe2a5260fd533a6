"""A loopback HTTP server that stands in for the Hub and the other hosts the download sources use.

It serves files built at test time from ``../shared/data`` and misbehaves on request:

- Hub datasets at ``/datasets/<owner>/<name>/resolve/<revision>/<path>``, answered as the Hub answers:
  a 302 to a CDN address with ``X-Repo-Commit``, ``ETag``, ``X-Linked-Etag`` (the sha256) and
  ``X-Linked-Size``; HEAD supported; gated repositories want ``Authorization: Bearer <token>``
  (401 without, 403 with a wrong one). The CDN address uses the host name ``localhost`` while the
  Hub is ``127.0.0.1``, so a client that forwards the token to the CDN is caught in ``log``.
- Plain files at any path (the Smithsonian, Thingiverse, GitHub stand-ins, behind ``--mirror``).
- Range requests (206) everywhere, and faults per file: ``404``, ``500``, ``503``, ``429`` (with
  ``Retry-After: 0``), ``reset`` (connection reset), ``truncate`` (half the promised body),
  ``slow`` (answers after ``slow_s``), ``corrupt`` (one byte changed, same length). Faults queued
  for a file are used one per request; ``always:<fault>`` never runs out.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import socket
import struct
import threading
import time
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

STATUS_FAULTS = {"404": 404, "500": 500, "503": 503, "429": 429}


@dataclass
class HubRepo:
    files: dict[str, bytes]
    commit: str
    token: str | None = None  # gated when set


@dataclass
class LoggedRequest:
    method: str
    host: str
    path: str
    headers: dict[str, str]
    status: int = 0
    at: float = field(default_factory=time.monotonic)


@dataclass
class LoopbackServer:
    files: dict[str, bytes] = field(default_factory=dict)  # plain path -> body
    repos: dict[str, HubRepo] = field(default_factory=dict)  # "owner/name" -> repo
    faults: dict[str, list[str]] = field(default_factory=dict)  # file key -> queued faults
    slow_s: float = 3.0
    log: list[LoggedRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._by_sha: dict[str, bytes] = {}
        handler = type("Handler", (_Handler,), {"fixture": self})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def add_file(self, path: str, data: bytes) -> str:
        self.files[path] = data
        return self.url + path

    def add_repo(self, repo_id: str, files: dict[str, bytes], token: str | None = None) -> HubRepo:
        commit = hashlib.sha1(repo_id.encode()).hexdigest()
        self.repos[repo_id] = HubRepo(dict(files), commit, token)
        for data in files.values():
            self._by_sha[hashlib.sha256(data).hexdigest()] = data
        return self.repos[repo_id]

    def fault(self, key: str, *kinds: str) -> None:
        """Queue faults for a file: its plain path, or ``<owner>/<name>/<path>`` for a Hub file."""
        with self._lock:
            self.faults.setdefault(key, []).extend(kinds)

    def next_fault(self, key: str, only: tuple[str, ...] | dict | None = None) -> str | None:
        """The fault for this request (used up unless ``always:``); with ``only``, other kinds stay queued."""
        with self._lock:
            queue = self.faults.get(key)
            if not queue:
                return None
            kind = queue[0].split(":", 1)[1] if queue[0].startswith("always:") else queue[0]
            if only is not None and kind not in only:
                return None
            if not queue[0].startswith("always:"):
                queue.pop(0)
            return kind

    def requests_for(self, fragment: str) -> list[LoggedRequest]:
        return [r for r in self.log if fragment in r.path]


class _Handler(BaseHTTPRequestHandler):
    fixture: LoopbackServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        self._serve(head=False)

    # -- routing ----------------------------------------------------------------------------------
    def _serve(self, head: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        entry = LoggedRequest(self.command, self.headers.get("Host", ""), path, {k.lower(): v for k, v in self.headers.items()})
        self.fixture.log.append(entry)
        if path.startswith("/datasets/") and "/resolve/" in path:
            entry.status = self._resolve(path)
        elif path.startswith("/cdn/"):
            sha = path.split("/")[2]
            data = self.fixture._by_sha.get(sha)
            key = self.headers.get("X-Fixture-Key") or self._key_for_sha(sha)
            entry.status = self._body(data, key, head) if data is not None else self._status(404)
        elif path in self.fixture.files:
            entry.status = self._body(self.fixture.files[path], path, head)
        else:
            entry.status = self._status(404)

    def _key_for_sha(self, sha: str) -> str:
        for repo_id, repo in self.fixture.repos.items():
            for name, data in repo.files.items():
                if hashlib.sha256(data).hexdigest() == sha:
                    return f"{repo_id}/{name}"
        return sha

    def _resolve(self, path: str) -> int:
        head, _, filename = path[len("/datasets/"):].partition("/resolve/")
        revision, _, filename = filename.partition("/")
        repo = self.fixture.repos.get(head)
        if repo is None:
            return self._status(404, {"X-Error-Code": "RepoNotFound"})
        if repo.token is not None:
            given = self.headers.get("Authorization", "")
            if not given:
                return self._status(401, {"X-Error-Code": "GatedRepo"})
            if given != f"Bearer {repo.token}":
                return self._status(403, {"X-Error-Code": "GatedRepo"})
        if revision not in ("main", repo.commit):
            return self._status(404, {"X-Error-Code": "RevisionNotFound"})
        data = repo.files.get(filename)
        if data is None:
            return self._status(404, {"X-Error-Code": "EntryNotFound"})
        if self.command == "GET":  # status faults here; body faults where the body is served (the CDN)
            fault = self.fixture.next_fault(f"{head}/{filename}", only=STATUS_FAULTS)
            if fault:
                return self._status(STATUS_FAULTS[fault], {"Retry-After": "0"} if fault == "429" else None)
        sha = hashlib.sha256(data).hexdigest()
        headers = {"Location": f"http://localhost:{self.fixture.port}/cdn/{sha}", "X-Repo-Commit": repo.commit,
                   "ETag": f'"{hashlib.sha1(data).hexdigest()}"', "X-Linked-Etag": f'"{sha}"',
                   "X-Linked-Size": str(len(data))}
        return self._status(302, headers)

    # -- responses --------------------------------------------------------------------------------
    def _status(self, code: int, headers: dict | None = None) -> int:
        body = json.dumps({"error": code}).encode() if code >= 400 else b""
        self.send_response(code)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        return code

    def _body(self, data: bytes, key: str, head: bool) -> int:
        fault = self.fixture.next_fault(key) if not head else None
        if fault in STATUS_FAULTS:
            return self._status(STATUS_FAULTS[fault], {"Retry-After": "0"} if fault == "429" else None)
        if fault == "reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()
            return -1
        if fault == "slow":
            time.sleep(self.fixture.slow_s)
        if fault == "corrupt":
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        status, start, end = 200, 0, len(data) - 1
        ranged = self.headers.get("Range", "")
        if ranged.startswith("bytes="):
            first, _, last = ranged[6:].partition("-")
            start, end = int(first), min(int(last) if last else len(data) - 1, len(data) - 1)
            status = 206
        payload = data[start:end + 1]
        self.send_response(status)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.end_headers()
        if head:
            return status
        if fault == "truncate":
            self.wfile.write(payload[: len(payload) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return status
        self.wfile.write(payload)
        return status


# -- test data built from ../shared/data ---------------------------------------------------------------

def zip_folder(root: Path, prefix: str, skip_suffixes: tuple[str, ...] = ()) -> bytes:
    """A zip of every file under ``root``, named ``prefix/<relative path>`` (fixed dates: same bytes each time)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.endswith(skip_suffixes)):
            info = zipfile.ZipInfo(f"{prefix}/{path.relative_to(root).as_posix()}", date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())
    return buffer.getvalue()


def shapenet_zips(shared: Path) -> dict[str, bytes]:
    """``<synset>.zip`` per synset of the ShapeNetCore v2 models in shared/data (binvox files left out)."""
    root = shared / "shapenetcore_v2"
    return {f"{synset.name}.zip": zip_folder(synset, synset.name, skip_suffixes=(".binvox",))
            for synset in sorted(root.iterdir()) if synset.is_dir()}


def uid_of(name: str) -> str:
    return hashlib.md5(name.encode()).hexdigest()


# name, GLB in shared/data/meshes/trimesh, LVIS category, licence (Sketchfab slug)
OBJAVERSE_OBJECTS = [
    ("chair-a", "BoxTextured.glb", "chair", "by"),
    ("chair-b", "simple_pole.glb", "chair", "by-nc"),
    ("chair-c", "cubevc.glb", "chair", "cc0"),
    ("armchair-a", "nested.glb", "armchair", "by"),
    ("bus-a", "CesiumMilkTruck.glb", "bus_(vehicle)", "by-sa"),
    ("bus-b", "BoxInterleaved.glb", "bus_(vehicle)", "by"),
    ("school-bus-a", "boolean.glb", "school_bus", "by"),
    ("duck-a", "Duck.glb", "duck", "by"),
]


def objaverse_files(shared: Path) -> tuple[dict[str, bytes], dict[str, str]]:
    """The files of ``allenai/objaverse`` for OBJAVERSE_OBJECTS, in the real layout; and name -> uid."""
    meshes = shared / "meshes" / "trimesh"
    files, lvis, paths, metadata, uids = {}, {}, {}, {}, {}
    for index, (name, glb, category, license_slug) in enumerate(OBJAVERSE_OBJECTS):
        uid = uid_of(name)
        uids[name] = uid
        shard = f"000-{index % 2:03d}"
        paths[uid] = f"glbs/{shard}/{uid}.glb"
        files[paths[uid]] = (meshes / glb).read_bytes()
        lvis.setdefault(category, []).append(uid)
        metadata.setdefault(shard, {})[uid] = {
            "uri": f"https://api.sketchfab.com/v3/models/{uid}", "uid": uid, "name": f"{name} ({glb})",
            "viewerUrl": f"https://sketchfab.com/3d-models/{uid}", "license": license_slug,
            "user": {"uid": uid_of("user-" + name), "username": f"maker_{index}", "displayName": f"Maker {index}",
                     "profileUrl": f"https://sketchfab.com/maker_{index}"},
            "tags": [{"name": category}], "faceCount": 100, "vertexCount": 100,
        }
    files["lvis-annotations.json.gz"] = gzip.compress(json.dumps(lvis).encode(), mtime=0)
    files["object-paths.json.gz"] = gzip.compress(json.dumps(paths).encode(), mtime=0)
    for shard, rows in metadata.items():
        files[f"metadata/{shard}.json.gz"] = gzip.compress(json.dumps(rows).encode(), mtime=0)
    return files, uids


SMITHSONIAN = "https://3d-api.si.edu/content/document"
THINGIVERSE = "https://www.thingiverse.com"
GITHUB_RAW = "https://raw.githubusercontent.com"


def objaverse_xl_files(shared: Path, server: LoopbackServer, uids: dict[str, str]) -> dict[str, bytes]:
    """``allenai/objaverse-xl``'s parquet tables, and the non-Hub files they point to (served by ``server``
    under /si, /thingiverse and /github-raw; map them with ``xl_mirrors``). Includes one missing and one
    modified object."""
    import pandas as pd

    meshes = shared / "meshes" / "trimesh"

    def sha(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    sketchfab = [{"fileIdentifier": f"https://sketchfab.com/3d-models/{uids[name]}", "license": lic,
                  "fileType": "glb", "sha256": sha((meshes / glb).read_bytes()), "source": "sketchfab"}
                 for name, glb, _, lic in OBJAVERSE_OBJECTS]
    chair_glb, bus_stl = (meshes / "BoxTextured.glb").read_bytes(), (meshes / "soup.stl").read_bytes()
    smithsonian = [
        {"fileIdentifier": f"{SMITHSONIAN}/3d_package:chair-1/chair.glb", "license": "CC0", "fileType": "glb",
         "sha256": sha(chair_glb), "source": "smithsonian", "metadata": json.dumps({"title": "Windsor chair"})},
        {"fileIdentifier": f"{SMITHSONIAN}/3d_package:gone-1/gone.glb", "license": "CC0", "fileType": "glb",
         "sha256": sha(chair_glb), "source": "smithsonian", "metadata": json.dumps({"title": "Lost chair"})},
    ]
    server.add_file("/si/3d_package:chair-1/chair.glb", chair_glb)  # gone-1 is missing: 404
    thingiverse = [
        {"fileIdentifier": f"{THINGIVERSE}/thing:1234/files?fileId=5678", "license": "Creative Commons - Attribution",
         "fileType": "stl", "sha256": sha(bus_stl), "source": "thingiverse", "metadata": json.dumps({"name": "toy bus"})},
        {"fileIdentifier": f"{THINGIVERSE}/thing:99/files?fileId=100", "license": "Creative Commons - Attribution",
         "fileType": "stl", "sha256": "0" * 64, "source": "thingiverse", "metadata": json.dumps({"name": "bus shelter"})},
    ]
    server.add_file("/thingiverse/download:5678", bus_stl)
    server.add_file("/thingiverse/download:100", bus_stl)  # served, but its table sha256 differs: modified
    obj = (meshes / "chair_model.obj").read_bytes()
    commit = "ead0bed6a76012452273bbe18d12e4d68a881956"
    github = [
        {"fileIdentifier": f"https://github.com/maker/furniture/blob/{commit}/models/office_chair.obj",
         "license": "MIT License", "fileType": "obj", "sha256": sha(obj), "source": "github", "metadata": "{}"},
        {"fileIdentifier": f"https://github.com/maker/furniture/blob/{commit}/scenes/room.fbx",
         "license": "MIT License", "fileType": "fbx", "sha256": "1" * 64, "source": "github", "metadata": "{}"},
    ]
    server.add_file(f"/github-raw/maker/furniture/{commit}/models/office_chair.obj", obj)

    def parquet(rows: list[dict], with_metadata: bool = True) -> bytes:
        frame = pd.DataFrame(rows)
        if not with_metadata:
            frame = frame.drop(columns=["metadata"], errors="ignore")
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        return buffer.getvalue()

    return {"sketchfab/sketchfab.parquet": parquet(sketchfab, with_metadata=False),  # as the real table: no metadata
            "smithsonian/smithsonian.parquet": parquet(smithsonian),
            "thingiverse/thingiverse.parquet": parquet(thingiverse),
            "github/github.parquet": parquet(github)}


def xl_mirrors(server: LoopbackServer) -> dict[str, str]:
    return {SMITHSONIAN: f"{server.url}/si", f"{THINGIVERSE}": f"{server.url}/thingiverse",
            GITHUB_RAW: f"{server.url}/github-raw"}
