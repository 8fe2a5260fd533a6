"""Voxelizer accuracy and speed against ShapeNet's own solid binvox files and trimesh's voxelizer.

For every ShapeNetCore v2 model in ../shared/data: IoU with ``model_normalized.solid.binvox`` (128^3,
ShapeNet bounds, ``carve``) at 128^3 and at 32^3 (reference max-pooled 4x4x4; ours pooled from 128^3
and made directly at 32^3), for the default binvox-style rasterized surface and for the exact surface
(binvox ``-e``); seconds per model for voxforge and for ``trimesh``'s ``voxelized(pitch).fill()`` at
128^3 on the same lattice, side by side in one run. Then the time for a 100,000-face mesh at 32..256.
Medians throughout; one core (numba runs single-threaded here).

    python bench/bench_voxelize.py [--skip-trimesh] [--repeats 5]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import trimesh

from voxforge.voxelize import read_binvox, voxelize
from voxforge.voxelize.grid import as_triangles

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def pool(grid: np.ndarray, factor: int) -> np.ndarray:
    n = grid.shape[0] // factor
    return grid.reshape(n, factor, n, factor, n, factor).any(axis=(1, 3, 5))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def timed(function, repeats: int):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return result, float(np.median(times))


def trimesh_grid(mesh: trimesh.Trimesh, reference) -> np.ndarray:
    """trimesh's voxelizer on the same 128^3 lattice as the reference (pitch = voxel size)."""
    voxels = mesh.voxelized(pitch=reference.voxel_size).fill()
    grid = np.zeros(reference.occupancy.shape, bool)
    index = np.rint((voxels.points - reference.origin) / reference.voxel_size - 0.5).astype(int)
    keep = ((index >= 0) & (index < grid.shape[0])).all(axis=1)
    grid[tuple(index[keep].T)] = True
    return grid


def shapenet_table(repeats: int, skip_trimesh: bool) -> None:
    rows = []
    header = (f"{'model':<20}{'faces':>7}{'IoU128':>8}{'IoU32p':>8}{'IoU32d':>8}{'exact32d':>9}"
              f"{'t32 ms':>8}{'t128 ms':>8}")
    print(header + ("" if skip_trimesh else f"{'trimesh IoU32':>14}{'trimesh t128 s':>15}{'speed-up':>9}"))
    for path in sorted(SHARED.glob("shapenetcore_v2/*/*/models/model_normalized.solid.binvox")):
        reference = read_binvox(path)
        mesh = trimesh.load(path.with_name("model_normalized.obj"), force="scene", process=False)
        triangles = as_triangles(mesh)
        grid128, t128 = timed(lambda: voxelize(triangles, 128), repeats)
        grid32, t32 = timed(lambda: voxelize(triangles, 32), repeats)
        exact32 = voxelize(triangles, 32, surface="exact")
        ref32 = pool(reference.occupancy, 4)
        row = {"iou128": iou(grid128.occupancy, reference.occupancy),
               "iou32_pooled": iou(pool(grid128.occupancy, 4), ref32), "iou32_direct": iou(grid32.occupancy, ref32),
               "exact_iou32_direct": iou(exact32.occupancy, ref32), "t32": t32, "t128": t128}
        line = (f"{path.parts[-4]}/{path.parts[-3][:8]:<11}{len(triangles):>7}{row['iou128']:>8.3f}"
                f"{row['iou32_pooled']:>8.3f}{row['iou32_direct']:>8.3f}{row['exact_iou32_direct']:>9.3f}"
                f"{t32 * 1e3:>8.1f}{t128 * 1e3:>8.1f}")
        if not skip_trimesh:
            flat = trimesh.Trimesh(triangles.reshape(-1, 3), np.arange(len(triangles) * 3).reshape(-1, 3))
            theirs, t_trimesh = timed(lambda: trimesh_grid(flat, reference), 1)
            row.update(trimesh_iou32=iou(pool(theirs, 4), ref32), t_trimesh=t_trimesh, speedup=t_trimesh / t128)
            line += f"{row['trimesh_iou32']:>14.3f}{t_trimesh:>15.2f}{row['speedup']:>8.0f}x"
        rows.append(row)
        print(line)
    print("medians: " + ", ".join(f"{k} {np.median([r[k] for r in rows]):.4g}" for k in rows[0]))
    print("minimum: " + ", ".join(f"{k} {min(r[k] for r in rows):.3f}" for k in rows[0] if "iou" in k))


