"""Does the SoftRas-style mesh model learn from voxforge silhouettes, and how fast is its rasterizer?

    python bench/bench_softras.py [--objects 120] [--minutes 10] [--width 0.25] [--batch-size 16]

1. Rasterizer: forward + backward of a batch of 642-vertex spheres at 64 px, medians of ``--repeats``
   runs, with face x tile culling (the default) against the dense face x pixel computation (``cull=False``),
   the obvious alternative.
2. Learning: builds a ``--preset softras`` procedural dataset (``--objects`` objects, or ``--data`` an
   existing one), trains ``--arch softras`` for a wall-clock budget on this machine, then reports the
   test split's voxel IoU (each predicted mesh voxelized into the object's cube) next to two baselines:
   the untrained model (it predicts the template sphere) and "the category's mean training shape"
   (thresholded at 0.4), the bar a model must clear to show it reconstructs the object rather than the class.
The load average is printed because a shared CPU changes what a budget buys.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def rasterizer_timings(repeats: int, batch: int, size: int) -> None:
    import torch

    from voxforge.models.softras import icosphere, soft_silhouettes
    from voxforge.renderers.cameras import intrinsics, look_at

    vertices, faces = icosphere(3, 0.25)
    K = torch.from_numpy(np.asarray(intrinsics(size, 2.1875), np.float32)).expand(batch, 3, 3)
    pose = torch.from_numpy(np.asarray(look_at(np.array([0.0, 0.5, 1.5])), np.float32)).expand(batch, 3, 4)
    faces_t = torch.from_numpy(faces)
    results = {}
    for cull in (True, False):
        times = []
        for _ in range(repeats):
            verts = torch.from_numpy(vertices).float().expand(batch, -1, -1).clone().requires_grad_(True)
            began = time.perf_counter()
            soft_silhouettes(verts, faces_t, K, pose, size, 1e-4, cull=cull).sum().backward()
            times.append(time.perf_counter() - began)
        results[cull] = statistics.median(times)
    print(f"rasterizer, batch {batch} x 642 vertices x {size} px, forward + backward, median of {repeats}: "
          f"culled {results[True]:.3f} s, dense {results[False]:.3f} s ({results[False] / results[True]:.1f}x)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--objects", type=int, default=120)
    parser.add_argument("--data", help="an existing voxforge dataset with train and test splits")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    print(f"{time.strftime('%Y-%m-%d %H:%M')}, load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs")
    rasterizer_timings(args.repeats, 8, 64)

    from bench_learnability import category_mean_iou

    import torch

    from voxforge.loaders import open_dataset
    from voxforge.loaders.dataset import plain_background_of
    from voxforge.models.softras.train import SoftRasConfig, build_model, evaluate_softras

    work = Path(tempfile.mkdtemp(prefix="bench-softras-"))
    data = args.data or str(work / "data")
    pipeline = [sys.executable, "-m", "voxforge.pipeline.cli"]
    if not args.data:
        subprocess.run(pipeline + ["run", "procedural", "--preset", "softras", "--limit", str(args.objects),
                                   "--out", data, "--workers", str(args.workers), "--no-progress"], check=True)
    run = work / "run"
    began = time.perf_counter()
    subprocess.run(pipeline + ["train", "--arch", "softras", "--data", data, "--out", str(run), "--width",
                               str(args.width), "--batch-size", str(args.batch_size), "--lr", str(args.lr),
                               "--iterations", "1000000", "--time-limit", str(args.minutes), "--workers",
                               str(args.workers), "--no-progress", "--log-every", "25"], check=True)
    print(f"trained for {(time.perf_counter() - began) / 60:.1f} min")
    from voxforge.models.softras.train import load_run

    model, config, iteration = load_run(run)
    background = plain_background_of(data)
    trained = evaluate_softras(model, open_dataset(data, "test"), views=4, old_background=background)
    torch.manual_seed(0)
    sphere = build_model(SoftRasConfig(width=args.width))  # zero-initialized offsets: the template sphere
    untrained = evaluate_softras(sphere, open_dataset(data, "test"), views=4, old_background=background)
    category = category_mean_iou(data, data, "test")
    print(f"test split, {trained['objects']} objects x 4 views, voxel IoU at 32^3 ({iteration} iterations):")
    print(f"  softras model         {trained['mean_iou']:.3f}  (silhouette IoU {trained['mean_silhouette_iou']:.3f})")
    print(f"  template sphere       {untrained['mean_iou']:.3f}  (silhouette IoU {untrained['mean_silhouette_iou']:.3f})")
    print(f"  category mean shape   {category['0.4']:.3f}  (thresholded at 0.4)")
    for name, values in trained["per_category"].items():
        print(f"    {name:<10} {values['iou']:.3f}  sphere {untrained['per_category'][name]['iou']:.3f}")


if __name__ == "__main__":
    main()
