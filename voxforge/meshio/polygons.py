"""Polygons to triangles, right also for concave ones.

A fan from the first corner (what trimesh's OBJ and OFF readers do) is right only for convex
polygons: for a concave one it covers the notch. Here a quad is split along the diagonal that starts
at its reflex corner (vectorized over all quads), and a larger polygon is ear-clipped in its plane
(mapbox-earcut) after projecting it along its Newell normal. Triangles keep the polygon's winding,
so their normals face the way the polygon's does.
"""

from __future__ import annotations

import numpy as np


def newell_normals(corners: np.ndarray) -> np.ndarray:
    """(P, 3) normals (not unit) of P polygons given as (P, K, 3) corners (Newell's method)."""
    following = np.roll(corners, -1, axis=1)
    return np.cross(corners, following).sum(axis=1)


def split_quads(corners: np.ndarray) -> np.ndarray:
    """(Q, 2, 3) corner numbers (0..3) of the two triangles of each of Q quads, (Q, 4, 3) corners.

    The diagonal 0-2 unless corner 1 or 3 is reflex (then 1-3): a quad has at most one reflex corner
    and the diagonal through it keeps both triangles inside.
    """
    normal = newell_normals(corners)
    a, b, c, d = (corners[:, i] for i in range(4))
    reflex_b = np.einsum("ij,ij->i", np.cross(b - a, c - b), normal) < 0
    reflex_d = np.einsum("ij,ij->i", np.cross(d - c, a - d), normal) < 0
    along_bd = reflex_b | reflex_d
    result = np.empty((len(corners), 2, 3), np.int64)
    result[:] = [[0, 1, 2], [0, 2, 3]]
    result[along_bd] = [[0, 1, 3], [1, 2, 3]]
    return result


def ear_clip(corners: np.ndarray) -> np.ndarray:
    """(K - 2, 3) corner numbers of the triangles of one polygon of K corners, (K, 3)."""
    import mapbox_earcut

    count = len(corners)
    normal = newell_normals(corners[None])[0]
    length = float(np.linalg.norm(normal))
    if not length > 0:  # degenerate (all corners on a line): any triangulation covers nothing
        return np.stack([np.zeros(count - 2, np.int64), np.arange(1, count - 1), np.arange(2, count)], axis=1)
    normal = normal / length
    helper = np.eye(3)[int(np.argmin(np.abs(normal)))]
    u = np.cross(normal, helper)
    u /= np.linalg.norm(u)
    w = np.cross(normal, u)
    # (u, w, normal) is right-handed, so a polygon wound counter-clockwise about its normal stays so in 2D
    flat = np.stack([corners @ u, corners @ w], axis=1)
    triangles = np.asarray(mapbox_earcut.triangulate_float64(flat, np.array([count], np.uint32)), np.int64)
    triangles = triangles.reshape(-1, 3)
    if len(triangles) < count - 2:  # self-intersecting outline: earcut leaves some out; a fan covers it
        return np.stack([np.zeros(count - 2, np.int64), np.arange(1, count - 1), np.arange(2, count)], axis=1)
    p = flat[triangles]
    area = (p[:, 1, 0] - p[:, 0, 0]) * (p[:, 2, 1] - p[:, 0, 1]) - (p[:, 2, 0] - p[:, 0, 0]) * (p[:, 1, 1] - p[:, 0, 1])
    flip = area < 0
    triangles[flip] = triangles[flip][:, [0, 2, 1]]
    return triangles


def triangulate(polygons: list[np.ndarray], vertices: np.ndarray) -> list[np.ndarray]:
    """For each polygon (an array of K >= 3 vertex indices into ``vertices`` (N, 3)), the (K - 2, 3)
    corner numbers of its triangles (indices into the polygon, not into ``vertices``)."""
    result: list[np.ndarray | None] = [None] * len(polygons)
    sizes = np.array([len(p) for p in polygons], dtype=np.int64)
    triangle = np.array([[0, 1, 2]], np.int64)
    for i in np.flatnonzero(sizes == 3):
        result[i] = triangle
    quads = np.flatnonzero(sizes == 4)
    if len(quads):
        split = split_quads(vertices[np.stack([polygons[i] for i in quads])])
        for i, pair in zip(quads.tolist(), split):
            result[i] = pair
    for i in np.flatnonzero(sizes > 4):
        result[i] = ear_clip(vertices[polygons[i]])
    return result


def faces_of(polygons: list[np.ndarray], vertices: np.ndarray) -> np.ndarray:
    """(F, 3) vertex indices of the triangles of all polygons, polygon by polygon in order.

    Triangles and quads are handled a whole group at a time (files of millions of them stay fast);
    larger polygons one by one with :func:`ear_clip`.
    """
    if not len(polygons):
        return np.zeros((0, 3), np.int64)
    sizes = np.array([len(p) for p in polygons], dtype=np.int64)
    first = np.concatenate([[0], np.cumsum(sizes - 2)[:-1]])  # each polygon's first triangle
    faces = np.empty((int((sizes - 2).sum()), 3), np.int64)
    for size in (3, 4):
        chosen = np.flatnonzero(sizes == size)
        if not len(chosen):
            continue
        corners = np.stack([polygons[i] for i in chosen]).astype(np.int64)
        if size == 3:
            faces[first[chosen]] = corners
        else:
            split = split_quads(vertices[corners])  # (Q, 2, 3) corner numbers
            rows = np.arange(len(chosen))[:, None, None]
            triangles = corners[rows, split]  # (Q, 2, 3) vertex indices
            faces[first[chosen]] = triangles[:, 0]
            faces[first[chosen] + 1] = triangles[:, 1]
    for i in np.flatnonzero(sizes > 4).tolist():
        polygon = np.asarray(polygons[i], np.int64)
        faces[first[i]:first[i] + sizes[i] - 2] = polygon[ear_clip(vertices[polygon])]
    return faces
