"""PLY: trimesh's reader, with polygon faces triangulated in their plane.

trimesh reads PLY elements well but triangulates faces of more than three corners as fans (wrong for
concave ones). When a file has such faces, its elements are read with trimesh's own PLY parser, each
polygon is replaced by the triangles :mod:`voxforge.meshio.polygons` makes (other per-face properties,
e.g. colours, repeated for each of a polygon's triangles), and trimesh builds the mesh from those
elements. Files of triangles only take trimesh's ordinary path. Binary files whose faces have different
numbers of corners, which trimesh's vectorized binary reader refuses, are read row by row.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import trimesh

from voxforge.meshio import MeshFileError, check_triangles, trimesh_load
from voxforge.meshio.polygons import faces_of

INDEX_NAMES = ("vertex_indices", "vertex_index")


def load_ply(path: Path) -> tuple[trimesh.Scene, list[str]]:
    """The PLY file as a scene, and warnings (per-face texture coordinates of polygons left out)."""
    # trimesh's PLY parser is internal API (trimesh is pinned); it fills ``elements`` in place
    from trimesh.exchange import ply as trimesh_ply

    with open(path, "rb") as handle:
        try:
            elements, is_ascii, image_name = trimesh_ply._parse_header(handle)
        except Exception:  # not a PLY trimesh can parse: its ordinary path says why in its own words
            return trimesh_load(path), []
        check_triangles(int(elements.get("face", {}).get("length", 0)), "the PLY file")
        start = handle.tell()
        pristine = copy.deepcopy(elements)  # the binary parser rewrites list types as it goes
        try:
            (trimesh_ply._ply_ascii if is_ascii else trimesh_ply._ply_binary)(elements, handle)
        except Exception as error:
            if is_ascii or not _has_face_lists(pristine):
                return trimesh_load(path), []
            # trimesh's binary reader takes lists of one fixed size only ("PLY is unexpected length!")
            handle.seek(start)
            elements = pristine
            _read_binary_with_lists(elements, handle.read(), str(error))
    face = elements.get("face", {}).get("data")
    polygons = _index_lists(face)
    if polygons is None or all(len(p) == 3 for p in polygons):  # what trimesh.load does, without reading twice
        kwargs = trimesh_ply._elements_to_kwargs(elements=elements, fix_texture=True, image=_image(path, image_name))
        geometry = trimesh.Trimesh(**kwargs, process=False) if "faces" in kwargs and kwargs["faces"] is not None \
            else trimesh.PointCloud(kwargs["vertices"])
        return trimesh.Scene(geometry), []
    vertex = elements["vertex"]["data"]
    vertices = np.column_stack([np.asarray(vertex[axis], np.float64) for axis in "xyz"])
    polygons = [np.asarray(p, np.int64) for p in polygons]
    for number, polygon in enumerate(polygons):
        if len(polygon) < 3:
            raise MeshFileError(f"PLY face {number} has {len(polygon)} corners")
        if polygon.min() < 0 or polygon.max() >= len(vertices):
            raise MeshFileError(f"PLY face {number} refers to a vertex that does not exist ({len(vertices)} in the file)")
    repeats = np.array([len(p) - 2 for p in polygons])
    warnings = []
    triangulated = {"vertex_indices": faces_of(polygons, vertices)}
    for name in _field_names(face):
        if name in INDEX_NAMES:
            continue
        if name == "texcoord":
            warnings.append("PLY per-face texture coordinates of polygon faces were left out (untextured)")
            continue
        triangulated[name] = np.repeat(np.asarray(face[name]), repeats, axis=0)
    elements["face"]["data"] = triangulated
    kwargs = trimesh_ply._elements_to_kwargs(elements=elements, fix_texture=True, image=None)
    return trimesh.Scene(trimesh.Trimesh(**kwargs, process=False)), warnings


def _read_binary_with_lists(elements: dict, data: bytes, why: str) -> None:
    """Fill ``elements`` (trimesh's header layout) from binary PLY ``data`` whose list properties vary in
    length, row by row (only files trimesh's vectorized reader refuses come here)."""
    offset = 0

    def take(kind: str, count: int = 1) -> np.ndarray:
        nonlocal offset
        dtype = np.dtype(kind)
        if offset + dtype.itemsize * count > len(data):
            raise MeshFileError(f"binary PLY cut short: the header declares more data than the file holds ({why})")
        values = np.frombuffer(data, dtype, count=count, offset=offset)
        offset += dtype.itemsize * count
        return values

    for element in elements.values():
        properties, rows = element["properties"], int(element["length"])
        if not any("$LIST" in str(kind) for kind in properties.values()):
            table = take(np.dtype([(name, kind) for name, kind in properties.items()]).descr, rows) if rows else None
            element["data"] = {name: (table[name] if table is not None else np.zeros(0)).reshape(-1, 1)
                               for name in properties}
            continue
        columns: dict[str, list] = {name: [] for name in properties}
        for _ in range(rows):
            for name, kind in properties.items():
                if "$LIST" in str(kind):  # "<u1, ($LIST,)<i4": the count's type, then the items'
                    count_kind, item_kind = (part.strip() for part in str(kind).split(", ($LIST,)"))
                    columns[name].append(take(item_kind, int(take(count_kind)[0])).copy())
                else:
                    columns[name].append(take(kind)[0])
        element["data"] = {name: (np.array(values + [None], dtype=object)[:-1] if "$LIST" in str(properties[name])
                                  else np.array(values)) for name, values in columns.items()}


def _image(path: Path, name: str | None):
    """The texture a PLY header names (``comment TextureFile``), found as the OBJ reader finds its maps."""
    if not name:
        return None
    from PIL import Image

    from voxforge.meshio.names import find_companion

    found = find_companion(path.parent, name)
    return Image.open(found) if found is not None else None


def _has_face_lists(elements: dict) -> bool:
    properties = elements.get("face", {}).get("properties", {})
    return any("$LIST" in str(kind) for kind in properties.values())


def _field_names(face) -> list[str]:
    if isinstance(face, dict):
        return list(face)
    if isinstance(face, np.ndarray) and face.dtype.names:
        return list(face.dtype.names)
    return []


def _index_lists(face) -> list | None:
    """The faces' corner lists, however trimesh's parser stored them; None when there are none."""
    if face is None:
        return None
    if isinstance(face, np.ndarray) and face.dtype.names is None:
        return list(face) if face.ndim == 2 else None
    name = next((n for n in INDEX_NAMES if n in _field_names(face)), None)
    if name is None:
        names = _field_names(face)
        if len(names) != 1:
            return None
        name = names[0]
    lists = face[name]
    if isinstance(lists, np.ndarray) and lists.dtype.names and "f1" in lists.dtype.names:
        lists = lists["f1"]  # binary fixed-length lists: (count, corners) structured
    return list(lists)
