"""Can 3D-R2N2 learn from voxforge data? Train a reduced-width 3d-gru-3 on procedural objects for a
fixed wall-clock budget on this CPU, then report held-out IoU with 1 and 5 views.

    python bench/bench_learnability.py [--objects 300] [--minutes 15] [--width 0.125] [--no-batch-norm]

Next to the model's IoU it prints what recognizing the category alone would score: each test object
predicted as its category's mean training shape (thresholded), the bar a model must clear to show it
reconstructs the object rather than the class. Every ``--validate-minutes`` (inside the budget) the
model is scored on the dataset's val split and the best one is kept (early stopping: a few hundred
objects are seen dozens of times in 15 minutes, and the model starts memorizing them); the test split
is only used once, at the end. ``--eval-data`` points the final evaluation at another
dataset (e.g. one made with another ``--seed``) so that recipes can be compared without touching the
test split. The machine's load average is printed because a shared CPU changes the iterations a
budget buys.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def category_mean_iou(data: str, eval_data: str, split: str) -> dict[str, float]:
    """Mean IoU per threshold of 'predict the category's mean training shape' on the evaluated objects."""
    from voxforge.loaders import open_dataset

    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for sample in open_dataset(data, "train"):
        category = sample["category"]
        sums[category] = sums.get(category, 0) + sample["voxels"].astype(np.float32)
        counts[category] = counts.get(category, 0) + 1
    scores: dict[str, list[float]] = {"0.3": [], "0.4": [], "0.5": []}
    for sample in open_dataset(eval_data, split):
        if sample["category"] not in sums:
            continue
        mean = sums[sample["category"]] / counts[sample["category"]]
        truth = sample["voxels"].astype(bool)
        for threshold in scores:
            predicted = mean > float(threshold)
            scores[threshold].append((predicted & truth).sum() / max((predicted | truth).sum(), 1))
    return {t: float(np.mean(v)) for t, v in scores.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--objects", type=int, default=300)
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--width", type=float, default=0.125)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--image-size", type=int, default=127)
    parser.add_argument("--foreground-weight", type=float, default=1.0)
    parser.add_argument("--no-batch-norm", dest="batch_norm", action="store_false",
                        help="the paper's network without batch normalization (learns far slower here)")
    parser.add_argument("--seed", type=int, default=0, help="training seed: initial weights, batch order, views")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own choice)")
    parser.add_argument("--data", help="existing procedural dataset (default: build one)")
    parser.add_argument("--eval-data", help="evaluate on this dataset's --eval-split instead of DATA's test split")
    parser.add_argument("--eval-split", default="test")
    parser.add_argument("--validate-minutes", type=float, default=1.5,
                        help="score on the val split this often and keep the best model (0 = keep the last)")
    args = parser.parse_args()

    import torch

    from voxforge.loaders import open_dataset
    from voxforge.loaders.dataset import plain_background_of
    from voxforge.models.data import shard_batches
    from voxforge.models.r2n2.train import TrainConfig, evaluate, train

    if args.threads:
        torch.set_num_threads(args.threads)
    data = args.data
    if data is None:
        from voxforge.pipeline.config import RunConfig
        from voxforge.pipeline.run import run

        data = tempfile.mkdtemp(prefix="voxforge-learn-")
        started = time.perf_counter()
        run(RunConfig(source="procedural", limit=args.objects, views=12, points=1024, out=data, progress=False,
                      shard_size=16, split_ratios=(0.75, 0.10, 0.15)))
        print(f"dataset: {args.objects} objects in {time.perf_counter() - started:.0f} s at {data}")
    eval_data = args.eval_data or data
    config = TrainConfig(arch="3d-gru-3", width=args.width, iterations=10**9, batch_size=args.batch_size,
                         views=(1, 5), lr=args.lr, lr_steps=(10**9,), device="cpu", log_every=25,
                         checkpoint_every=10**9, batch_norm=args.batch_norm, image_size=args.image_size,
                         foreground_weight=args.foreground_weight, seed=args.seed)
    load_before = os.getloadavg()
    deadline = time.perf_counter() + args.minutes * 60

    def budgeted(batches):
        for batch in batches:
            if time.perf_counter() > deadline:
                return
            yield batch

    old_background = plain_background_of(data)
    validation = list(open_dataset(data, "val")) if args.validate_minutes else []
    best = {"iou": -1.0, "iteration": 0, "state": None}
    history: list[tuple[int, float]] = []
    last_check = [time.perf_counter()]

    def validate(iteration: int, model) -> None:
        if not validation or time.perf_counter() - last_check[0] < args.validate_minutes * 60:
            return
        score = evaluate(model, validation, views=(5,), old_background=old_background)["mean_iou"]["0.4"]
        history.append((iteration, score))
        if score > best["iou"]:
            best.update(iou=score, iteration=iteration,
                        state={k: v.detach().clone() for k, v in model.state_dict().items()})
        last_check[0] = time.perf_counter()

    run_dir = Path(tempfile.mkdtemp(prefix="voxforge-run-"))
    result = train(config, budgeted(shard_batches(data, args.batch_size, (1, 5), workers=1, seed=args.seed)), run_dir,
                   progress=False, on_log=validate)
    load_after = os.getloadavg()
    model = result["model"]
    if validation:
        final = evaluate(model, validation, views=(5,), old_background=old_background)["mean_iou"]["0.4"]
        history.append((result["iteration"], final))
        if best["state"] is not None and best["iou"] > final:
            model.load_state_dict(best["state"])
        else:
            best.update(iou=final, iteration=result["iteration"])
    report = evaluate(model, open_dataset(eval_data, args.eval_split), views=(1, 5),
                      old_background=plain_background_of(eval_data))
    reference = category_mean_iou(data, eval_data, args.eval_split)
    losses = np.loadtxt(run_dir / "metrics.csv", delimiter=",", skiprows=1, usecols=1, ndmin=1)
    print(f"trained {result['iteration']} iterations in {args.minutes:g} min (batch {args.batch_size}, width "
          f"{args.width}, batch norm {args.batch_norm}, image {args.image_size}, lr {args.lr:g}, foreground weight "
          f"{args.foreground_weight:g}, seed {args.seed}, {torch.get_num_threads()} threads); loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    if history:
        print(f"val IoU@0.4 (5 views, {len(validation)} objects) by iteration: "
              + ", ".join(f"{i}: {v:.3f}" for i, v in history) + f"; kept iteration {best['iteration']}")
    print(f"load average (1 min) {load_before[0]:.1f} at the start, {load_after[0]:.1f} at the end, on "
          f"{os.cpu_count()} CPUs")

    def figures(values: dict) -> str:
        return " / ".join(f"{values[t]:.3f}" for t in ("0.3", "0.4", "0.5"))

    print(f"held-out ({report['objects']} objects of {eval_data} {args.eval_split}) IoU at 0.3/0.4/0.5: "
          f"1 view {figures(report['per_views']['1'])}; 5 views {figures(report['per_views']['5'])}")
    print(f"category mean shape (recognizing the class only): {figures(reference)}")
    for category, values in sorted(report["per_category"].items()):
        print(f"  {category:<10} 5 views IoU@0.4 {values['0.4']:.3f}")


if __name__ == "__main__":
    main()
