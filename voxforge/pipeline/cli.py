"""The ``pipeline`` command. Heavy libraries are imported only inside the sub-command that needs them,
so ``pipeline --help`` answers at once."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

TORCH_COMMANDS = ("train", "eval", "predict")  # the rest runs without PyTorch (the train extra)


def _csv(kind):
    def parse(text: str):
        try:
            return [kind(part) for part in text.split(",") if part.strip()]
        except ValueError as error:
            raise argparse.ArgumentTypeError(f"expected comma-separated values: {text!r}") from error
    return parse


def _version() -> str:
    from voxforge import __version__

    return __version__


class _Parser(argparse.ArgumentParser):
    """argparse with a two-line answer to a mistyped command line: the error and where the options are
    listed (argparse's default prints the whole usage, 30+ lines for ``run``, above the one line that matters)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n(`{self.prog} --help` lists every option)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pipeline", description="Build multi-view 3D datasets from mesh collections.")
    parser.add_argument("--version", action="version", version=f"%(prog)s (voxforge) {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="fetch, render, voxelize and write a dataset (resumes when re-run)")
    run.add_argument("source", help="where meshes come from: procedural (built in, offline), local, shapenet, "
                     "objaverse or objaverse-xl")
    run.add_argument("--path", help="folder of meshes for the local source (ShapeNetCore layouts recognized); for "
                     "shapenet, a ShapeNetCore folder or per-synset zips (default: the Hub)")
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
    run.add_argument("--out", help="output folder or URL: a local path, s3://bucket/path, gs://..., az://... "
                     "(object stores need the s3, gcs or azure extra; default data/<source>)")
    run.add_argument("--workers", type=int, help="parallel render workers (default: this machine's CPUs; with "
                     "--address, every CPU of the cluster)")
    run.add_argument("--seed", type=int, default=0, help="seed for cameras, lights, backgrounds, points")
    run.add_argument("--address", help="Ray cluster address to join (default: start Ray on this machine)")
    run.add_argument("--renderer", default="pyrender", help="renderer backend: pyrender (default), blender (Cycles), "
                     "blender-workbench, blender-eevee (the blender extra)")
    run.add_argument("--supersample", type=int, default=2,
                     help="anti-aliasing: render NxN larger and average (default 2; 1 = off, fastest)")
    run.add_argument("--cycles-samples", type=int, default=4,
                     help="--renderer blender (Cycles): light samples per rendered pixel, x supersample^2 per output "
                     "pixel (default 4, so 16; more is less noisy and slower)")
    run.add_argument("--denoise", action="store_true", help="--renderer blender (Cycles): run OpenImageDenoise on "
                     "every view (about 10x slower on a CPU and blurs texture; off by default)")
    run.add_argument("--splits", type=_csv(float), default=[0.8, 0.1, 0.1], help="train,val,test ratios")
    run.add_argument("--shard-size", type=int, default=64, help="objects per shard, at most (default 64)")
    run.add_argument("--min-shards", type=int, default=8, help="fewer objects per shard where a split would "
                     "otherwise have fewer than this many shards, so training readers (ranks x loader workers) "
                     "each get their own (default 8)")
    run.add_argument("--timeout", type=float, default=300.0, help="seconds one object may take (default 300)")
    run.add_argument("--recycle-after", type=int, help="replace a worker after N objects (default: the renderer's, "
                     "200 for blender, never for pyrender; 0 = never)")
    run.add_argument("--worker-memory-gb", type=float, help="replace a worker above this resident memory between "
                     "objects (default: the renderer's, 4 for blender; 0 = never)")
    run.add_argument("--object-memory-gb", type=float, default=16.0,
                     help="hard cap on a worker's private memory while it makes an object (the kernel's "
                     "RLIMIT_DATA): an object needing more is failed, the run goes on (default 16; 0 = no cap)")
    run.add_argument("--max-triangles", type=int, default=10_000_000,
                     help="fail, before reading its data, a file that declares more triangles than this (after "
                     "polygons are split and instances placed; default 10000000; 0 = no limit)")
    run.add_argument("--max-texture-pixels", type=int, default=8192 * 8192,
                     help="leave out (with a warning) a texture image whose width x height, read from its header "
                     "before decoding, is above this (default 67108864 = 8192x8192; 0 = no limit)")
    run.add_argument("--retry-failed", action="store_true", help="try objects that failed in earlier runs again")
    run.add_argument("--save-depth", action="store_true", help="also store float16 depth maps")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    setup = run.add_argument_group("published setups and cameras (explicit options override a preset)")
    setup.add_argument("--preset", choices=("r2n2", "softras", "pointcloud"),
                       help="r2n2: 3D-R2N2's 137 px RGBA renders + ShapeNetVox32-style voxels; softras: SoftRas/NMR "
                       "64 px, 24 views 15 deg apart; pointcloud: r2n2 + 16384 points (first 1024 farthest-point)")
    setup.add_argument("--camera-layout", choices=("random", "orbit"), default="random",
                       help="random: angles uniform in their ranges (default); orbit: azimuths evenly spaced")
    setup.add_argument("--azimuth", type=_csv(float), default=[0.0, 360.0], help="MIN,MAX degrees (default 0,360)")
    setup.add_argument("--elevation", type=_csv(float), default=[25.0, 30.0], help="MIN,MAX degrees (default 25,30)")
    setup.add_argument("--distance", type=_csv(float), default=[0.65 * 1.75, 0.95 * 1.75],
                       help="MIN,MAX camera distance, unit = bbox diagonal (default 1.1375,1.6625)")
    setup.add_argument("--focal", type=float, default=2.1875, help="focal length in half-image units (default 2.1875)")
    setup.add_argument("--keep-in-frame", action=argparse.BooleanOptionalAction, default=True,
                       help="raise a camera distance where the object would leave the image (default on)")
    setup.add_argument("--voxel-samples", type=int, help="sample lines per voxel edge (binvox: 1; default 128 across)")
    setup.add_argument("--voxel-extent", type=float, help="fixed voxel cube edge centred at the origin "
                       "(default: the object's bounding cube)")
    setup.add_argument("--fps-prefix", type=int, default=0, help="reorder points so the first N are a "
                       "farthest-point subset (e.g. 1024 of 16384)")
    remote = run.add_argument_group("download sources (shapenet, objaverse, objaverse-xl)")
    remote.add_argument("--cache", help="download cache shared by runs (default $VOXFORGE_CACHE or ~/.cache/voxforge)")
    remote.add_argument("--keep-meshes", action="store_true", help="keep downloaded meshes (default: evicted once "
                        "their samples are written)")
    remote.add_argument("--licenses", type=_csv(str), help="keep only these licences, e.g. by,by-sa,cc0 "
                        "('commercial' = those allowing commercial use)")
    remote.add_argument("--split", choices=("hash", "r2n2"), default="hash", help="hash: --splits ratios (default); "
                        "r2n2: 3D-R2N2's train/val/test (shapenet; Pix2Vox's ShapeNet.json, fetched once)")
    remote.add_argument("--split-file", help="a local copy of Pix2Vox's ShapeNet.json holding 3D-R2N2's split")
    remote.add_argument("--objaverse-xl-sources", type=_csv(str),
                        help="objaverse-xl sources: sketchfab,smithsonian,thingiverse,github (default all)")
    remote.add_argument("--file-types", type=_csv(str), help="objaverse-xl file types (default glb,gltf,obj,stl,ply,off)")
    remote.add_argument("--match-keywords", action="store_true", help="objaverse-xl: also pick objects without LVIS "
                        "labels whose file name or metadata has the category's words")
    remote.add_argument("--downloads", type=int, default=4, help="parallel downloads (default 4)")
    remote.add_argument("--download-timeout", type=float, default=60.0, help="seconds without data before a "
                        "download is retried (default 60)")
    remote.add_argument("--download-retries", type=int, default=4, help="retries per download (default 4)")
    remote.add_argument("--download-backoff", type=float, default=1.0, help="first retry wait in seconds, doubling "
                        "(default 1)")
    remote.add_argument("--mirror", action="append", default=[], metavar="PREFIX=URL",
                        help="fetch URLs starting with PREFIX from URL instead (repeatable; the Hub uses HF_ENDPOINT)")

    inspect = commands.add_parser("inspect", help="counts, failures and a contact-sheet PNG of a dataset")
    inspect.add_argument("dataset", help="dataset folder or URL (s3://..., gs://..., hf://datasets/...)")
    inspect.add_argument("--sheet", help="contact sheet path (default DATASET/contact_sheet.png; for a URL, "
                         "NAME-contact_sheet.png here)")
    inspect.add_argument("--samples", type=int, default=8, help="samples on the contact sheet")
    export = commands.add_parser("export", help="write a dataset in another layout (3D-R2N2 / Pix2Vox, SoftRas, "
                                 "Parquet)")
    export.add_argument("dataset", help="voxforge dataset folder or URL")
    export.add_argument("--layout", choices=("r2n2", "parquet", "softras"), default="r2n2",
                        help="r2n2: the 3D-R2N2 folders (default); parquet: one row per object; softras: SoftRas/NMR "
                        "<synset>_<split>_{images,voxels}.npz (a dataset made with --preset softras)")
    export.add_argument("--out", required=True, help="output folder (new or empty, unless --overwrite)")
    export.add_argument("--overwrite", action="store_true",
                        help="write into an --out that already holds files (files of the same names are replaced)")
    export.add_argument("--split", choices=("train", "val", "test"), help="only this split")
    publish = commands.add_parser("publish", help="verify a dataset and publish it to a folder, a .tar/.zip bundle "
                                  "or a Hugging Face dataset repo, with a dataset card")
    publish.add_argument("dataset", help="voxforge dataset folder or URL (s3://..., gs://...)")
    publish.add_argument("--to", required=True, help="a new folder, a bundle (.tar or .zip), or hf://datasets/OWNER/NAME")
    visibility = publish.add_mutually_exclusive_group()
    visibility.add_argument("--private", dest="private", action="store_true", default=True,
                            help="create the Hub repo private (the default)")
    visibility.add_argument("--public", dest="private", action="store_false", help="create the Hub repo public")
    publish.add_argument("--files-per-commit", type=int, default=100,
                         help="Hub uploads: files per commit (default 100; a re-run resumes after the last commit)")
    publish.add_argument("--no-parquet", dest="parquet", action="store_false",
                         help="publish the shards without the Parquet copy (data/) that lets every datasets from 2.14 "
                         "load the result; the card then needs datasets >= 4.7 (saves about the shards' size)")
    publish.add_argument("--no-progress", action="store_true", help="no progress bar")
    train = commands.add_parser(
        "train", help="train a model (3D-R2N2, reconstnet, softras) on a voxforge dataset or the 3D-R2N2 layout",
        epilog="Stopping: SIGTERM, SIGINT (Ctrl-C) and SIGUSR1 (e.g. SLURM's --signal warning) end the run at the "
        "next iteration boundary, as --time-limit does, with a checkpoint in OUT/checkpoint.pt (model, optimizer, "
        "schedule, RNG states, iteration and data position): the same command with --resume continues exactly. A "
        "second Ctrl-C stops at once. Exit status: 0 when finished or stopped by SIGUSR1 or --time-limit; 143 "
        "after SIGTERM and 130 after SIGINT (128 + the signal's number); 2 for a usage error, such as an OUT that "
        "holds files without --resume or --overwrite.")
    train.add_argument("--data", required=True, help="voxforge dataset folder or URL (s3://..., hf://datasets/...) "
                       "or 3D-R2N2 layout folder")
    train.add_argument("--arch", default="res3d-gru-3",
                       help="3d-lstm-1, 3d-gru-1, 3d-lstm-3, 3d-gru-3, res3d-gru-3 (default) or gru-vector; "
                       "reconstnet: the single-view point-cloud network (needs a dataset with points); softras: "
                       "meshes learned from silhouettes (needs a voxforge dataset, e.g. --preset softras)")
    train.add_argument("--out", required=True, help="run folder (checkpoint.pt, metrics.csv, config.json); one "
                       "that holds files needs --resume or --overwrite")
    train.add_argument("--iterations", type=int, help="default: the model's (60000; softras 250000)")
    train.add_argument("--batch-size", type=int, help="default: the model's (3D-R2N2 24, reconstnet 32, softras 64)")
    train.add_argument("--views", default="1-5", help="view count range per batch, MIN-MAX (default 1-5)")
    train.add_argument("--lr", type=float, help="Adam learning rate (default 1e-4)")
    train.add_argument("--lr-steps", type=_csv(int), help="iterations where lr x 0.1 (default: 3D-R2N2 20000,60000; "
                       "the others none)")
    train.add_argument("--weight-decay", type=float, help="on weights, not biases (default: 3D-R2N2 5e-5, the others 0)")
    train.add_argument("--grad-clip", type=float, help="clip the gradient norm")
    train.add_argument("--width", type=float, default=1.0, help="channel multiplier (1.0 = paper size)")
    train.add_argument("--device", help="cuda or cpu (default: cuda when available)")
    train.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--checkpoint-every", type=int, default=2000, metavar="N",
                       help="checkpoint every N iterations (default 2000)")
    train.add_argument("--checkpoint-minutes", type=float, default=10.0, metavar="MINUTES",
                       help="also checkpoint every MINUTES of wall-clock time (default 10; 0 = iterations only)")
    train.add_argument("--time-limit", type=float, metavar="MINUTES",
                       help="stop with a checkpoint once MINUTES of wall-clock time have passed (checked every "
                       "iteration; exit status 0; continue with --resume)")
    again = train.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue the run in OUT from OUT/checkpoint.pt")
    again.add_argument("--overwrite", action="store_true",
                       help="delete the run in OUT first (checkpoint, config.json, metrics.csv, TensorBoard events, "
                       "eval.json, gallery.png, predictions; other files are kept), then train from scratch")
    train.add_argument("--points", type=int, default=1024, help="reconstnet: points predicted (default 1024)")
    train.add_argument("--frame", choices=("object", "view"), default="object",
                       help="reconstnet: target frame, object (3D-ReConstNet) or the input camera's (PSGN)")
    train.add_argument("--emd-weight", type=float, default=1.0, help="reconstnet: weight of the approximate EMD")
    train.add_argument("--kl-weight", type=float, default=1e-3, help="reconstnet: weight of the latent's KL term")
    train.add_argument("--encoder", choices=("plain", "residual"), default="plain",
                       help="softras: image encoder, SoftRas's three 5x5 convolutions (plain) or residual blocks")
    train.add_argument("--sigma", type=float, default=1e-4,
                       help="softras: silhouette sharpness in squared NDC units (default 1e-4, SoftRas's at 64 px)")
    train.add_argument("--laplacian-weight", type=float, default=5e-3, help="softras: Laplacian term weight")
    train.add_argument("--flatten-weight", type=float, default=5e-4, help="softras: flatten term weight")
    from voxforge.models.commands import add_eval_options, add_predict_parser, add_train_options

    add_train_options(train)

    evaluate = commands.add_parser("eval", help="score a trained run per category: voxel IoU (3D-R2N2, softras) or "
                                   "Chamfer and F-scores (reconstnet)")
    evaluate.add_argument("run", help="run folder written by pipeline train")
    evaluate.add_argument("--data", required=True, help="voxforge dataset folder or URL, or 3D-R2N2 layout folder")
    evaluate.add_argument("--split", default="test", help="split to evaluate (default test; 'all' for every object)")
    evaluate.add_argument("--convention", default="lmnet,psgn,plain",
                          help="reconstnet: named metric conventions, comma-separated (lmnet, psgn, plain)")
    evaluate.add_argument("--views", type=int, help="reconstnet and softras: evaluate the first N views of each object "
                          "(default all); "
                          "3D-R2N2 runs: IoU with 1..N views (default 5)")
    evaluate.add_argument("--emd", action="store_true", help="reconstnet: also report an approximate EMD (slow on CPU)")
    add_eval_options(evaluate)
    add_predict_parser(commands)
    return parser


def _input_problem(option: str, path: str, folder: bool = True) -> str:
    """Why a local input path cannot be used ("" when it can, and for URLs, which their readers check)."""
    from voxforge.storage import is_url

    if is_url(path):
        return ""
    if not os.path.exists(path):
        return f"{option} {path}: no such {'folder' if folder else 'file'}"
    if folder and not os.path.isdir(path):
        return f"{option} {path}: not a folder"
    return ""


def _user_errors(command):
    """Run ``command(args)``; a missing or unreadable input it meets is one line, not a traceback."""
    def run_command(args) -> int:
        try:
            return command(args)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    return run_command


def family_commands(arch: str):
    from voxforge.models.families import family_commands

    return family_commands(arch)


def _train(args) -> int:
    from voxforge.models.r2n2.network import VARIANTS
    from voxforge.models.stopping import RunFolderError, prepare_run_dir

    problem = _input_problem("--data", args.data)
    if args.arch not in (*VARIANTS, "reconstnet", "softras"):
        problem = f"unknown --arch {args.arch!r}; choose one of {', '.join(VARIANTS)}, reconstnet or softras"
    if problem:  # before the run folder is touched (--overwrite deletes in it)
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 alone looks at (and clears) the run folder
        try:
            deleted, kept = prepare_run_dir(args.out, resume=args.resume, overwrite=args.overwrite)
        except RunFolderError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        if deleted:
            print(f"--overwrite: deleted {', '.join(deleted)} from {args.out}"
                  + (f" (kept: {', '.join(kept)})" if kept else ""), file=sys.stderr)
        if args.resume and os.path.isdir(args.out) and os.listdir(args.out) \
                and not os.path.exists(os.path.join(args.out, "checkpoint.pt")):
            print(f"--resume: {args.out} holds no checkpoint.pt; training starts at iteration 0", file=sys.stderr)
    return family_commands(args.arch).train_command(args)


def _eval(args) -> int:
    from voxforge.models.engine import run_arch

    problem = _input_problem("run", args.run) or _input_problem("--data", args.data)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    return family_commands(run_arch(args.run)).eval_command(args)


def _predict(args) -> int:
    from voxforge.models.engine import run_arch

    return family_commands(run_arch(args.run)).predict_command(args)


def _publish(args) -> int:
    from voxforge.pipeline.publish import PublishError, publish

    try:
        summary = publish(args.dataset, args.to, private=args.private, progress=not args.no_progress,
                          files_per_commit=args.files_per_commit, parquet=args.parquet)
    except PublishError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    split_counts = ", ".join(f"{split} {count}" for split, count in summary["per_split"].items() if count)
    print(f"verified {summary['objects']} objects ({split_counts}) in {summary['shards']} shards")
    if "url" in summary:
        print(f"uploaded {summary['uploaded']} files in {summary['commits']} commits "
              f"({summary['unchanged']} already there): {summary['url']}")
    else:
        print(f"published {summary['files']} files to {summary['to']}")
    return 0


def _export(args) -> int:
    from voxforge.loaders import open_dataset
    from voxforge.loaders.dataset import plain_background_of

    def parquet():
        from voxforge.loaders.parquet import export_parquet

        return export_parquet(args.dataset, args.out, args.split)

    def softras():
        from voxforge.loaders.softras import export_softras

        return export_softras(open_dataset(args.dataset, args.split), args.out, plain_background_of(args.dataset),
                              splits=(args.split,) if args.split else ("train", "val", "test"))

    def r2n2():
        from voxforge.loaders.r2n2 import export_r2n2

        return dict(sorted(export_r2n2(open_dataset(args.dataset, args.split), args.out,
                                       plain_background_of(args.dataset)).items()))

    exporters = {"parquet": (parquet, f"to {os.path.join(args.out, 'data')} as Parquet, one row per object"),
                 "softras": (softras, f"to {args.out} in the SoftRas layout"),
                 "r2n2": (r2n2, f"to {args.out} in the 3D-R2N2 layout")}
    export, where = exporters[args.layout]
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        print(f"error: --out {out} is a file, not a folder", file=sys.stderr)
        return 2
    if out.is_dir() and any(out.iterdir()) and not args.overwrite:
        print(f"error: --out {out} already holds files; choose a new folder, or add --overwrite to write into it",
              file=sys.stderr)
        return 2
    try:
        counts = export()
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"exported {sum(counts.values())} objects ({', '.join(f'{k} {v}' for k, v in counts.items())}) {where}")
    return 0


