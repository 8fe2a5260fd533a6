"""Can 3D-R2N2 learn from voxforge data? Train a reduced-width 3d-gru-3 on procedural objects for a
fixed wall-clock budget on this CPU, then report held-out IoU with 1 and 5 views.

    python bench/bench_learnability.py [--objects 300] [--minutes 15] [--width 0.25]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--objects", type=int, default=300)
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--data", help="existing procedural dataset (default: build one)")
    args = parser.parse_args()

    from voxforge.loaders import open_dataset
    from voxforge.models.data import shard_batches
    from voxforge.models.train import TrainConfig, evaluate, train

    data = args.data
    if data is None:
        from voxforge.pipeline.config import RunConfig
        from voxforge.pipeline.run import run

        data = tempfile.mkdtemp(prefix="voxforge-learn-")
        started = time.perf_counter()
        run(RunConfig(source="procedural", limit=args.objects, views=12, points=1024, out=data, progress=False,
                      shard_size=16, split_ratios=(0.85, 0.0, 0.15)))
        print(f"dataset: {args.objects} objects in {time.perf_counter() - started:.0f} s at {data}")
    config = TrainConfig(arch="3d-gru-3", width=args.width, iterations=10**9, batch_size=args.batch_size,
                         views=(1, 5), lr=args.lr, lr_steps=(10**9,), device="cpu", log_every=25,
                         checkpoint_every=10**9)
    deadline = time.perf_counter() + args.minutes * 60

    def budgeted(batches):
        for batch in batches:
            if time.perf_counter() > deadline:
                return
            yield batch

    run_dir = Path(tempfile.mkdtemp(prefix="voxforge-run-"))
    result = train(config, budgeted(shard_batches(data, args.batch_size, (1, 5), workers=1)), run_dir,
                   progress=False)
    report = evaluate(result["model"], open_dataset(data, "test"), views=(1, 5))
    losses = np.loadtxt(run_dir / "metrics.csv", delimiter=",", skiprows=1, usecols=1, ndmin=1)
    print(f"trained {result['iteration']} iterations in {args.minutes:g} min (batch {args.batch_size}, width "
          f"{args.width}, lr {args.lr:g}); loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    print(f"held-out ({report['objects']} objects) IoU at 0.3/0.4/0.5: 1 view "
          + " / ".join(f"{report['per_views']['1'][t]:.3f}" for t in ("0.3", "0.4", "0.5"))
          + "; 5 views " + " / ".join(f"{report['per_views']['5'][t]:.3f}" for t in ("0.3", "0.4", "0.5")))
    for category, values in sorted(report["per_category"].items()):
        print(f"  {category:<10} 5 views IoU@0.4 {values['0.4']:.3f}")


if __name__ == "__main__":
    main()
