"""Template meshes for mesh-from-silhouettes models: the icosphere a deformation network starts from.

Soft Rasterizer's reconstruction model deforms a sphere of 642 vertices and 1280 faces: that is the
icosphere of level 3 here (an icosahedron subdivided three times, every new vertex pushed onto the sphere).
"""

from __future__ import annotations

import itertools

import numpy as np


def icosahedron() -> tuple[np.ndarray, np.ndarray]:
    """The regular icosahedron on the unit sphere: vertices (12, 3) float64 and faces (20, 3) int64, each
    face wound counter-clockwise seen from outside (its right-hand normal points away from the centre).

    The vertices are the cyclic permutations of (0, +-1, +-phi) (phi the golden ratio); its edges are the
    vertex pairs at distance 2 (the shortest), and its faces the triples of mutually adjacent vertices."""
    phi = (1.0 + 5.0 ** 0.5) / 2.0
    corners = [(0.0, a, b * phi) for a in (-1.0, 1.0) for b in (-1.0, 1.0)]
    vertices = np.array([np.roll(corner, shift) for shift in range(3) for corner in corners])
    adjacent = np.isclose(np.linalg.norm(vertices[:, None] - vertices[None], axis=-1), 2.0)
    faces = []
    for i, j, k in itertools.combinations(range(len(vertices)), 3):
        if adjacent[i, j] and adjacent[j, k] and adjacent[i, k]:
            a, b, c = vertices[[i, j, k]]
            outward = np.dot(np.cross(b - a, c - a), a + b + c) > 0.0
            faces.append((i, j, k) if outward else (i, k, j))
    vertices /= np.linalg.norm(vertices, axis=1, keepdims=True)
    return vertices, np.array(faces, dtype=np.int64)


def icosphere(level: int = 3, radius: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Icosphere of ``radius`` around the origin: vertices (V, 3) float64, faces (F, 3) int64, wound
    counter-clockwise seen from outside (outward normals), closed and consistently oriented.

    ``level`` subdivisions of the icosahedron, each splitting every triangle into four at its edge
    midpoints (each midpoint computed once per edge, so neighbours share it) and projecting the new vertices
    onto the sphere: V = 10 * 4**level + 2, F = 20 * 4**level (level 0: 12 / 20, 1: 42 / 80, 2: 162 / 320,
    3: 642 / 1280). Raises ValueError for a negative level or a radius that is not positive.

    Returns numpy arrays (the template is a constant); for a model, ``torch.from_numpy`` them."""
    if int(level) != level or level < 0:
        raise ValueError(f"icosphere level must be a non-negative integer, got {level!r}")
    if not radius > 0.0:
        raise ValueError(f"icosphere radius must be positive, got {radius!r}")
    vertices, faces = icosahedron()
    points = list(vertices)
    for _ in range(int(level)):
        midpoints: dict[tuple[int, int], int] = {}  # edge (low, high) -> index of its midpoint
        finer = []
        for corners in faces:
            middle = []
            for i, j in zip(corners, np.roll(corners, -1)):  # edges ab, bc, ca
                key = (min(i, j), max(i, j))
                if key not in midpoints:
                    point = points[i] + points[j]
                    points.append(point / np.linalg.norm(point))
                    midpoints[key] = len(points) - 1
                middle.append(midpoints[key])
            (a, b, c), (ab, bc, ca) = corners, middle
            finer += [(a, ab, ca), (b, bc, ab), (c, ca, bc), (ab, bc, ca)]  # same winding as (a, b, c)
        faces = np.array(finer, dtype=np.int64)
    return np.asarray(points, dtype=np.float64) * float(radius), faces
