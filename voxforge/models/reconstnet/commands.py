"""``pipeline train --arch reconstnet``, and ``pipeline eval`` and ``pipeline predict`` of its runs (the CLI
parses, this runs)."""

from __future__ import annotations

from pathlib import Path

import torch

from voxforge.models.reconstnet.train import (
    dataset_fps_prefix, evaluate_reconstnet, load_run,
)


def train_command(args) -> int:
    """``pipeline train --arch reconstnet``."""
    from voxforge.models.commands import report_training, run_training

    result = run_training(args, "reconstnet")
    if isinstance(result, int):
        return result
    report_training(result, args, "chamfer", "Chamfer (squared, means summed)", digits=5)
    return 0


def eval_command(args) -> int:
    """``pipeline eval RUN`` for a reconstnet run: Chamfer and F-scores per category and convention."""

    from voxforge.loaders import open_dataset
    from voxforge.models.commands import run_evaluation, write_report

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, config, iteration = load_run(args.run, device)
    conventions = [c for c in args.convention.split(",") if c]
    split = None if args.split == "all" else args.split

    def evaluate():
        prefix = dataset_fps_prefix(args.data) if (Path(args.data) / "dataset.json").is_file() else 0
        return evaluate_reconstnet(model, open_dataset(args.data, split), conventions, args.views, device,
                                   config.image_size, config.frame, prefix, emd=args.emd)

    report = run_evaluation(args, evaluate)
    if isinstance(report, int):
        return report
    report.update(run=args.run, data=args.data, split=args.split, iteration=iteration)
    count = report["objects"]
    print(f"{count} object{'' if count == 1 else 's'}, {args.split} split, views: {report['views']}, "
          f"target frame: {config.frame}")
    for name, result in report["conventions"].items():
        thresholds = list(result["mean"]["fscore"])
        print(f"[{name}] {result['description']}")
        header = "  " + f"{'category':<12} {'Chamfer':>9}" + "".join(f" {'F@' + t:>8}" for t in thresholds)
        print(header + (f" {'EMD':>8}" if "emd" in result["mean"] else ""))
        for category, values in [("mean", result["mean"])] + sorted(result["per_category"].items()):
            line = f"  {category:<12} {values['chamfer']:>9.5f}" + "".join(f" {values['fscore'][t]:>8.3f}" for t in thresholds)
            print(line + (f" {values['emd']:>8.5f}" if "emd" in values else ""))
    write_report(args.run, report, [])
    return 0


def predict_command(args) -> int:
    """``pipeline predict RUN IMAGE...`` for a reconstnet run: one point cloud per image."""
    from voxforge.models.commands import run_prediction
    from voxforge.models.reconstnet.predict import predict

    def describe(result: dict) -> str:
        where = "object frame" if result["frame"] == "object" else "the input camera's frame"
        return f"{result['views']} image(s) -> one point cloud each ({result['points']} points, {where}; .ply and .npy)"

    return run_prediction(args, lambda run, images, out: predict(run, images, out, device=args.device), describe)
