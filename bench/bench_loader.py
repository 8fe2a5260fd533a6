"""Loader throughput: decode + augment views/s from local shards (one process), and batches/s with
DataLoader workers. Builds a procedural dataset first unless --data is given.

    python bench/bench_loader.py [--data DIR] [--objects 48] [--workers 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data")
    parser.add_argument("--objects", type=int, default=48)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from voxforge.loaders.torch import ShardDataset, ViewBatcher, plain_background_of

    data = args.data
    # the decoded views are the 5 a batch uses (ShardDataset(max_views=5)), not all 24
    if data is None:
        from voxforge.pipeline.config import RunConfig
        from voxforge.pipeline.run import run

        data = tempfile.mkdtemp(prefix="voxforge-bench-")
        run(RunConfig(source="procedural", limit=args.objects, out=data, progress=False, shard_size=8,
                      split_ratios=(1.0, 0.0, 0.0)))
    old = plain_background_of(data)

    def batcher():
        return ViewBatcher(views=(5, 5), background="random_color", old_background=old, flip=True,
                           color_jitter=0.2, pca_noise=0.1, permute_rgb=True, normalize=True)

    rates = []
    for _ in range(args.repeats):
        collate, views, start = batcher(), 0, time.perf_counter()
        for sample in ShardDataset(data, max_views=5):
            views += collate([sample])["images"].shape[1]
        rates.append(views / (time.perf_counter() - start))
    decoded = np.median(rates)
    print(f"one process: {decoded:.0f} views/s decoded + augmented (5 random views of 24 per object)")
    rates = []
    for _ in range(args.repeats):
        loader = torch.utils.data.DataLoader(ShardDataset(data, max_views=5), batch_size=8, num_workers=args.workers,
                                             collate_fn=batcher())
        samples, start = 0, time.perf_counter()
        for batch in loader:
            samples += batch["images"].shape[0]
        rates.append(samples / (time.perf_counter() - start))
    print(f"DataLoader, {args.workers} workers, batch 8 x 5 views: {np.median(rates):.1f} samples/s "
          f"({np.median(rates) * 5:.0f} views/s), including worker start-up")


if __name__ == "__main__":
    main()
