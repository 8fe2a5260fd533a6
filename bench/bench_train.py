"""Training throughput of the bundled 3D-R2N2: iterations/s, images/s, data-wait share, and the projected
time of the paper's 60k iterations. Runs the real training loop (``voxforge.models.r2n2.train.train``) and
reads its per-window timings from metrics.csv, leaving out the warm-up windows (cuDNN tuning, compile).

On a GPU machine, as-is (full-size res3d-gru-3, batch 36 x 5 views, bf16):

    python bench/bench_train.py                       # synthetic in-memory batches: compute only
    python bench/bench_train.py --data DATASET        # the real loader (voxforge shards or 3D-R2N2 layout)
    python bench/bench_train.py --compile             # the same with torch.compile

On a CPU, at small width for a figure:

    python bench/bench_train.py --device cpu --width 0.125 --batch-size 8 --amp none --iterations 30
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def synthetic_batches(batch_size: int, views: tuple[int, int], seed: int = 0):
    """Endless random batches kept in memory (pinned on CUDA hosts): the loader costs nothing."""
    generator = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    pin = torch.cuda.is_available()
    pool = torch.rand(batch_size, views[1], 3, 127, 127, generator=generator)
    voxels = torch.rand(batch_size, 32, 32, 32, generator=generator) > 0.9
    if pin:
        pool, voxels = pool.pin_memory(), voxels.pin_memory()
    while True:
        count = int(rng.integers(views[0], views[1] + 1))
        yield {"images": pool[:, :count], "voxels": voxels}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="dataset folder (default: synthetic in-memory batches)")
    parser.add_argument("--arch", default="res3d-gru-3")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=36)
    parser.add_argument("--views", default="5-5", help="views per batch, MIN-MAX (default 5-5: the costliest)")
    parser.add_argument("--amp", default="bf16", choices=("none", "bf16", "fp16"))
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--batch-norm", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--workers", type=int, default=8, help="DataLoader workers with --data (default 8)")
    parser.add_argument("--iterations", type=int, default=200, help="timed iterations (default 200)")
    parser.add_argument("--warmup", type=int, default=30, help="iterations left out first (default 30)")
    parser.add_argument("--window", type=int, default=10, help="iterations per timing window (default 10)")
    parser.add_argument("--paper-iterations", type=int, default=60000)
    args = parser.parse_args()

    from voxforge.models.data import training_batches
    from voxforge.models.r2n2.train import TrainConfig, train

    low, _, high = args.views.partition("-")
    views = (int(low), int(high or low))
    warmup = max(args.window, (args.warmup + args.window - 1) // args.window * args.window)
    config = TrainConfig(arch=args.arch, width=args.width, iterations=warmup + args.iterations,
                         batch_size=args.batch_size, views=views, lr=1e-4, device=args.device, amp=args.amp,
                         compile=args.compile, batch_norm=args.batch_norm, log_every=args.window,
                         checkpoint_every=10**9, checkpoint_minutes=0)  # no checkpoint writes inside the timing
    batches = (training_batches(args.data, args.batch_size, views, args.workers) if args.data
               else synthetic_batches(args.batch_size, views))
    run_dir = Path(tempfile.mkdtemp(prefix="voxforge-bench-train-"))
    began = time.perf_counter()
    train(config, batches, run_dir, progress=False)
    total = time.perf_counter() - began
    with open(run_dir / "metrics.csv") as handle:
        logged = list(csv.DictReader(handle))
    first = next(r for r in logged if int(r["iteration"]) == warmup)
    rows = [r for r in logged if int(r["iteration"]) > warmup]
    seconds = float(rows[-1]["seconds"]) - float(first["seconds"])
    iterations = int(rows[-1]["iteration"]) - warmup
    rate = iterations / seconds
    durations = np.diff([float(first["seconds"])] + [float(r["seconds"]) for r in rows])
    images = sum(float(r["images_per_s"]) * d for r, d in zip(rows, durations))
    wait = sum(float(r["data_wait"]) * d for r, d in zip(rows, durations)) / seconds
    window_rates = [args.window / d for d in durations]
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    threads = torch.get_num_threads()
    print(f"{args.arch} width {args.width}, batch {args.batch_size} x {args.views} views, amp {args.amp}, "
          f"compile {args.compile}, {'data ' + args.data if args.data else 'synthetic batches'}, "
          f"{device_name}{f' ({threads} threads)' if device_name == 'CPU' else ''}")
    print(f"  {iterations} timed iterations after {warmup} warm-up ({total:.0f} s in all): {rate:.3f} it/s "
          f"(median window {np.median(window_rates):.3f}), {images / seconds:.0f} images/s, "
          f"data wait {wait:.1%} of wall time")
    hours = args.paper_iterations / rate / 3600
    print(f"  projected {args.paper_iterations} iterations: {hours:.2f} h")


if __name__ == "__main__":
    main()
