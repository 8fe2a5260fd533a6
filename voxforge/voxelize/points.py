"""Seeded, area-weighted surface point sampling with normals."""

from __future__ import annotations

import numpy as np


def sample_surface(
    vertices: np.ndarray, faces: np.ndarray, count: int, seed: int | np.random.Generator = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` points uniformly distributed over the surface area, with their faces' unit normals.

    Degenerate (zero-area) faces are never picked. Returns float32 arrays (count, 3).
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    triangles = np.asarray(vertices, np.float64)[np.asarray(faces)]
    cross = np.cross(triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0])
    double_area = np.linalg.norm(cross, axis=1)
    total = double_area.sum()
    if not np.isfinite(total) or total <= 0:
        raise ValueError("the mesh has no surface area to sample")
    chosen = rng.choice(len(triangles), size=count, p=double_area / total)
    u, v = rng.random(count), rng.random(count)
    flip = u + v > 1.0  # fold the unit square onto the triangle: uniform barycentrics
    u[flip], v[flip] = 1.0 - u[flip], 1.0 - v[flip]
    tri = triangles[chosen]
    points = tri[:, 0] + u[:, None] * (tri[:, 1] - tri[:, 0]) + v[:, None] * (tri[:, 2] - tri[:, 0])
    normals = cross[chosen] / double_area[chosen, None]
    return points.astype(np.float32), normals.astype(np.float32)
