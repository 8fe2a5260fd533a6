"""Voxelizer accuracy and speed against ShapeNet's own solid binvox files and trimesh's voxelizer.

For every ShapeNetCore v2 model in ../shared/data: IoU with ``model_normalized.solid.binvox`` (128^3,
ShapeNet bounds) at 128^3 and at 32^3 (reference max-pooled 4x4x4; ours pooled from 128^3 and made
directly at 32^3), and seconds per model for voxforge and for ``trimesh``'s ``voxelized(pitch).fill()``
at 128^3, side by side in one run. Medians at the end.

    python bench/bench_voxelize.py [--skip-trimesh]
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


def timed(function, repeats: int = 3):
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-trimesh", action="store_true")
    args = parser.parse_args()
    rows = []
    header = f"{'model':<20}{'faces':>7}{'IoU128':>8}{'IoU32p':>8}{'IoU32d':>8}{'t32 s':>8}{'t128 s':>8}"
    print(header + ("" if args.skip_trimesh else f"{'trimesh IoU32':>14}{'trimesh t128':>13}{'speed-up':>9}"))
    for path in sorted(SHARED.glob("shapenetcore_v2/*/*/models/model_normalized.solid.binvox")):
        reference = read_binvox(path)
        mesh = trimesh.load(path.with_name("model_normalized.obj"), force="scene", process=False)
        triangles = as_triangles(mesh)
        grid128, t128 = timed(lambda: voxelize(triangles, 128))
        grid32, t32 = timed(lambda: voxelize(triangles, 32))
        ref32 = pool(reference.occupancy, 4)
        row = {"iou128": iou(grid128.occupancy, reference.occupancy), "iou32_pooled": iou(pool(grid128.occupancy, 4), ref32),
               "iou32_direct": iou(grid32.occupancy, ref32), "t32": t32, "t128": t128}
        line = (f"{path.parts[-4]}/{path.parts[-3][:8]:<11}{len(triangles):>7}{row['iou128']:>8.3f}"
                f"{row['iou32_pooled']:>8.3f}{row['iou32_direct']:>8.3f}{t32:>8.3f}{t128:>8.3f}")
        if not args.skip_trimesh:
            flat = trimesh.Trimesh(triangles.reshape(-1, 3), np.arange(len(triangles) * 3).reshape(-1, 3))
            theirs, t_trimesh = timed(lambda: trimesh_grid(flat, reference), repeats=1)
            row.update(trimesh_iou32=iou(pool(theirs, 4), ref32), t_trimesh=t_trimesh)
            line += f"{row['trimesh_iou32']:>14.3f}{t_trimesh:>13.2f}{t_trimesh / t128:>8.1f}x"
        rows.append(row)
        print(line)
    print("medians: " + ", ".join(f"{k} {np.median([r[k] for r in rows]):.3f}" for k in rows[0]))
    chair = SHARED / "meshes" / "trimesh"
    if (chair / "chair_model.binvox").exists():  # binvox 32^3 shipped with trimesh's test models
        reference = read_binvox(chair / "chair_model.binvox")
        mesh = trimesh.load(chair / "chair_model.obj", force="scene", process=False)
        bounds = (reference.origin, reference.voxel_size * reference.resolution)
        scores = {fill: iou(voxelize(mesh, reference.resolution, fill=fill, bounds=bounds).occupancy, reference.occupancy)
                  for fill in ("carve", "carve-dilated", "flood", "none")}
        print("trimesh chair_model.binvox (32^3, its own bounds): IoU " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))


if __name__ == "__main__":
    main()
