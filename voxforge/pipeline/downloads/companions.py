"""The files a mesh file refers to (an OBJ's material libraries and their textures, a glTF's buffers
and images), fetched next to it when the mesh is downloaded on its own (Objaverse-XL's GitHub objects:
one annotated file inside a repository whose other files are not listed).

References come from untrusted files: each is resolved against the referring file's folder and kept
only when it stays inside the object's folder (no ``..`` escape, no absolute path, no URL), and an
object has at most :data:`MAX_COMPANIONS` of them. A companion that cannot be fetched is left out
(the loaders render without a missing material or texture) when the host says it is not there (4xx);
a host that keeps failing fails the object, like a failed mesh download. The mesh itself must arrive.
"""

from __future__ import annotations

import json
import logging
import posixpath
from pathlib import Path
from urllib.parse import quote, unquote, urljoin

from voxforge.meshio.mtl import texture_name
from voxforge.pipeline.downloads.archives import ArchiveError, safe_member_path
from voxforge.pipeline.downloads.cache import filled_atomically, path_lock
from voxforge.pipeline.downloads.http import DownloadError, DownloadSettings, fetch_file

log = logging.getLogger(__name__)

MAX_COMPANIONS = 64
MAX_REFERENCE_FILE = 64 << 20  # OBJ / MTL / glTF files larger than this are not scanned for references
TEXTURE_KEYS = ("map_ka", "map_kd", "map_ks", "map_ke", "map_ns", "map_d", "map_bump", "bump", "disp", "decal",
                "refl", "norm", "map_pr", "map_pm", "map_ps", "map_norm")



def contained(folder: str, name: str) -> str | None:
    """``name`` (relative to ``folder``, both POSIX and relative to the object's root) as a path inside
    the object's root, or None when it is a URL, absolute, or escapes the root."""
    name = name.strip().replace("\\", "/")  # Windows exporters write backslashes
    if "://" in name or name.startswith("data:") or name[1:2] == ":":
        return None
    joined = posixpath.normpath(posixpath.join(folder, name))
    try:
        return None if joined == "." else str(safe_member_path(joined))
    except ArchiveError:
        return None


def _lines(path: Path) -> list[str]:
    if path.stat().st_size > MAX_REFERENCE_FILE:
        return []
    return path.read_text(errors="replace").splitlines()


def references(path: Path, relative: str) -> list[str]:
    """Files that ``path`` (stored at ``relative`` inside the object's root) refers to, as root-relative
    paths: OBJ ``mtllib``, MTL texture maps, glTF buffer and image URIs. Unsafe names are dropped."""
    folder = posixpath.dirname(relative)
    suffix = path.suffix.lower()
    names: list[str] = []
    if suffix == ".obj":
        for line in _lines(path):
            parts = line.split()
            if len(parts) > 1 and parts[0] == "mtllib":
                rest = line.strip()[len("mtllib"):].strip()
                several = all(p.lower().endswith(".mtl") for p in parts[1:])
                names += parts[1:] if several else [rest]
    elif suffix == ".mtl":
        for line in _lines(path):
            parts = line.split()
            if len(parts) > 1 and parts[0].lower() in TEXTURE_KEYS:
                names.append(texture_name(parts[1:]))
    elif suffix == ".gltf":
        try:
            document = json.loads(path.read_text()) if path.stat().st_size <= MAX_REFERENCE_FILE else {}
        except (ValueError, UnicodeDecodeError):
            document = {}
        for key in ("buffers", "images"):
            for item in document.get(key, []) if isinstance(document, dict) else []:
                uri = item.get("uri") if isinstance(item, dict) else None
                if isinstance(uri, str) and not uri.startswith("data:"):
                    names.append(unquote(uri))
    found = []
    for name in names:
        inside = contained(folder, name)
        if inside is None:
            log.warning("%s refers to %r, outside its folder: not fetched", relative, name)
        elif inside != relative and inside not in found:
            found.append(inside)
    return found


def fetch_with_companions(url: str, dest: Path, mesh: str, settings: DownloadSettings, sha256: str | None,
                          mismatch_label: str) -> tuple[Path, bool]:
    """``dest/mesh`` from ``url`` plus the files it refers to (recursively: OBJ -> MTL -> textures) from
    beside it, written into a temporary folder and renamed to ``dest`` when complete."""
    target = dest / mesh
    if target.is_file():
        return target, False
    with path_lock(dest):
        if target.is_file():
            return target, False
        with filled_atomically(dest) as temporary:
            fetch_file(url, temporary / mesh, settings, sha256=sha256, mismatch_label=mismatch_label)
            pending, seen, total = [mesh], {mesh}, (temporary / mesh).stat().st_size
            while pending:
                current = pending.pop(0)
                for name in references(temporary / current, current):
                    if name in seen:
                        continue
                    if len(seen) > MAX_COMPANIONS:
                        log.warning("%s: more than %d referenced files; the rest are not fetched", mesh, MAX_COMPANIONS)
                        pending.clear()
                        break
                    seen.add(name)
                    total += _fetch_companion(urljoin(url, quote(name)), temporary / name, settings, mesh)
                    if total > settings.max_bytes:
                        raise DownloadError(f"{mesh} and its referenced files exceed {settings.max_bytes} bytes",
                                            permanent=True)
                    if (temporary / name).is_file():
                        pending.append(name)
            for lock in temporary.rglob("*.lock"):  # fetch_file's locks inside the private folder
                lock.unlink(missing_ok=True)
    return target, True


def _fetch_companion(url: str, path: Path, settings: DownloadSettings, mesh: str) -> int:
    """Bytes fetched for one referenced file; 0 when it is not there (the mesh still renders without it)."""
    try:
        return fetch_file(url, path, settings).path.stat().st_size
    except DownloadError as error:
        if error.status is not None and 400 <= error.status < 500 and error.status != 429:  # not there
            log.warning("%s: %s not fetched (%s)", mesh, path.name, error)
            return 0
        raise  # the host failing even after retries: the object fails now and a re-run tries again
