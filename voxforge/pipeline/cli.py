"""The ``pipeline`` command. Heavy libraries are imported only inside the sub-command that needs them,
so ``pipeline --help`` answers at once."""

from __future__ import annotations

import argparse
import logging
import os
import sys


def _csv(kind):
    def parse(text: str):
        try:
            return [kind(part) for part in text.split(",") if part.strip()]
        except ValueError as error:
            raise argparse.ArgumentTypeError(f"expected comma-separated values: {text!r}") from error
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pipeline", description="Build multi-view 3D datasets from mesh collections.")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="fetch, render, voxelize and write a dataset (resumes when re-run)")
    run.add_argument("source", help="where meshes come from: procedural (built in, offline) or local")
    run.add_argument("--path", help="folder of meshes for the local source (ShapeNetCore layouts recognized)")
    run.add_argument("--category-map", help="JSON/CSV mapping relative path -> category (local source)")
    run.add_argument("--categories", type=_csv(str), help="comma-separated categories (names or synset ids)")
    run.add_argument("--limit", type=int, help="at most this many objects, balanced across categories "
                     "(procedural default: 10 per category)")
    run.add_argument("--views", type=int, default=24, help="rendered views per object (default 24)")
    run.add_argument("--size", type=int, default=127, help="image side in pixels (default 127)")
    run.add_argument("--resolution", type=int, default=32, help="voxel grid resolution (default 32)")
    run.add_argument("--fill", choices=("carve", "carve-dilated", "flood", "none"), default="carve",
                     help="how voxels are made solid (default carve: binvox's space carving; "
                     "carve-dilated: binvox -dc as in 3D-R2N2's ShapeNetVox32)")
    run.add_argument("--voxel-surface", choices=("raster", "exact"), default="raster",
                     help="surface voxels: raster = binvox's default rasterization, as ShapeNet's files "
                     "(default); exact = every voxel a triangle meets (binvox -e)")
    run.add_argument("--wireframe", action="store_true",
                     help="also voxelize triangle edges (binvox -aw, as 3D-R2N2's ShapeNetVox32): thin parts never vanish")
    run.add_argument("--points", type=int, default=16384, help="surface points per object (default 16384)")
    run.add_argument("--even-points", action="store_true",
                     help="evenly spaced points (farthest-point subset), e.g. --points 1024 --even-points")
    run.add_argument("--backgrounds", help="folder of background photos, e.g. VOC2007/JPEGImages")
    run.add_argument("--background-color", type=_csv(int), default=[255, 255, 255],
                     help="plain background R,G,B when no photos are given (default 255,255,255)")
    run.add_argument("--out", help="output folder (default data/<source>)")
    run.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="parallel render workers (default: CPUs)")
    run.add_argument("--seed", type=int, default=0, help="seed for cameras, lights, backgrounds, points")
    run.add_argument("--address", help="Ray cluster address to join (default: start Ray on this machine)")
    run.add_argument("--renderer", default="pyrender", help="renderer backend (default pyrender)")
    run.add_argument("--supersample", type=int, default=2,
                     help="anti-aliasing: render NxN larger and average (default 2; 1 = off, fastest)")
    run.add_argument("--splits", type=_csv(float), default=[0.8, 0.1, 0.1], help="train,val,test ratios")
    run.add_argument("--shard-size", type=int, default=64, help="objects per shard (default 64)")
    run.add_argument("--timeout", type=float, default=300.0, help="seconds one object may take (default 300)")
    run.add_argument("--retry-failed", action="store_true", help="try objects that failed in earlier runs again")
    run.add_argument("--save-depth", action="store_true", help="also store float16 depth maps")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")

    inspect = commands.add_parser("inspect", help="counts, failures and a contact-sheet PNG of a dataset")
    inspect.add_argument("dataset", help="dataset folder")
    inspect.add_argument("--sheet", help="contact sheet path (default DATASET/contact_sheet.png)")
    inspect.add_argument("--samples", type=int, default=8, help="samples on the contact sheet")
    export = commands.add_parser("export", help="write a dataset in another layout (3D-R2N2 / Pix2Vox)")
    export.add_argument("dataset", help="voxforge dataset folder")
    export.add_argument("--layout", choices=("r2n2",), default="r2n2", help="target layout (default r2n2)")
    export.add_argument("--out", required=True, help="output folder")
    export.add_argument("--split", choices=("train", "val", "test"), help="only this split")
    train = commands.add_parser("train", help="train 3D-R2N2 on a voxforge dataset or the 3D-R2N2 layout")
    train.add_argument("--data", required=True, help="voxforge dataset folder or 3D-R2N2 layout folder")
    train.add_argument("--arch", default="res3d-gru-3",
                       help="3d-lstm-1, 3d-gru-1, 3d-lstm-3, 3d-gru-3, res3d-gru-3 (default) or gru-vector")
    train.add_argument("--out", required=True, help="run folder (checkpoint.pt, metrics.csv, config.json)")
    train.add_argument("--iterations", type=int, default=60000)
    train.add_argument("--batch-size", type=int, default=24)
    train.add_argument("--views", default="1-5", help="view count range per batch, MIN-MAX (default 1-5)")
    train.add_argument("--lr", type=float, default=1e-4)
    train.add_argument("--lr-steps", type=_csv(int), default=[20000, 60000], help="iterations where lr x 0.1")
    train.add_argument("--weight-decay", type=float, default=5e-5)
    train.add_argument("--grad-clip", type=float, help="clip the gradient norm")
    train.add_argument("--width", type=float, default=1.0, help="channel multiplier (1.0 = paper size)")
    train.add_argument("--device", help="cuda or cpu (default: cuda when available)")
    train.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--checkpoint-every", type=int, default=2000)
    train.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")

    evaluate = commands.add_parser("eval", help="IoU of a trained run per category and number of views")
    evaluate.add_argument("run", help="run folder written by pipeline train")
    evaluate.add_argument("--data", required=True, help="voxforge dataset folder or 3D-R2N2 layout folder")
    evaluate.add_argument("--split", default="test", help="split to evaluate (default test; 'all' for every object)")
    return parser


