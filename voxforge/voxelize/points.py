"""Seeded, area-weighted surface point sampling with normals, optionally evenly spaced."""

from __future__ import annotations

import numba
import numpy as np


def sample_surface(
    vertices: np.ndarray, faces: np.ndarray, count: int, seed: int | np.random.Generator = 0, even: bool = False,
    oversample: int = 8,
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` points uniformly distributed over the surface area, with their faces' unit normals.

    ``even``: draw ``oversample`` x more points and keep a farthest-point subset, so the cloud is
    evenly spaced (as the 1024-point clouds of PSGN / 3D-ReConstNet). Degenerate (zero-area) faces are
    never picked. Returns float32 arrays (count, 3).
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    drawn = count * oversample if even else count
    triangles = np.asarray(vertices, np.float64)[np.asarray(faces)]
    cross = np.cross(triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0])
    double_area = np.linalg.norm(cross, axis=1)
    total = double_area.sum()
    if not np.isfinite(total) or total <= 0:
        raise ValueError("the mesh has no surface area: every triangle is degenerate (a line or a set of points)")
    chosen = rng.choice(len(triangles), size=drawn, p=double_area / total)
    u, v = rng.random(drawn), rng.random(drawn)
    flip = u + v > 1.0  # fold the unit square onto the triangle: uniform barycentrics
    u[flip], v[flip] = 1.0 - u[flip], 1.0 - v[flip]
    tri = triangles[chosen]
    points = tri[:, 0] + u[:, None] * (tri[:, 1] - tri[:, 0]) + v[:, None] * (tri[:, 2] - tri[:, 0])
    normals = cross[chosen] / double_area[chosen, None]
    if even:
        keep = farthest_point_indices(points, count, int(rng.integers(drawn)))
        points, normals = points[keep], normals[keep]
    return points.astype(np.float32), normals.astype(np.float32)


def farthest_points_first(points: np.ndarray, normals: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The same cloud reordered so its first ``count`` points are a farthest-point subset of all of them.

    One array then serves both cloud sizes the point-set papers use (``points[:1024]`` evenly spaced,
    all 16384 uniform over the area). Starts from the first point: deterministic for a given cloud.
    """
    chosen = farthest_point_indices(np.ascontiguousarray(points, np.float64), count, 0)
    rest = np.setdiff1d(np.arange(len(points)), chosen, assume_unique=True)
    order = np.concatenate([chosen, rest])
    return points[order], normals[order]


@numba.njit(cache=True)
def farthest_point_indices(points: np.ndarray, count: int, start: int) -> np.ndarray:
    """Greedy farthest-point subset: each next point is the one farthest from those already kept."""
    n = points.shape[0]
    chosen = np.empty(count, np.int64)
    nearest = np.full(n, np.inf)
    current = start
    for c in range(count):
        chosen[c] = current
        best, best_distance = 0, -1.0
        for i in range(n):
            d = 0.0
            for axis in range(3):
                delta = points[i, axis] - points[current, axis]
                d += delta * delta
            if d < nearest[i]:
                nearest[i] = d
            if nearest[i] > best_distance:
                best, best_distance = i, nearest[i]
        current = best
    return chosen
