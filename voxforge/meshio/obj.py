"""Wavefront OBJ: trimesh's reader, with polygons triangulated in their plane first.

trimesh triangulates a face of more than three corners as a fan, which fills the notch of a
concave polygon. When a file has such faces, each ``f`` line of four or more corners is rewritten as
the triangles :mod:`voxforge.meshio.polygons` makes (the corner tokens ``v/vt/vn`` kept as they are,
negative indices resolved as the OBJ format defines: relative to the vertices read so far), and
trimesh reads the rewritten bytes with the file's folder for its material libraries. Files of
triangles only are read by trimesh unchanged.

Texture images a material library names that are not beside the file are reported as warnings
(every renderer then shows the material's base colour).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import trimesh

from voxforge.meshio import MeshFileError, check_triangles, trimesh_load
from voxforge.meshio.images import texture_problem
from voxforge.meshio.mtl import texture_name
from voxforge.meshio.names import find_companion
from voxforge.meshio.polygons import newell_normals, triangulate

# a face line of four or more corners; the literal "\nf" start lets the search skip ahead quickly
POLYGON_LINE = re.compile(rb"\n[ \t]*+f[ \t]++([^ \t\r\n#]++[ \t]++[^ \t\r\n#]++[ \t]++[^ \t\r\n#]++"
                          rb"[ \t]++[^ \t\r\n#][^\r\n#]*)")
VERTEX_LINE = re.compile(rb"\n[ \t]*+v[ \t]++([^\r\n#]*)")
CORNER_TAIL = re.compile(rb"/\S*")  # the texture and normal numbers of a v/vt/vn corner
CONTINUATION = re.compile(rb"\\[ \t]*\r?\n")
MAP_KD = re.compile(rb"^[ \t]*map_Kd[ \t]+([^\r\n#]+)", re.M | re.I)


def load_obj(path: Path) -> tuple[trimesh.Scene, list[str]]:
    """The OBJ file as a trimesh scene, and warnings (missing texture images)."""
    data = path.read_bytes()
    # each face line is at least one triangle (a polygon more): a lower bound, found at memchr speed
    check_triangles(data.count(b"\nf ") + data.startswith(b"f "), "the OBJ file")
    warnings = missing_textures(path, data)
    rewritten = concave_faces_triangulated(data)  # None: no concave polygon, trimesh's fans are right
    return trimesh_load(path, data if rewritten is None else rewritten), warnings


def concave_faces_triangulated(data: bytes) -> bytes | None:
    """The OBJ bytes with every concave face of four or more corners replaced by its triangles, or None
    when there is none (convex polygons are left to trimesh, whose fans are right for them)."""
    # a newline in front so the first line matches like the others (patterns start with a literal "\n",
    # which lets the regex engine skip ahead: a plain multi-line "^" search is several times slower)
    text = b"\n" + CONTINUATION.sub(b" ", data)  # a line ending in a backslash continues on the next
    bodies = POLYGON_LINE.findall(text)
    if not bodies:
        return None
    vertices = _positions(text)
    # every corner's vertex number, a 0 after each face (0 is no vertex number in OBJ: 1-based, negatives
    # relative), so one numpy parse gives the numbers and each face's size
    with warnings.catch_warnings():  # numpy warns, then stops, at the first token that is not a number
        warnings.simplefilter("ignore", DeprecationWarning)
        parsed = np.fromstring(CORNER_TAIL.sub(b"", b" 0 ".join(bodies) + b" 0"), dtype=np.int64, sep=" ")
    ends = np.flatnonzero(parsed == 0)
    if len(ends) != len(bodies):
        raise MeshFileError("OBJ face line with a corner that is not a vertex number (or is 0)")
    sizes = np.diff(np.concatenate([[-1], ends])) - 1
    numbers = np.delete(parsed, ends)
    first = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    if (numbers < 0).any():  # relative to the vertices read before the line
        line_of = np.repeat(np.arange(len(sizes)), sizes)
        starts = np.array([m.start() for m in VERTEX_LINE.finditer(text)], dtype=np.int64)
        spans = [(m.start(1), m.end(1)) for m in POLYGON_LINE.finditer(text)]
        defined = np.searchsorted(starts, np.array([start for start, _ in spans]))
        numbers = np.where(numbers < 0, defined[line_of] + numbers + 1, numbers)
    numbers -= 1
    if len(numbers) and (numbers.min() < 0 or numbers.max() >= len(vertices)):
        bad = int(np.searchsorted(first, np.flatnonzero((numbers < 0) | (numbers >= len(vertices)))[0], "right") - 1)
        raise MeshFileError(f"OBJ face {bodies[bad][:60]!r} refers to a vertex that does not exist "
                            f"({len(vertices)} in the file)")
    concave = np.flatnonzero(~convex(numbers, first, sizes, vertices))
    if not len(concave):
        return None
    polygons = [numbers[first[i]:first[i] + sizes[i]] for i in concave.tolist()]
    spans = [(m.start(1), m.end(1)) for m in POLYGON_LINE.finditer(text)]
    parts, position = [], 1
    for index, corners in zip(concave.tolist(), triangulate(polygons, vertices)):
        (start, end), tokens = spans[index], bodies[index].split()
        parts.append(text[position:start])
        # the first triangle takes the face line's place; the others follow as lines of their own
        parts.append(b"\nf ".join(b" ".join(tokens[c] for c in triangle) for triangle in corners))
        position = end
    parts.append(text[position:])
    return b"".join(parts)


def _positions(text: bytes) -> np.ndarray:
    """(N, 3) positions of the ``v`` lines (colours after the position, as some writers add, skipped)."""
    lines = VERTEX_LINE.findall(text)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        values = np.fromstring(b" ".join(lines), dtype=np.float64, sep=" ")
    for width in (3, 6, 4, 7):  # x y z, x y z r g b, x y z w, x y z w r g b
        if len(values) == width * len(lines):
            return values.reshape(len(lines), width)[:, :3]
    try:
        return np.array([line.split()[:3] for line in lines], dtype=np.bytes_).astype(np.float64).reshape(-1, 3)
    except ValueError as error:
        raise MeshFileError(f"OBJ vertex line with a value that is not a number ({error})") from error


def convex(numbers: np.ndarray, first: np.ndarray, sizes: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Whether each polygon (corners ``numbers[first[i]:first[i] + sizes[i]]``) turns the same way at
    every corner about its Newell normal, a group of equal size at a time."""
    result = np.ones(len(sizes), dtype=bool)
    for size in np.unique(sizes).tolist():
        chosen = np.flatnonzero(sizes == size)
        corners = vertices[numbers[first[chosen][:, None] + np.arange(size)]]  # (P, K, 3)
        normal = newell_normals(corners)
        edges = np.roll(corners, -1, axis=1) - corners
        turns = np.einsum("pkj,pj->pk", np.cross(edges, np.roll(edges, -1, axis=1)), normal)
        result[chosen] = (turns >= -1e-12 * np.abs(turns).max(axis=1, initial=0)[:, None]).all(axis=1)
    return result


