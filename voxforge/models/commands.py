"""Options of ``pipeline train`` / ``eval`` / ``predict`` shared by the model families, and training on Ray for any
of them; each family's own commands are in its package (``voxforge.models.r2n2.commands``, ...)."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def add_train_options(parser) -> None:
    """Options of ``pipeline train`` beyond those the CLI declares itself: engine settings every family takes
    (``--amp``, ``--compile``, ``--log-every``, ``--threads``, Ray Train) and 3D-R2N2's own."""
    parser.add_argument("--warmup", type=int, default=0, help="iterations of linear lr warm-up (default 0)")
    parser.add_argument("--foreground-weight", type=float, default=1.0,
                        help="loss weight of occupied voxels (default 1 = the paper's cross-entropy)")
    parser.add_argument("--batch-norm", action="store_true",
                        help="batch normalization after each convolution (not in the paper; learns much faster)")
    parser.add_argument("--image-size", type=int,
                        help="network input side; views are resized to it (default: 3D-R2N2 127, e.g. 64 for CPU "
                        "runs; reconstnet 128 (a crop); softras 64)")
    parser.add_argument("--amp", choices=("none", "bf16", "fp16"),
                        help="mixed precision autocast: bf16 (CUDA or CPU) or fp16 (CUDA, loss-scaled)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (first steps compile)")
    parser.add_argument("--log-every", type=int, help="iterations per metrics line (default 50)")
    parser.add_argument("--ray-workers", type=int, default=0,
                        help="train in N Ray Train workers with DDP (with --address, or alone for a local Ray)")
    parser.add_argument("--address", help="Ray cluster to train on (auto, ray://HOST:10001, HOST:6379)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--threads", type=int, default=0, metavar="N",
                        help="torch threads of the training process (default 0: the CPUs this process may use, "
                        "after affinity and cgroup quota, less one per --workers; OMP_NUM_THREADS when set; "
                        "-1: torch's own default)")


def train_on_ray(args, config) -> int:
    """``pipeline train --ray-workers N [--address ...]`` for any model family (``config.arch``)."""
    from voxforge.models.ray_train import train_with_ray
    from voxforge.models.stopping import report_stop

    metrics = train_with_ray(config, args.data, args.out, args.address, max(1, args.ray_workers or 1), args.workers,
                             resume=args.resume, progress=not args.no_progress)
    if metrics.get("stopped"):
        return report_stop(metrics["stopped"], args.out)
    nan = float("nan")
    print(f"trained {metrics.get('iteration')} iterations on {args.ray_workers or 1} Ray workers; loss, mean of "
          f"{metrics.get('loss_window', 0)} iterations: {metrics.get('loss_first', nan):.4f} -> "
          f"{metrics.get('loss_last', nan):.4f}; run: {args.out}")
    return 0


