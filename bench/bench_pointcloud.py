"""Point-cloud network throughput: training and inference images/s, time per epoch, and the cost of
the losses (Chamfer, Sinkhorn EMD against the exact assignment). Runs on the CPU or a GPU.

    python bench/bench_pointcloud.py [--device cuda] [--widths 1.0,0.25] [--batch-size 32] [--repeats 5]
                                     [--data DIR]   # also one real epoch through the shard loader

Training steps are forward + backward + Adam on random 128x128 images with 1024 predicted points
(Chamfer + EMD as ``pipeline train --arch reconstnet``, and Chamfer alone). Time per epoch is
projected for 3D-R2N2's ShapeNet training split (30,643 objects x 24 views, every view once, as
3D-LMNet / 3D-ReConstNet count an epoch); with ``--data`` one epoch of that dataset (one random view
per object) is also timed end to end through the real loader. Medians over ``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

R2N2_TRAIN_OBJECTS = 30643  # objects in 3D-R2N2's train split (Pix2Vox ShapeNet.json, 13 categories)
VIEWS = 24


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(function, device, repeats: int, warmup: int = 2) -> float:
    """Median seconds of ``function()`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        function()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_model(width: float, batch: int, size: int, points: int, device: torch.device, repeats: int) -> dict:
    from voxforge.models.reconstnet.train import ReconstNetConfig, build_model, reconstnet_loss
    from voxforge.models.engine import make_optimizer

    torch.manual_seed(0)
    images = torch.rand(batch, 3, size, size, device=device)
    target = torch.rand(batch, points, 3, device=device) - 0.5
    results = {}
    for name, emd_weight in (("chamfer+emd", 1.0), ("chamfer", 0.0)):
        config = ReconstNetConfig(width=width, points=points, batch_size=batch, emd_weight=emd_weight,
                                  device=str(device))
        model = build_model(config).to(device).train()
        optimizer, _ = make_optimizer(model, config)

        def step():
            loss = reconstnet_loss(model, images, target, config)["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        results[f"train {name}"] = batch / timed(step, device, repeats)
    model.eval()
    with torch.no_grad():
        results["inference"] = batch / timed(lambda: model(images), device, repeats)
    results["parameters"] = sum(p.numel() for p in model.parameters())
    return results


def bench_losses(points: int, batch: int, device: torch.device, repeats: int) -> dict:
    from voxforge.models.reconstnet.losses import chamfer_distance, exact_emd, sinkhorn_emd

    generator = torch.Generator().manual_seed(0)
    a = (torch.rand(batch, points, 3, generator=generator) - 0.5).to(device)
    b = (torch.rand(batch, points, 3, generator=generator) * 0.8 - 0.3).to(device)
    pairs = min(batch, 2)
    exact_seconds = timed(lambda: exact_emd(a[:pairs], b[:pairs]), torch.device("cpu"), max(1, repeats // 2), 0) / pairs
    exact = exact_emd(a[:pairs], b[:pairs])
    rows = {"chamfer": timed(lambda: chamfer_distance(a, b), device, repeats) / batch}
    for label, epsilon, iterations in (("sinkhorn (training: eps 0.01, 5 sweeps)", 0.01, 5),
                                       ("sinkhorn (eval: eps 0.001, 10 sweeps)", 1e-3, 10)):
        rows[label] = timed(lambda: sinkhorn_emd(a, b, epsilon, iterations), device, repeats) / batch
        approximate = sinkhorn_emd(a[:pairs], b[:pairs], epsilon, iterations).cpu().numpy()
        rows[label + " error"] = float(np.median((approximate - exact) / exact))
    rows["exact EMD (scipy, CPU)"] = exact_seconds
    return rows


def real_epoch(data: str, width: float, batch: int, points: int, device: torch.device, workers: int) -> tuple[float, int]:
    """Seconds and images for one pass over the dataset's train split (one random view per object)."""
    import json
    from pathlib import Path

    from voxforge.models.reconstnet.train import ReconstNetConfig, reconstnet_batches, train_reconstnet

    objects = json.loads((Path(data) / "dataset.json").read_text())["counts"]["per_split"]["train"]
    steps = -(-objects // batch)
    config = ReconstNetConfig(width=width, points=points, batch_size=batch, iterations=steps, device=str(device),
                              checkpoint_every=10 ** 9, checkpoint_minutes=0, log_every=10 ** 9)
    import tempfile

    with tempfile.TemporaryDirectory() as run:
        start = time.perf_counter()
        train_reconstnet(config, reconstnet_batches(data, config, workers), run, progress=False)
        _sync(device)
        return time.perf_counter() - start, objects


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--widths", default="1.0,0.25", help="encoder channel multipliers to time")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--points", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--data", help="a voxforge dataset with points: also time one real epoch")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; batch {args.batch_size}, {args.image_size}x{args.image_size} images, "
          f"{args.points} points; medians of {args.repeats}")
    print(f"\n| width | parameters | train images/s (Chamfer+EMD) | train images/s (Chamfer) | inference images/s | "
          f"epoch, 3D-R2N2 train split x {VIEWS} views |")
    print("|---:|---:|---:|---:|---:|---:|")
    for width in (float(w) for w in args.widths.split(",")):
        r = bench_model(width, args.batch_size, args.image_size, args.points, device, args.repeats)
        epoch_hours = R2N2_TRAIN_OBJECTS * VIEWS / r["train chamfer+emd"] / 3600
        print(f"| {width:g} | {r['parameters'] / 1e6:.1f} M | {r['train chamfer+emd']:.1f} | {r['train chamfer']:.1f} | "
              f"{r['inference']:.1f} | {epoch_hours:.1f} h |")
    losses = bench_losses(args.points, args.batch_size, device, args.repeats)
    print(f"\nloss cost per cloud pair, {args.points} points:")
    chamfer = losses["chamfer"]
    for label, value in losses.items():
        if label.endswith("error"):
            print(f"  {label:<46} {value * 100:+.1f}% against the exact EMD (an upper bound)")
        else:
            print(f"  {label:<46} {value * 1e3:9.3f} ms  ({value / chamfer:.0f}x Chamfer)")
    if args.data:
        width = float(args.widths.split(",")[-1])
        seconds, objects = real_epoch(args.data, width, args.batch_size, args.points, device, args.workers)
        print(f"\nreal epoch through the shard loader ({args.data}, width {width:g}): {objects} objects in "
              f"{seconds:.1f} s, {objects / seconds:.1f} images/s including loader start-up")


if __name__ == "__main__":
    main()