def _train(args) -> int:
    from voxforge.models.data import training_batches
    from voxforge.models.train import TrainConfig, train

    low, _, high = args.views.partition("-")
    views = (int(low), int(high or low))
    config = TrainConfig(arch=args.arch, width=args.width, iterations=args.iterations, batch_size=args.batch_size,
                         views=views, lr=args.lr, lr_steps=tuple(args.lr_steps), weight_decay=args.weight_decay,
                         grad_clip=args.grad_clip, seed=args.seed, checkpoint_every=args.checkpoint_every)
    if args.device:
        config.device = args.device
    batches = training_batches(args.data, config.batch_size, views, args.workers, args.seed)
    try:
        result = train(config, batches, args.out, resume=args.resume)
    except KeyboardInterrupt:
        print(f"interrupted: checkpoint in {args.out}; continue with --resume", file=sys.stderr)
        return 130
    print(f"trained {result['iteration']} iterations; last loss {result['losses'][-1]:.4f}; run: {args.out}")
    return 0


def _eval(args) -> int:
    import json

    import torch

    from voxforge.loaders import open_dataset
    from voxforge.models.r2n2 import R2N2
    from voxforge.models.train import evaluate

    state = torch.load(os.path.join(args.run, "checkpoint.pt"), map_location="cpu", weights_only=False)
    config = state["config"]
    model = R2N2(config["arch"], config["width"], config["image_size"])
    model.load_state_dict(state["model"])
    split = None if args.split == "all" else args.split
    device = "cuda" if torch.cuda.is_available() else "cpu"
    report = evaluate(model, open_dataset(args.data, split), device=device, crop=config["image_size"])
    if not report["objects"]:
        print(f"error: no objects in split {args.split!r} of {args.data}", file=sys.stderr)
        return 2
    report.update(run=args.run, data=args.data, split=args.split, iteration=state["iteration"])
    with open(os.path.join(args.run, "eval.json"), "w") as handle:
        json.dump(report, handle, indent=2)
    print(f"{report['objects']} objects, {args.split} split, 5 views; IoU at threshold 0.3 / 0.4 / 0.5")
    rows = [("mean", report["mean_iou"])] + sorted(report["per_category"].items())
    rows += [(f"{n} view(s)", v) for n, v in sorted(report["per_views"].items())]
    for name, values in rows:
        print(f"  {name:<16} " + " / ".join(f"{values[t]:.3f}" for t in ("0.3", "0.4", "0.5")))
    print(f"written: {os.path.join(args.run, 'eval.json')}")
    return 0


def _export(args) -> int:
    from voxforge.loaders import open_dataset
    from voxforge.loaders.dataset import plain_background_of
    from voxforge.loaders.r2n2 import export_r2n2

    try:
        written = export_r2n2(open_dataset(args.dataset, args.split), args.out, plain_background_of(args.dataset))
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"exported {sum(written.values())} objects ({', '.join(f'{k} {v}' for k, v in sorted(written.items()))}) "
          f"to {args.out} in the 3D-R2N2 layout")
    return 0


def _run(args) -> int:
    from voxforge.pipeline.config import RunConfig
    from voxforge.pipeline.run import RunError, run
    from voxforge.pipeline.sources import SourceError

    limit = args.limit
    if limit is None and args.source == "procedural":
        limit = 10 * len(args.categories or range(6))
    config = RunConfig(
        source=args.source, path=args.path, category_map=args.category_map, categories=args.categories,
        limit=limit, views=args.views, size=args.size, resolution=args.resolution, fill=args.fill,
        voxel_surface=args.voxel_surface, wireframe=args.wireframe,
        points=args.points, even_points=args.even_points, backgrounds=args.backgrounds, background_color=tuple(args.background_color),
        out=args.out or os.path.join("data", args.source), workers=args.workers, seed=args.seed,
        address=args.address, renderer=args.renderer, supersample=args.supersample, split_ratios=tuple(args.splits),
        shard_size=args.shard_size, timeout=args.timeout, retry_failed=args.retry_failed,
        save_depth=args.save_depth, progress=not args.no_progress,
    )
    try:
        summary = run(config)
    except (SourceError, RunError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished samples are saved; run the same command again to resume", file=sys.stderr)
        return 130
    print(summary.report())
    return 0


def _inspect(args) -> int:
    from voxforge.pipeline.inspection import contact_sheet, summarize

    try:
        print(summarize(args.dataset))
        sheet = contact_sheet(args.dataset, args.sheet or os.path.join(args.dataset, "contact_sheet.png"), args.samples)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"contact sheet: {sheet}")
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    commands = {"run": _run, "inspect": _inspect, "export": _export, "train": _train, "eval": _eval}
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
