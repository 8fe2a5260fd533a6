"""Fetch specs: how a source says where an object's mesh comes from, and turning one into a local file.

A fetch spec is a plain dict (so Ray carries it inside the record) of one of three kinds:

- ``{"kind": "path", "dest"}``: a file already on disk (a user's own folder: never locked or evicted);
- ``{"kind": "file", "url", "dest", "sha256"?, "mismatch"?}``: one file downloaded to ``dest``;
- ``{"kind": "files", "url", "dest", "mesh", "sha256"?, "mismatch"?}``: one mesh file downloaded into the
  folder ``dest`` together with the files it refers to from beside it (material libraries, textures,
  glTF buffers: :mod:`voxforge.pipeline.downloads.companions`);
- ``{"kind": "zip", "archive", "size", "index"?, "index_offset"?, "prefix", "dest", "mesh"}``: the
  members under ``prefix`` of a zip archive (a local path, or a URL read with range requests, its
  central directory saved in ``index`` when the source listed it) extracted into the folder ``dest``;
  ``mesh`` is the mesh file inside it.

Both may name ``hub`` (the Hub's origin: the only place the token is sent), ``repo`` (for messages)
and ``settings`` (:class:`DownloadSettings` as a dict).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from voxforge.pipeline.downloads.archives import ArchiveError, extract_prefix
from voxforge.pipeline.downloads.cache import path_lock
from voxforge.pipeline.downloads.companions import fetch_with_companions
from voxforge.pipeline.downloads.http import DownloadError, DownloadSettings, RangeFile, fetch_file, with_retries


def mesh_path(spec: dict) -> Path:
    """Where the object's mesh file is once the spec is materialized."""
    dest = Path(spec["dest"])
    return dest / spec["mesh"] if spec["kind"] in ("zip", "files") else dest


def cached_path(spec: dict) -> Path:
    """The file or folder the spec fills in the cache (what eviction removes)."""
    return Path(spec["dest"])


def open_archive(spec: dict, settings: DownloadSettings) -> zipfile.ZipFile:
    archive = spec["archive"]
    if not str(archive).startswith(("http://", "https://")):
        return zipfile.ZipFile(archive)
    tail, offset = b"", None
    if spec.get("index") and Path(spec["index"]).is_file():
        tail, offset = Path(spec["index"]).read_bytes(), spec.get("index_offset")
    reader = RangeFile(archive, int(spec["size"]), settings, hub_origin=spec.get("hub"), repo_id=spec.get("repo"),
                       tail=tail, tail_offset=offset)
    return zipfile.ZipFile(reader)


def _extract(spec: dict, settings: DownloadSettings) -> None:
    """The object's members out of the archive; a bad CRC (damaged transfer) is retried like any fault."""

    def attempt() -> None:
        try:
            with open_archive(spec, settings) as archive:
                extract_prefix(archive, spec["prefix"], spec["dest"], settings.max_bytes)
        except zipfile.BadZipFile as error:  # CRC mismatch or a mangled header: the bytes were damaged
            raise DownloadError(f"checksum mismatch in archive ({error}): {spec['archive']}") from error

    with_retries(attempt, spec["archive"], settings)


def ensure_local(spec: dict) -> tuple[Path, bool]:
    """(the mesh's local path, whether this call downloaded it); raises DownloadError/ArchiveError."""
    settings = DownloadSettings.from_dict(spec.get("settings"))
    target = mesh_path(spec)
    if target.is_file():
        return target, False
    if spec["kind"] == "path":
        raise DownloadError(f"no such file: {target}", permanent=True)
    if spec["kind"] in ("file", "files"):
        try:
            if spec["kind"] == "files":
                return fetch_with_companions(spec["url"], Path(spec["dest"]), spec["mesh"], settings,
                                             spec.get("sha256") or None, spec.get("mismatch", "checksum mismatch"))
            result = fetch_file(spec["url"], spec["dest"], settings, sha256=spec.get("sha256") or None,
                                hub_origin=spec.get("hub"), repo_id=spec.get("repo"),
                                mismatch_label=spec.get("mismatch", "checksum mismatch"))
        except DownloadError as error:
            if error.status in (404, 410) and spec.get("missing"):
                raise DownloadError(f"{spec['missing']}: {error}", permanent=True, status=error.status) from error
            raise
        return result.path, result.downloaded
    if spec["kind"] == "zip":
        _extract(spec, settings)
        if not target.is_file():
            raise ArchiveError(f"the archive has no {spec['mesh']} under {spec['prefix']}")
        return target, True
    raise ValueError(f"unknown fetch kind {spec['kind']!r}")


def load_locked(spec: dict, loader, attempts: int = 3):
    """``loader(path)`` on the materialized mesh while holding a shared lock, so a concurrent run cannot
    evict it mid-read (fetching again if it was evicted between the fetch and this call)."""
    if spec["kind"] == "path":
        return loader(ensure_local(spec)[0])
    for _ in range(attempts):
        path, _ = ensure_local(spec)
        with path_lock(cached_path(spec), shared=True):
            if path.is_file():
                return loader(path)
    raise DownloadError(f"{mesh_path(spec).name} keeps disappearing from the cache (evicted by another run?)")
