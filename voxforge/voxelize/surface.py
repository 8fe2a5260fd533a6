"""Exact surface voxelization: a voxel is occupied when its cube meets a triangle.

The test is the separating-axis theorem for a triangle against an axis-aligned box (Akenine-Moeller,
"Fast 3D triangle-box overlap testing", 2001): 3 box axes, the triangle normal and the 9 cross
products of box axes and triangle edges. Touching counts as meeting, so a triangle lying exactly on a
voxel face marks the voxels on both sides. Compiled with numba: one pass over the triangles, each
tested only against the voxels of its own bounding box (NaN/inf triangles never mark anything).
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, inline="always")
def _axis_separates(p0: float, p1: float, p2: float, radius: float) -> bool:
    low = min(p0, min(p1, p2))
    high = max(p0, max(p1, p2))
    return low > radius or high < -radius


@numba.njit(cache=True)
def _triangle_meets_box(v0, v1, v2, centre, half: float) -> bool:
    a0, a1, a2 = v0[0] - centre[0], v0[1] - centre[1], v0[2] - centre[2]
    b0, b1, b2 = v1[0] - centre[0], v1[1] - centre[1], v1[2] - centre[2]
    c0, c1, c2 = v2[0] - centre[0], v2[1] - centre[1], v2[2] - centre[2]
    edges = ((b0 - a0, b1 - a1, b2 - a2), (c0 - b0, c1 - b1, c2 - b2), (a0 - c0, a1 - c1, a2 - c2))
    for e0, e1, e2 in edges:
        # axis = x cross edge = (0, -e2, e1)
        if _axis_separates(-e2 * a1 + e1 * a2, -e2 * b1 + e1 * b2, -e2 * c1 + e1 * c2, half * (abs(e2) + abs(e1))):
            return False
        # axis = y cross edge = (e2, 0, -e0)
        if _axis_separates(e2 * a0 - e0 * a2, e2 * b0 - e0 * b2, e2 * c0 - e0 * c2, half * (abs(e2) + abs(e0))):
            return False
        # axis = z cross edge = (-e1, e0, 0)
        if _axis_separates(-e1 * a0 + e0 * a1, -e1 * b0 + e0 * b1, -e1 * c0 + e0 * c1, half * (abs(e1) + abs(e0))):
            return False
    # the triangle's plane against the box
    f0, f1, f2 = edges[0]
    g0, g1, g2 = edges[1]
    n0, n1, n2 = f1 * g2 - f2 * g1, f2 * g0 - f0 * g2, f0 * g1 - f1 * g0
    distance = n0 * a0 + n1 * a1 + n2 * a2
    reach = half * (abs(n0) + abs(n1) + abs(n2))
    return abs(distance) <= reach


@numba.njit(cache=True)
def triangle_bounds(triangles: np.ndarray):
    """(low xyz, high xyz, number of triangles with a NaN/inf coordinate) in one pass."""
    low = np.full(3, np.inf)
    high = np.full(3, -np.inf)
    bad = 0
    for t in range(triangles.shape[0]):
        finite = True
        for corner in range(3):
            for axis in range(3):
                value = triangles[t, corner, axis]
                if not np.isfinite(value):
                    finite = False
        if not finite:
            bad += 1
            continue
        for corner in range(3):
            for axis in range(3):
                value = triangles[t, corner, axis]
                low[axis] = min(low[axis], value)
                high[axis] = max(high[axis], value)
    return low, high, bad


@numba.njit(cache=True)
def mark_surface(triangles: np.ndarray, origin: np.ndarray, voxel_size: float, resolution: int,
                 occupancy: np.ndarray, half: float) -> None:
    """Set ``occupancy[i, j, k]`` for every voxel of the grid that a triangle meets."""
    centre = np.empty(3)
    v0, v1, v2 = np.empty(3), np.empty(3), np.empty(3)
    low = np.empty(3, np.int64)
    high = np.empty(3, np.int64)
    limit = resolution - 1
    for t in range(triangles.shape[0]):
        for axis in range(3):  # into grid units: voxel i spans [i, i + 1)
            v0[axis] = (triangles[t, 0, axis] - origin[axis]) / voxel_size
            v1[axis] = (triangles[t, 1, axis] - origin[axis]) / voxel_size
            v2[axis] = (triangles[t, 2, axis] - origin[axis]) / voxel_size
        for axis in range(3):
            lo = min(v0[axis], min(v1[axis], v2[axis]))
            hi = max(v0[axis], max(v1[axis], v2[axis]))
            # voxels whose closed cube [i, i+1] reaches the triangle's bounding box
            low[axis] = max(0, int(np.ceil(lo)) - 1)
            high[axis] = min(limit, int(np.floor(hi)))
        if low[0] > high[0] or low[1] > high[1] or low[2] > high[2]:
            continue
        for i in range(low[0], high[0] + 1):
            centre[0] = i + 0.5
            for j in range(low[1], high[1] + 1):
                centre[1] = j + 0.5
                for k in range(low[2], high[2] + 1):
                    if occupancy[i, j, k]:
                        continue
                    centre[2] = k + 0.5
                    if _triangle_meets_box(v0, v1, v2, centre, half):
                        occupancy[i, j, k] = True


def surface_occupancy(triangles: np.ndarray, origin, voxel_size: float, resolution: int,
                      half: float = 0.5) -> np.ndarray:
    """(R, R, R) bool: voxels of the cube grid at ``origin`` met by any of the (F, 3, 3) triangles.

    ``half`` is the half-edge of the tested cube in voxels: 0.5 is the voxel itself (exact); smaller
    values only for experiments (a thinner, gap-prone surface).
    """
    occupancy = np.zeros((resolution,) * 3, np.bool_)
    mark_surface(np.ascontiguousarray(triangles, dtype=np.float64), np.asarray(origin, np.float64),
                 float(voxel_size), resolution, occupancy, half)
    return occupancy


@numba.njit(cache=True)
def carve_spans(surface: np.ndarray, dilated: bool) -> np.ndarray:
    """binvox-style carving: solid unless seen from outside along one of the six axis rays.

    Per line along each axis, the span between its first and last surface voxel is hidden from both
    of that axis' rays; a voxel is solid when it lies within the spans of all three axes. ``dilated``
    widens every span by one voxel (rays stop one voxel before the surface).
    """
    n0, n1, n2 = surface.shape
    widen = 1 if dilated else 0
    first_x = np.full((n1, n2), n0)
    last_x = np.full((n1, n2), -1)
    first_y = np.full((n0, n2), n1)
    last_y = np.full((n0, n2), -1)
    first_z = np.full((n0, n1), n2)
    last_z = np.full((n0, n1), -1)
    for i in range(n0):
        for j in range(n1):
            for k in range(n2):
                if surface[i, j, k]:
                    first_x[j, k] = min(first_x[j, k], i)
                    last_x[j, k] = max(last_x[j, k], i)
                    first_y[i, k] = min(first_y[i, k], j)
                    last_y[i, k] = max(last_y[i, k], j)
                    first_z[i, j] = min(first_z[i, j], k)
                    last_z[i, j] = max(last_z[i, j], k)
    solid = surface.copy()
    for i in range(n0):
        for j in range(n1):
            if last_z[i, j] < 0:
                continue
            for k in range(max(0, first_z[i, j] - widen), min(n2, last_z[i, j] + 1 + widen)):
                if (first_x[j, k] - widen <= i <= last_x[j, k] + widen and last_x[j, k] >= 0
                        and first_y[i, k] - widen <= j <= last_y[i, k] + widen and last_y[i, k] >= 0):
                    solid[i, j, k] = True
    return solid
