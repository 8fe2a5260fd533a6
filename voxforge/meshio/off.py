"""Object File Format (OFF, Geomview): faces of any number of corners, mixed in one file.

The format (Geomview's documentation): a header keyword (``OFF``; ``COFF``/``NOFF``/``CNOFF``/``STOFF``
carry per-vertex colours, normals or texture coordinates after the position, which are skipped), the
vertex, face and edge counts, one vertex per line, then one face per line: its corner count, the
corner indices (0-based) and optionally a colour. ``#`` starts a comment. ModelNet's files glue the
counts to the keyword (``OFF1234 5678 0``), which is accepted. Faces are triangulated in their plane
(:mod:`voxforge.meshio.polygons`).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import trimesh

from voxforge.meshio import MeshFileError, check_triangles
from voxforge.meshio.polygons import faces_of

HEADER = re.compile(r"^(ST)?(C)?(N)?(4)?(n)?OFF(.*)$")


def load_off(path: Path) -> trimesh.Scene:
    """The OFF file as a scene of one mesh; :class:`MeshFileError` names what is wrong with a bad file."""
    raw = path.read_bytes()
    if b"BINARY" in raw[:64].upper():
        raise MeshFileError("binary OFF files are not read (only the text format)")
    text = raw.decode("utf-8", "replace")
    if "#" in text:
        text = re.sub(r"#[^\r\n]*", "", text)
    lines = [line for line in (part.strip() for part in text.splitlines()) if line]
    if not lines:
        raise MeshFileError("empty OFF file")
    header = HEADER.match(lines[0])
    if header is None:
        raise MeshFileError(f"not an OFF file: the first line is {lines[0][:40]!r}")
    if header.group(4) or header.group(5):
        raise MeshFileError(f"{lines[0].split()[0]} files (4D or n-dimensional vertices) are not read")
    rest, body = header.group(6).split(), lines[1:]
    if len(rest) < 2:
        if not body:
            raise MeshFileError("OFF file without its vertex and face counts")
        rest, body = body[0].split(), body[1:]
    try:
        vertex_count, face_count = int(rest[0]), int(rest[1])
    except (ValueError, IndexError) as error:
        raise MeshFileError(f"OFF counts line {' '.join(rest)[:40]!r} is not two whole numbers") from error
    if vertex_count < 0 or face_count < 0:
        raise MeshFileError("OFF counts are negative")
    check_triangles(face_count, "the OFF file")
    if len(body) < vertex_count + face_count:
        raise MeshFileError(f"OFF file declares {vertex_count} vertices and {face_count} faces but has "
                            f"{len(body)} lines of data")
    vertices = _vertices(body[:vertex_count])
    face_lines = body[vertex_count:vertex_count + face_count]
    polygons = _uniform_faces(face_lines)
    if polygons is None:
        polygons = [_face(number, line) for number, line in enumerate(face_lines)]
        lowest = np.array([p.min() for p in polygons]) if polygons else np.zeros(0)
        highest = np.array([p.max() for p in polygons]) if polygons else np.zeros(0)
    else:
        lowest, highest = polygons.min(axis=1, initial=0), polygons.max(axis=1, initial=0)
    wrong = np.flatnonzero((lowest < 0) | (highest >= vertex_count))
    if len(wrong):
        raise _out_of_range(int(wrong[0]), np.asarray(polygons[wrong[0]]), vertex_count)
    if isinstance(polygons, np.ndarray) and polygons.shape[1] == 3:
        faces = polygons
    else:
        faces = faces_of(list(polygons), vertices)
    mesh = trimesh.Trimesh(vertices=vertices, faces=faces, process=False)
    return trimesh.Scene(mesh)


def _vertices(lines: list[str]) -> np.ndarray:
    """(N, 3) positions; extra columns (normals, colours, texture coordinates) are skipped."""
    try:
        values = np.array(" ".join(lines).split(), dtype=np.float64)
        if len(lines) and len(values) % len(lines) == 0 and len(values) // len(lines) >= 3:
            return values.reshape(len(lines), -1)[:, :3]
        rows = [line.split()[:3] for line in lines]
        if any(len(row) < 3 for row in rows):
            raise MeshFileError("an OFF vertex line has fewer than three coordinates")
        return np.array(rows, dtype=np.float64).reshape(-1, 3)
    except ValueError as error:
        raise MeshFileError(f"an OFF vertex line is not three numbers ({error})") from error


def _uniform_faces(lines: list[str]) -> np.ndarray | None:
    """(F, K) corners when every face line is ``K i1 .. iK`` with the same K (the common case, read at
    numpy speed); None otherwise."""
    if not lines:
        return np.zeros((0, 3), np.int64)
    try:
        values = np.array(" ".join(lines).split(), dtype=np.int64)
    except ValueError:  # colours (floats) or garbage: read line by line
        return None
    corners = int(values[0]) if len(values) else 0
    if corners < 3 or len(values) != len(lines) * (corners + 1):
        return None
    table = values.reshape(len(lines), corners + 1)
    return table[:, 1:] if (table[:, 0] == corners).all() else None


def _face(number: int, line: str) -> np.ndarray:
    tokens = line.split()
    try:
        corners = int(tokens[0])
        indices = np.array(tokens[1:1 + corners], dtype=np.int64)
    except ValueError as error:
        raise MeshFileError(f"OFF face {number} is not a corner count followed by vertex numbers: "
                            f"{line[:60]!r}") from error
    if corners < 3 or len(indices) < corners:
        raise MeshFileError(f"OFF face {number} has {corners} corners but lists {len(indices)} vertex numbers")
    return indices


def _out_of_range(number: int, indices: np.ndarray, vertex_count: int) -> MeshFileError:
    bad = int(indices.max()) if indices.max() >= vertex_count else int(indices.min())
    return MeshFileError(f"OFF face {number} refers to vertex {bad}; the file has {vertex_count} vertices "
                         "(numbered from 0)")
