"""Loader throughput at 127x127: decode + augment views/s in one process (per core), against the
obvious alternatives (tarfile + Pillow for the shards; the same objects in the 3D-R2N2 folder layout),
and samples/s through a DataLoader with worker processes. Builds a procedural dataset first unless
--data is given; the 3D-R2N2 copy is made with `pipeline export --layout r2n2`.

    python bench/bench_loader.py [--data DIR] [--objects 48] [--workers 2] [--repeats 5]

Every figure is a median over --repeats passes over the data (page cache warm: these are CPU costs).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

VIEWS = 5  # views per object in a batch (3D-R2N2 trains on 1..5)


def batcher(old_background):
    from voxforge.loaders.torch import ViewBatcher

    return ViewBatcher(views=(VIEWS, VIEWS), background="random_color", old_background=old_background, flip=True,
                       color_jitter=0.2, pca_noise=0.1, permute_rgb=True, normalize=True)


class TimedCollate:
    """The collate function, also reporting (worker id, CPU seconds its process has used so far)."""

    def __init__(self, collate) -> None:
        self.collate = collate

    def __call__(self, samples):
        batch = self.collate(samples)
        info = torch.utils.data.get_worker_info()
        batch["cpu"] = (info.id if info else -1, time.process_time())
        return batch


def median_rate(run, repeats: int) -> tuple[float, float]:
    """Median (items per wall-clock second, items per CPU second of this process): on a shared machine
    the second is the per-core figure, the first also counts time other programs held the core."""
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        count = run()
        wall.append(count / (time.perf_counter() - start))
        cpu.append(count / (time.process_time() - start_cpu))
    return float(np.median(wall)), float(np.median(cpu))


def tarfile_pillow_views(shards: list[Path], rng) -> int:
    """The obvious way: tarfile members, Pillow decodes of the same views, numpy for points and voxels."""
    from voxforge.voxelize.binvox import decode_binvox

    views = 0
    for shard in shards:
        with tarfile.open(shard) as tar:
            members = {}
            for info in tar:
                members[info.name] = tar.extractfile(info).read()
        keys = sorted({name.split(".", 1)[0] for name in members})
        for key in keys:
            meta = json.loads(members[f"{key}.json"])
            decode_binvox(members[f"{key}.voxels.binvox"])
            np.load(io.BytesIO(members[f"{key}.points.npy"])), np.load(io.BytesIO(members[f"{key}.normals.npy"]))
            for view in rng.choice(meta["views"], VIEWS, replace=False):
                for kind in ("rgb", "mask"):
                    with Image.open(io.BytesIO(members[f"{key}.{kind}_{view:02d}.png"])) as image:
                        np.asarray(image)
                views += 1
    return views


def r2n2_samples(root: Path, rng):
    """The 3D-R2N2 layout read the way its loaders do (files per view), VIEWS random views per object,
    as the same sample dicts (colour over white + alpha) so the same collate function runs on them."""
    from voxforge.loaders.png import decode_png
    from voxforge.loaders.r2n2 import RENDERING_DIR, VOXEL_DIR, r2n2_intrinsics, r2n2_world_to_camera, read_metadata
    from voxforge.renderers.backgrounds import composite
    from voxforge.voxelize.binvox import read_binvox

    for rendering in sorted((root / RENDERING_DIR).glob("*/*/rendering")):
        metadata = read_metadata(rendering / "rendering_metadata.txt")
        views = np.sort(rng.choice(len(metadata), VIEWS, replace=False))
        rgba = np.stack([decode_png((rendering / f"{v:02d}.png").read_bytes()) for v in views])
        grid = read_binvox(root / VOXEL_DIR / rendering.parent.parent.name / rendering.parent.name / "model.binvox")
        yield {"id": rendering.parent.name, "category": rendering.parent.parent.name,
               "images": composite(rgba[..., :3], rgba[..., 3], np.full(3, 255, np.uint8)), "alphas": rgba[..., 3],
               "K": np.stack([r2n2_intrinsics(rgba.shape[1])] * VIEWS),
               "world_to_camera": np.stack([r2n2_world_to_camera(m[0], m[1], m[3]) for m in metadata[views]]),
               "voxels": grid.occupancy, "points": np.zeros((1, 3), np.float32)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data")
    parser.add_argument("--objects", type=int, default=48)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=6, help="DataLoader epochs (the first includes start-up)")
    args = parser.parse_args()
    from voxforge.loaders.shards import iter_shard
    from voxforge.loaders.torch import ShardDataset, plain_background_of, resolve_shards

    data = args.data
    if data is None:
        from voxforge.pipeline.config import RunConfig
        from voxforge.pipeline.run import run

        data = tempfile.mkdtemp(prefix="voxforge-bench-")
        run(RunConfig(source="procedural", limit=args.objects, out=data, progress=False, shard_size=8,
                      split_ratios=(1.0, 0.0, 0.0)))
    old = plain_background_of(data)
    shards = resolve_shards(data)
    objects = sum(1 for shard in shards for _ in iter_shard(shard))
    r2n2 = Path(tempfile.mkdtemp(prefix="voxforge-bench-r2n2-"))
    from voxforge.loaders import open_dataset
    from voxforge.loaders.r2n2 import export_r2n2

    export_r2n2(open_dataset(data), r2n2, old)
    batcher(old)([next(iter(ShardDataset(data, max_views=VIEWS)))])  # compile the kernels outside the timings
    print(f"{objects} objects, {VIEWS} random views of each decoded and augmented (re-composited colour background, "
          "flip, colour jitter, PCA noise, RGB permutation, ImageNet normalization); one process:")

    def shard_run() -> int:
        collate = batcher(old)
        return sum(collate([sample])["images"].shape[1] for sample in ShardDataset(data, max_views=VIEWS))

    def shard_decode_only() -> int:
        return sum(len(sample["images"]) for sample in ShardDataset(data, max_views=VIEWS))

    def r2n2_run() -> int:
        collate = batcher((255, 255, 255))
        return sum(collate([s])["images"].shape[1] for s in r2n2_samples(r2n2, np.random.default_rng(0)))

    rates = {
        "shards, decode + augment": median_rate(shard_run, args.repeats),
        "shards, decode only": median_rate(shard_decode_only, args.repeats),
        "shards via tarfile + Pillow, decode only": median_rate(
            lambda: tarfile_pillow_views(shards, np.random.default_rng(0)), args.repeats),
        "3D-R2N2 folder layout, decode + augment": median_rate(r2n2_run, args.repeats),
    }
    base = rates["shards, decode + augment"][1]
    print(f"  {'':<44} {'per CPU-second':>14}  {'ratio':>6}  {'wall-clock':>10}")
    for name, (wall, cpu) in rates.items():
        print(f"  {name:<44} {cpu:8.0f} views/s  {cpu / base:5.2f}x  {wall:6.0f} views/s")

    repeat = max(1, -(-240 // objects))  # epochs of >= 240 samples: start-up effects stay small
    dataset = ShardDataset(shards * repeat, max_views=VIEWS, shuffle_buffer=16)
    loader = torch.utils.data.DataLoader(dataset, batch_size=8, num_workers=args.workers,
                                         collate_fn=TimedCollate(batcher(old)), persistent_workers=args.workers > 0)
    epoch_rates, cpu_rates, worker_cpu = [], [], {}
    for epoch in range(args.epochs):
        dataset.set_epoch(epoch)
        samples, start, before = 0, time.perf_counter(), dict(worker_cpu)
        for batch in loader:
            samples += batch["images"].shape[0]
            worker, seconds = batch["cpu"]
            worker_cpu[worker] = max(seconds, worker_cpu.get(worker, 0.0))
        epoch_rates.append(samples / (time.perf_counter() - start))
        if before:  # CPU the workers spent on this epoch (decode, augment, hand-over to the main process)
            cpu_rates.append(samples * VIEWS / sum(worker_cpu[w] - before.get(w, 0.0) for w in worker_cpu))
    steady = float(np.median(epoch_rates[1:])) if len(epoch_rates) > 1 else epoch_rates[0]
    print(f"DataLoader, {args.workers} workers, batches of 8 x {VIEWS} views, epochs of {objects * repeat} samples: "
          f"{steady:.0f} samples/s ({steady * VIEWS:.0f} views/s) wall-clock, median of epochs 2..{args.epochs}; "
          f"first epoch incl. worker start-up {epoch_rates[0]:.0f} samples/s")
    if cpu_rates:
        print(f"  per worker CPU-second: {np.median(cpu_rates):.0f} views/s")
    print(f"machine load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