def start_and_end(values: list[float], log_every: int | None) -> tuple[int, float, float]:
    """(window, mean of the first ``window`` values, mean of the last ``window``) of a per-iteration series:
    what a training command prints, the same windowed means as ``metrics.csv`` and the progress bar
    (``window`` is the logging interval, at most half the run)."""
    import numpy as np  # here: the CLI builds its parser from this module, and help must stay instant

    from voxforge.models.engine import EngineConfig

    if not values:
        return 0, float("nan"), float("nan")
    window = max(1, min(log_every or EngineConfig.log_every, len(values) // 2))
    return window, float(np.mean(values[:window])), float(np.mean(values[-window:]))


def run_prediction(args, predict, describe) -> int:
    """``pipeline predict`` for any family: ``predict(run, images, out)`` writes into ``--out`` (default
    ``RUN/predict``) and returns a dict with ``files`` (name -> path); ``describe(result)`` is the summary
    line. A missing run or image, or an image the family cannot take, is one line and exit status 2."""
    import os

    out = args.out or os.path.join(args.run, "predict")
    try:
        result = predict(args.run, args.images, out)
    except (FileNotFoundError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(describe(result))
    for name, path in result["files"].items():
        print(f"  {name}: {path}")
    return 0


def report_training(result: dict, args, series: str, label: str, digits: int = 4) -> None:
    """Print a finished training run's line (rank 0 only): speed, and ``label`` (the ``series`` of the
    engine's history) averaged over the first and the last logging window (:func:`start_and_end`)."""
    if result["rank"] != 0:
        return
    window, first, last = start_and_end(result["history"][series], args.log_every)
    ranks = f", {result['world_size']} ranks" if result["world_size"] > 1 else ""
    print(f"trained {result['iteration']} iterations ({result['iterations_per_second']:.2f} it/s, "
          f"{result['images_per_second']:.1f} images/s, data wait {result['data_wait_share']:.0%}{ranks}); "
          f"{label}, mean of {window} iterations: {first:.{digits}f} -> {last:.{digits}f}; run: {args.out}")


def run_training(args, arch: str, config=None):
    """What ``pipeline train`` does for every family: Ray Train when ``--ray-workers`` or ``--address`` ask for
    it, else the family's batches and trainer in this process (:mod:`voxforge.models.families`). ``config``:
    the family's configuration, by default made from the command line (:func:`config_from_args`).

    Returns the trainer's result dict when this process trained and has something to say, else the exit
    status: 0 when the run in ``--out`` was already complete (said on stdout), 2 for a mistake the user can
    fix (one line on stderr), 130 after Ctrl-C, or the stop's status (:func:`report_stop`).
    """
    from voxforge.models.engine import config_from_args
    from voxforge.models.families import family_trainer
    from voxforge.models.stopping import report_stop

    config_class, make_batches, train = family_trainer(arch)
    config = config if config is not None else config_from_args(config_class, args)
    try:
        if args.ray_workers or args.address:
            return train_on_ray(args, config)
        result = train(config, make_batches(args.data, config, args.workers), args.out, resume=args.resume,
                       progress=not args.no_progress)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted: checkpoint in {args.out}; continue with --resume", file=sys.stderr)
        return 130
    if result["stopped"]:  # every rank exits with the same status; rank 0 says why
        return report_stop(result["stopped"], args.out, quiet=result["rank"] != 0)
    if not result["losses"]:
        if result["rank"] == 0:
            print(f"nothing to do: {args.out} is already at iteration {result['iteration']}")
        return 0
    return result


def run_evaluation(args, evaluate):
    """``evaluate()`` (which returns a family's evaluation report) as ``pipeline eval`` runs it for every
    family: the report, or exit status 2 after one line on stderr for a missing or unreadable input or a
    split without objects."""
    try:
        report = evaluate()
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not report["objects"]:
        print(f"error: no objects in split {args.split!r} of {args.data}", file=sys.stderr)
        return 2
    return report


def write_report(run: str | Path, report: dict, rows: list[dict], **gallery_options) -> None:
    """``RUN/eval.json`` (replaced atomically) and, when there are gallery rows, ``RUN/gallery.png``."""
    from voxforge.models.gallery import gallery

    path = Path(run) / "eval.json"
    temporary = path.with_name("eval.json.partial")
    temporary.write_text(json.dumps(report, indent=2))
    temporary.replace(path)
    print(f"written: {path}")
    if rows:
        print(f"gallery: {gallery(rows, Path(run) / 'gallery.png', **gallery_options)}")


def add_eval_options(parser) -> None:
    parser.add_argument("--baselines", help="Pix2Vox-style ShapeNet.json with the published 3D-R2N2 figures "
                        "(default: DATA/ShapeNet.json when there is one)")
    parser.add_argument("--gallery", type=int, default=8,
                        help="objects in RUN/gallery.png: views, prediction, ground truth (default 8; 0 = none)")
    parser.add_argument("--device", help="cuda or cpu (default: cuda when available)")


def add_predict_parser(commands) -> None:
    predict = commands.add_parser("predict", help="reconstruct with a trained run: voxels (binvox) and a mesh from a "
                                  "few views (3D-R2N2), one point cloud (PLY, NPY) per image (reconstnet), or one "
                                  "mesh (OBJ) per RGBA image (softras)")
    predict.add_argument("run", help="run folder written by pipeline train")
    predict.add_argument("images", nargs="+", help="3D-R2N2: views of one object (PNG/JPEG; RGBA goes over grey 240); "
                         "reconstnet: images (as for 3D-R2N2), one cloud each; softras: RGBA images, the object's "
                         "mask in alpha, one mesh each")
    predict.add_argument("--out", help="output folder (default RUN/predict)")
    predict.add_argument("--threshold", type=float, default=0.4, help="3D-R2N2: occupancy threshold (default 0.4)")
    predict.add_argument("--device", help="cuda or cpu (default: cuda when available)")
