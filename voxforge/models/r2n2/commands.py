"""``pipeline train`` / ``eval`` / ``predict`` for the 3D-R2N2 models (the CLI parses, this runs)."""

from __future__ import annotations

import os
import sys


def train_command(args) -> int:
    from voxforge.models.commands import report_training, run_training
    from voxforge.models.engine import config_from_args
    from voxforge.models.r2n2.train import TrainConfig

    low, _, high = args.views.partition("-")
    views = (int(low), int(high or low))
    config = config_from_args(TrainConfig, args, skip=("views",))
    config.views = views
    result = run_training(args, args.arch, config)
    if isinstance(result, int):
        return result
    report_training(result, args, "loss", "loss")
    return 0


def eval_command(args) -> int:
    import torch

    from voxforge.loaders import open_dataset
    from voxforge.loaders.dataset import plain_background_of
    from voxforge.models.commands import run_evaluation, write_report
    from voxforge.models.r2n2.report import attach_baselines, format_table, load_baselines
    from voxforge.models.r2n2.train import load_run, evaluate

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        model, config = load_run(args.run, device)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    split = None if args.split == "all" else args.split
    from voxforge.loaders.r2n2 import is_r2n2_layout

    # the 3D-R2N2 reader gives its RGBA renders over white; voxforge datasets record their plain colour
    old_background = (255, 255, 255) if is_r2n2_layout(args.data) else plain_background_of(args.data)
    counts = range(1, (getattr(args, "views", None) or 5) + 1)  # --views N: 1..N views (default 5)
    report = run_evaluation(args, lambda: evaluate(model, open_dataset(args.data, split), views=counts, device=device,
                                                   crop=127, old_background=old_background, gallery=args.gallery))
    if isinstance(report, int):
        return report
    baselines_path = args.baselines or (os.path.join(args.data, "ShapeNet.json")
                                        if os.path.isfile(os.path.join(args.data, "ShapeNet.json")) else None)
    if baselines_path:
        attach_baselines(report, load_baselines(baselines_path), report["synsets"])
    rows = report.pop("gallery", [])
    report.update(run=str(args.run), data=str(args.data), split=args.split, iteration=config["iteration"],
                  thresholds_note="IoU of (occupancy probability > threshold); 3D-R2N2 reports 0.4, Pix2Vox 0.3")
    print(format_table(report, args.split))
    write_report(args.run, report, rows)
    return 0


def predict_command(args) -> int:
    from voxforge.models.commands import run_prediction
    from voxforge.models.r2n2.predict import predict

    return run_prediction(
        args, lambda run, images, out: predict(run, images, out, threshold=args.threshold, device=args.device),
        lambda result: f"{result['views']} view(s) -> {result['occupied']} occupied voxels at threshold "
                       f"{result['threshold']}; mesh {result['faces']} faces"
                       f"{' (watertight)' if result['watertight'] else ''}")
