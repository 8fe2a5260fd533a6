"""``pipeline train`` / ``eval`` / ``predict`` for the 3D-R2N2 models (the CLI parses, this runs)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def add_train_options(parser) -> None:
    """The 3D-R2N2 options of ``pipeline train`` beyond the common ones (``--threads`` serves both trainers)."""
    parser.add_argument("--warmup", type=int, default=0, help="iterations of linear lr warm-up (default 0)")
    parser.add_argument("--foreground-weight", type=float, default=1.0,
                        help="loss weight of occupied voxels (default 1 = the paper's cross-entropy)")
    parser.add_argument("--batch-norm", action="store_true",
                        help="batch normalization after each convolution (not in the paper; learns much faster)")
    parser.add_argument("--image-size", type=int, default=127,
                        help="network input side; views are resized to it (default 127; e.g. 64 for CPU runs)")
    parser.add_argument("--amp", choices=("none", "bf16", "fp16"), default="none",
                        help="mixed precision autocast: bf16 (CUDA or CPU) or fp16 (CUDA, loss-scaled)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (first steps compile)")
    parser.add_argument("--log-every", type=int, default=50, help="iterations per metrics line (default 50)")
    parser.add_argument("--ray-workers", type=int, default=0,
                        help="train in N Ray Train workers with DDP (with --address, or alone for a local Ray)")
    parser.add_argument("--address", help="Ray cluster to train on (auto, ray://HOST:10001, HOST:6379)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--threads", type=int, default=0, metavar="N",
                        help="torch threads of the training process (default 0: the CPUs this process may use, "
                        "after affinity and cgroup quota, less one per --workers; OMP_NUM_THREADS when set; "
                        "-1: torch's own default)")


def train_command(args) -> int:
    from voxforge.models.data import training_batches
    from voxforge.models.stopping import report_stop
    from voxforge.models.train import TrainConfig, train

    low, _, high = args.views.partition("-")
    views = (int(low), int(high or low))
    config = TrainConfig(arch=args.arch, width=args.width, iterations=args.iterations, batch_size=args.batch_size,
                         views=views, lr=args.lr, lr_steps=tuple(args.lr_steps), weight_decay=args.weight_decay,
                         grad_clip=args.grad_clip, seed=args.seed, checkpoint_every=args.checkpoint_every,
                         checkpoint_minutes=args.checkpoint_minutes, time_limit=args.time_limit,
                         warmup=args.warmup, foreground_weight=args.foreground_weight, batch_norm=args.batch_norm,
                         image_size=args.image_size, amp=args.amp, compile=args.compile, log_every=args.log_every,
                         threads=args.threads)
    if args.device:
        config.device = args.device
    try:
        if args.ray_workers or args.address:
            from voxforge.models.distributed import train_with_ray

            metrics = train_with_ray(config, args.data, args.out, args.address, max(1, args.ray_workers or 1),
                                     args.workers, resume=args.resume, progress=not args.no_progress)
            if metrics.get("stopped"):
                return report_stop(metrics["stopped"], args.out)
            print(f"trained {metrics.get('iteration')} iterations on {args.ray_workers or 1} Ray workers; "
                  f"last loss {metrics.get('loss', float('nan')):.4f}; run: {args.out}")
            return 0
        batches = training_batches(args.data, config.batch_size, views, args.workers, args.seed)
        result = train(config, batches, args.out, resume=args.resume, progress=not args.no_progress)
    except KeyboardInterrupt:
        print(f"interrupted: checkpoint in {args.out}; continue with --resume", file=sys.stderr)
        return 130
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if result["stopped"]:  # every rank exits with the same status; rank 0 says why
        return report_stop(result["stopped"], args.out, quiet=result["rank"] != 0)
    if result["rank"] == 0:
        last = result["losses"][-1] if result["losses"] else float("nan")
        ranks = f", {result['world_size']} ranks" if result["world_size"] > 1 else ""
        print(f"trained {result['iteration']} iterations ({result['iterations_per_second']:.2f} it/s, "
              f"{result['images_per_second']:.1f} images/s, data wait {result['data_wait_share']:.0%}{ranks}); "
              f"last loss {last:.4f}; run: {args.out}")
    return 0


def add_eval_options(parser) -> None:
    parser.add_argument("--baselines", help="Pix2Vox-style ShapeNet.json with the published 3D-R2N2 figures "
                        "(default: DATA/ShapeNet.json when there is one)")
    parser.add_argument("--gallery", type=int, default=8,
                        help="objects in RUN/gallery.png: views, prediction, ground truth (default 8; 0 = none)")
    parser.add_argument("--device", help="cuda or cpu (default: cuda when available)")


def eval_command(args) -> int:
    import torch

    from voxforge.loaders import open_dataset
    from voxforge.loaders.dataset import plain_background_of
    from voxforge.models.gallery import gallery
    from voxforge.models.report import attach_baselines, format_table, load_baselines
    from voxforge.models.train import load_run, evaluate

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
    report = evaluate(model, open_dataset(args.data, split), views=counts, device=device, crop=127,
                      old_background=old_background, gallery=args.gallery)
    if not report["objects"]:
        print(f"error: no objects in split {args.split!r} of {args.data}", file=sys.stderr)
        return 2
    baselines_path = args.baselines or (os.path.join(args.data, "ShapeNet.json")
                                        if os.path.isfile(os.path.join(args.data, "ShapeNet.json")) else None)
    if baselines_path:
        attach_baselines(report, load_baselines(baselines_path), report["synsets"])
    rows = report.pop("gallery", [])
    report.update(run=str(args.run), data=str(args.data), split=args.split, iteration=config["iteration"],
                  thresholds_note="IoU of (occupancy probability > threshold); 3D-R2N2 reports 0.4, Pix2Vox 0.3")
    print(format_table(report, args.split))
    path = Path(args.run) / "eval.json"
    temporary = path.with_name("eval.json.partial")
    temporary.write_text(json.dumps(report, indent=2))
    temporary.replace(path)
    print(f"written: {path}")
    if rows:
        print(f"gallery: {gallery(rows, Path(args.run) / 'gallery.png')}")
    return 0


def add_predict_parser(commands) -> None:
    predict = commands.add_parser("predict", help="voxels (binvox) and a mesh from a few views with a trained run")
    predict.add_argument("run", help="run folder written by pipeline train")
    predict.add_argument("images", nargs="+", help="views of one object (PNG/JPEG; RGBA goes over grey 240)")
    predict.add_argument("--out", help="output folder (default RUN/predict)")
    predict.add_argument("--threshold", type=float, default=0.4, help="occupancy threshold (default 0.4)")
    predict.add_argument("--device", help="cuda or cpu (default: cuda when available)")


def predict_command(args) -> int:
    from voxforge.models.predict import predict

    out = args.out or os.path.join(args.run, "predict")
    try:
        result = predict(args.run, args.images, out, threshold=args.threshold, device=args.device)
    except (FileNotFoundError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{result['views']} view(s) -> {result['occupied']} occupied voxels at threshold {result['threshold']}; "
          f"mesh {result['faces']} faces{' (watertight)' if result['watertight'] else ''}")
    for name, path in result["files"].items():
        print(f"  {name}: {path}")
    return 0