def _download_options(args) -> dict:
    mirrors = {}
    for item in args.mirror:
        prefix, sep, url = item.partition("=")
        if not sep or not prefix or not url:
            print(f"error: --mirror expects PREFIX=URL, got {item!r}", file=sys.stderr)
            raise SystemExit(2)
        mirrors[prefix] = url
    return dict(cache=args.cache, keep_meshes=args.keep_meshes, licenses=args.licenses, split_mode=args.split,
                split_file=args.split_file, xl_sources=args.objaverse_xl_sources, file_types=args.file_types,
                match_keywords=args.match_keywords, downloads=args.downloads, download_timeout=args.download_timeout,
                download_retries=args.download_retries, download_backoff=args.download_backoff, mirrors=mirrors)


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
        out=args.out or os.path.join("data", args.source), workers=args.workers if args.workers is not None else (0 if args.address else os.cpu_count() or 1),
        seed=args.seed,
        address=args.address, renderer=args.renderer, supersample=args.supersample, split_ratios=tuple(args.splits),
        cycles_samples=args.cycles_samples, denoise=args.denoise,
        shard_size=args.shard_size, min_shards=args.min_shards, timeout=args.timeout, retry_failed=args.retry_failed,
        recycle_after=args.recycle_after, worker_memory_gb=args.worker_memory_gb,
        object_memory_gb=args.object_memory_gb, max_triangles=args.max_triangles,
        max_texture_pixels=args.max_texture_pixels,
        save_depth=args.save_depth, progress=not args.no_progress, **_download_options(args),
        camera_layout=args.camera_layout, azimuth=tuple(args.azimuth), elevation=tuple(args.elevation),
        distance=tuple(args.distance), focal=args.focal, keep_in_frame=args.keep_in_frame,
        voxel_samples=args.voxel_samples, voxel_extent=args.voxel_extent, fps_prefix=args.fps_prefix,
    )
    if args.preset:
        from voxforge.pipeline.presets import apply_preset, explicit_run_options

        config = apply_preset(config, args.preset, explicit_run_options(build_parser(), args.argv))
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

    from voxforge.storage import is_url

    default_sheet = os.path.join(args.dataset, "contact_sheet.png") if not is_url(args.dataset) else \
        f"{args.dataset.rstrip('/').rsplit('/', 1)[-1]}-contact_sheet.png"  # a remote dataset is not written to
    if not is_url(args.dataset) and not os.path.isfile(os.path.join(args.dataset, "dataset.json")):
        what = "no such folder" if not os.path.exists(args.dataset) else "not a voxforge dataset (no dataset.json)"
        print(f"error: {args.dataset}: {what}", file=sys.stderr)
        return 2
    try:
        print(summarize(args.dataset))
        sheet = contact_sheet(args.dataset, args.sheet or default_sheet, args.samples)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"contact sheet: {sheet}")
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)  # presets yield to the options actually given
    commands = {"run": _run, "inspect": _inspect, "export": _export, "train": _train, "eval": _eval, "predict": _predict,
                "publish": _publish}
    if args.command in TORCH_COMMANDS:
        try:
            import torch  # noqa: F401 (the command imports it anyway; a failed import is the answer)
        except ImportError:
            print(f"error: pipeline {args.command} needs PyTorch, which is not installed in this environment; "
                  f"install the train extra, from the voxforge folder: {sys.executable} -m pip install -e '.[train]'",
                  file=sys.stderr)
            return 2
    return _user_errors(commands[args.command])(args)


if __name__ == "__main__":
    sys.exit(main())