def missing_textures(path: Path, data: bytes) -> list[str]:
    """Warnings for material libraries and ``map_Kd`` images the file names that are not there, or that are
    too large to decode (:func:`voxforge.meshio.images.texture_problem`)."""
    warnings = []
    for name in mtllib_names(data):
        library = find_companion(path.parent, name)
        if library is None:
            warnings.append(f"material library '{_shown(name)}' is missing: rendered without its materials")
            continue
        text = library.read_bytes()
        for image in MAP_KD.finditer(text):
            # options (-s 1 1 1, -bm 0.5, ...) come first; the bytes survive the round trip (surrogateescape)
            words = image.group(1).decode("utf-8", "surrogateescape").split()
            image_name = texture_name(words).encode("utf-8", "surrogateescape").strip()
            if not image_name:
                continue
            found = find_companion(library.parent, image_name)
            if found is None:
                warnings.append(f"texture image '{_shown(image_name)}' is missing: rendered with the material's "
                                "base colour")
            elif problem := texture_problem(str(found), _shown(image_name)):
                warnings.append(problem)  # the resolver refuses it to trimesh; Blender leaves it out too
    return sorted(set(warnings))


def _shown(name: bytes) -> str:
    """A referenced name for a message: UTF-8 where it is, else its latin-1 reading."""
    try:
        return name.decode("utf-8")
    except UnicodeDecodeError:
        return name.decode("latin-1")


def mtllib_names(data: bytes) -> list[bytes]:
    """The material library names of ``mtllib`` lines, as written (found with bytes.find: a regex scan of
    a large file costs more than trimesh's whole read of it)."""
    names, position = [], data.find(b"mtllib")
    while position >= 0:
        line_start = data.rfind(b"\n", 0, position) + 1
        line_end = data.find(b"\n", position)
        line = data[line_start: line_end if line_end >= 0 else len(data)].split(b"#", 1)[0].strip()
        if line.startswith(b"mtllib") and len(line) > 6 and line[6:7] in b" \t":
            names.append(line[6:].strip())
        position = data.find(b"mtllib", position + 6)
    return names