def trimesh_chair() -> None:
    chair = SHARED / "meshes" / "trimesh"
    if not (chair / "chair_model.binvox").exists():
        return
    reference = read_binvox(chair / "chair_model.binvox")  # 32^3, shipped with trimesh's test models
    mesh = trimesh.load(chair / "chair_model.obj", force="scene", process=False)
    bounds = (reference.origin, reference.voxel_size * reference.resolution)
    for surface in ("raster", "exact"):
        scores = {fill: iou(voxelize(mesh, reference.resolution, fill=fill, bounds=bounds, surface=surface).occupancy,
                            reference.occupancy) for fill in ("carve", "carve-dilated", "flood", "none")}
        print(f"trimesh chair_model.binvox (32^3, its own bounds), surface={surface}: IoU "
              + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))


def speed_100k(repeats: int) -> None:
    """A real mesh at 100,000 faces: the ShapeNet airplane 4e66465a subdivided once, first 100k faces."""
    paths = sorted(SHARED.glob("shapenetcore_v2/02691156/4e66465a*/models/model_normalized.obj"))
    if not paths:
        return
    mesh = trimesh.load(paths[0], force="mesh", process=False)
    vertices, faces = trimesh.remesh.subdivide(mesh.vertices, mesh.faces)
    triangles = np.ascontiguousarray(vertices[faces[:100_000]])
    parts = []
    for resolution in (32, 64, 128, 256):
        _, seconds = timed(lambda: voxelize(triangles, resolution), repeats)
        _, exact = timed(lambda: voxelize(triangles, resolution, surface="exact"), repeats)
        parts.append(f"{resolution}^3 {seconds * 1e3:.1f} ms (exact surface {exact * 1e3:.1f} ms)")
    print(f"100,000-face mesh, carve, median of {repeats}: " + "; ".join(parts))
    # 5M faces: 50 copies of it, each shifted by a fraction of a 32^3 voxel
    shifts = np.random.default_rng(0).uniform(-0.01, 0.01, size=(50, 1, 1, 3))
    huge = np.ascontiguousarray((triangles[None] + shifts).reshape(-1, 3, 3))
    start = time.perf_counter()
    grid = voxelize(huge, 32)
    print(f"{len(huge):,}-face mesh at 32^3: {time.perf_counter() - start:.2f} s, {int(grid.occupancy.sum())} voxels")


def binvox_write_speed(repeats: int) -> None:
    from voxforge.voxelize import decode_binvox, encode_binvox

    grid = voxelize(trimesh.creation.annulus(r_min=0.2, r_max=0.45, height=0.6), 32)
    _, write = timed(lambda: encode_binvox(grid), max(repeats, 50))
    data = encode_binvox(grid)
    _, read = timed(lambda: decode_binvox(data), max(repeats, 50))
    print(f"binvox 32^3: write {write * 1e3:.3f} ms, read {read * 1e3:.3f} ms ({len(data)} bytes)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-trimesh", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    voxelize(trimesh.creation.box(), 8)  # compile the kernels before timing
    voxelize(trimesh.creation.box(), 8, surface="exact", fill="carve-dilated", wireframe=True)
    shapenet_table(args.repeats, args.skip_trimesh)
    trimesh_chair()
    speed_100k(args.repeats)
    binvox_write_speed(args.repeats)


if __name__ == "__main__":
    main()
