"""Training and evaluating the point-cloud network (:class:`voxforge.models.pointcloud.ReconstNet`).

One random view per object and step (backgrounds re-composited to a random light colour, as the
3D-R2N2 trainer does), cropped to ``image_size`` (3D-LMNet / 3D-ReConstNet crop 3D-R2N2's 137 px
renders to 128); the target is the object's first ``points`` stored points (the farthest-point
subset with ``--preset pointcloud``) or a random subset of that size. Loss: Chamfer distance (squared,
means summed, as PSGN) + ``emd_weight`` x approximate EMD (Sinkhorn) + ``kl_weight`` x the latent's KL
divergence to N(0, I). The optimizer, schedule, checkpoints (exact ``--resume``) and ``metrics.csv``
are the 3D-R2N2 trainer's (:mod:`voxforge.models.train`), and so are the stops with a checkpoint on a
signal or a time limit (:mod:`voxforge.models.stopping`).

``frame="view"`` trains on targets rotated into the input camera's frame (PSGN's view-centred
setting); evaluation rotates the ground truth the same way.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from voxforge.models.data import EpochBatches, crop_views
from voxforge.models.pointcloud import ReconstNet, kl_divergence
from voxforge.models.pointcloud_losses import chamfer_distance, sinkhorn_emd
from voxforge.models.pointcloud_metrics import CONVENTIONS, evaluate_cloud
from voxforge.models.stopping import STOP_SIGNALS, Stopper, report_stop
from voxforge.models.threads import training_threads, worker_init
from voxforge.models.train import make_optimizer, open_metrics, restore_checkpoint, resumed_stream, save_checkpoint

log = logging.getLogger(__name__)

ARCH = "reconstnet"
FRAMES = ("object", "view")


@dataclass
class ReconstNetConfig:
    arch: str = ARCH
    width: float = 1.0  # channel multiplier of the ResNet-50 encoder (1.0 = the real one)
    points: int = 1024
    latent: int = 100
    image_size: int = 128  # input crop (3D-LMNet / 3D-ReConstNet: 137 px renders cropped to 128)
    frame: str = "object"  # target frame: object (3D-LMNet, 3D-ReConstNet) or view (PSGN)
    iterations: int = 60000
    batch_size: int = 32
    lr: float = 1e-4
    lr_steps: tuple[int, ...] = ()
    warmup: int = 0
    weight_decay: float = 0.0
    grad_clip: float | None = None
    chamfer_squared: bool = True
    emd_weight: float = 1.0
    emd_epsilon: float = 0.01  # Sinkhorn's final blur (distance units); coarse is enough for a gradient
    emd_iterations: int = 5
    kl_weight: float = 1e-3
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    seed: int = 0
    checkpoint_every: int = 2000  # iterations between checkpoints
    checkpoint_minutes: float = 10.0  # wall-clock minutes between checkpoints too (0: none)
    time_limit: float | None = None  # wall-clock minutes, then stop with a checkpoint (None: no limit)
    log_every: int = 50
    threads: int = 0  # torch intra-op threads: 0 = sized to the usable CPUs (voxforge.models.threads), -1 = torch's


def build_model(config: ReconstNetConfig) -> ReconstNet:
    return ReconstNet(points=config.points, width=config.width, latent=config.latent)


def select_points(points: torch.Tensor, count: int, fps_prefix: int, generator: torch.Generator) -> torch.Tensor:
    """(B, P, 3) -> (B, count, 3): the stored farthest-point prefix when it is long enough, else a random subset."""
    stored = points.shape[1]
    if count <= fps_prefix or count == stored:
        return points[:, :count]
    if count > stored:
        raise ValueError(f"the dataset holds {stored} points per object; the model predicts {count}")
    return points[:, torch.randperm(stored, generator=generator)[:count]]


def to_view_frame(points: torch.Tensor, world_to_camera: torch.Tensor) -> torch.Tensor:
    """Object-frame points (B, N, 3) rotated into each camera's axes (B, 3, 4); the object stays centred."""
    return points @ world_to_camera[:, :, :3].transpose(1, 2)


def dataset_fps_prefix(root: str | Path) -> int:
    info = json.loads((Path(root) / "dataset.json").read_text())
    return int(info.get("config", {}).get("fps_prefix") or 0)


def reconstnet_batches(root: str | Path, config: ReconstNetConfig, workers: int = 2,
                       split: str = "train") -> EpochBatches:
    """Endless ``{"images": (B, 3, S, S), "points": (B, N, 3)}`` from a voxforge dataset with points; a
    resumed run seeks to the saved (epoch, batch) instead of replaying every earlier batch."""
    from voxforge.loaders.dataset import VoxforgeDataset
    from voxforge.loaders.torch import ShardDataset, ViewBatcher, plain_background_of

    VoxforgeDataset(root, split)  # a clear error for folders that are not voxforge datasets (no points elsewhere)
    fps_prefix = dataset_fps_prefix(root)
    dataset = ShardDataset(root, split=split, shuffle_buffer=4 * config.batch_size, seed=config.seed, max_views=1)
    old = plain_background_of(root)
    collate = ViewBatcher(views=(1, 1), background="random_color" if old else "keep", old_background=old,
                          seed=config.seed)
    # its own generator: the global torch RNG (the latent's noise) then depends only on the steps taken
    loader = torch.utils.data.DataLoader(dataset, batch_size=config.batch_size, num_workers=workers,
                                         collate_fn=collate, pin_memory=torch.cuda.is_available(),
                                         generator=torch.Generator().manual_seed(config.seed),
                                         worker_init_fn=worker_init)

    def epoch_batches(epoch: int, skip: int) -> Iterator[dict]:
        """One epoch's batches after the first ``skip``; its crops and point subsets seeded by the epoch."""
        dataset.set_epoch(epoch)
        collate.set_epoch(epoch)
        rng = np.random.default_rng([config.seed, epoch])
        generator = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)

        def batches() -> Iterator[dict]:
            for batch in loader:
                images = torch.from_numpy(crop_views(batch["images"][:, 0].permute(0, 2, 3, 1).numpy(),
                                                     config.image_size, rng)).permute(0, 3, 1, 2).contiguous()
                points = select_points(batch["points"], config.points, fps_prefix, generator)
                if config.frame == "view":
                    points = to_view_frame(points, batch["world_to_camera"][:, 0])
                yield {"images": images, "points": points, "category": batch["category"]}

        return itertools.islice(batches(), skip, None)

    return EpochBatches(epoch_batches, workers)


def reconstnet_loss(model: ReconstNet, images: torch.Tensor, target: torch.Tensor,
                    config: ReconstNetConfig) -> dict[str, torch.Tensor]:
    out = model(images)
    terms = {"chamfer": chamfer_distance(out["points"], target, squared=config.chamfer_squared).mean(),
             "kl": kl_divergence(out["mean"], out["log_variance"]).mean()}
    terms["emd"] = sinkhorn_emd(out["points"], target, epsilon=config.emd_epsilon,
                                iterations=config.emd_iterations).mean() if config.emd_weight else torch.zeros(())
    terms["loss"] = terms["chamfer"] + config.emd_weight * terms["emd"] + config.kl_weight * terms["kl"]
    return terms


def train_reconstnet(config: ReconstNetConfig, batches: Iterable[dict], run_dir: str | Path, resume: bool = False,
                     progress: bool = True, signals: Iterable[int] = STOP_SIGNALS) -> dict:
    """Train for ``config.iterations`` steps; ``checkpoint.pt``, ``metrics.csv``, ``config.json`` in ``run_dir``.

    Checkpoints and stops are the 3D-R2N2 trainer's (:func:`voxforge.models.train.train`): every
    ``config.checkpoint_every`` iterations and ``config.checkpoint_minutes`` minutes, at the end, and when
    one of ``signals`` (default SIGTERM, SIGINT, SIGUSR1) or ``config.time_limit`` (minutes) stops the run
    at the next iteration boundary; ``result["stopped"]`` then says why (else None). torch's intra-op
    threads are ``config.threads``, by default sized to the CPUs left beside the ``batches``' DataLoader
    workers (:mod:`voxforge.models.threads`), and put back afterwards.
    """
    with training_threads(getattr(batches, "workers", 0), config.threads):
        return _train_reconstnet(config, batches, run_dir, resume, progress, signals)


def _train_reconstnet(config: ReconstNetConfig, batches: Iterable[dict], run_dir: str | Path, resume: bool,
                      progress: bool, signals: Iterable[int]) -> dict:
    if config.frame not in FRAMES:
        raise ValueError(f"frame must be one of {FRAMES}, got {config.frame!r}")
    stopper = Stopper(config.checkpoint_minutes, config.time_limit, signals)  # its clock starts now
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    device = torch.device(config.device)
    model = build_model(config).to(device)
    optimizer, scheduler = make_optimizer(model, config)
    checkpoint_path = run_dir / "checkpoint.pt"
    start, saved_position = restore_checkpoint(checkpoint_path, model, optimizer, scheduler, device) \
        if resume and checkpoint_path.exists() else (0, None)
    (run_dir / "config.json").write_text(json.dumps(asdict(config), indent=2))
    stream = resumed_stream(batches, start, saved_position)
    data_position = getattr(batches, "position", None)
    from tqdm import tqdm

    metrics_file, writer = open_metrics(run_dir, start, ["iteration", "loss", "chamfer", "emd", "kl", "lr", "seconds"])
    bar = tqdm(range(start, config.iterations), initial=start, total=config.iterations, disable=not progress, unit="it")
    history: dict[str, list[float]] = {"loss": [], "chamfer": [], "emd": [], "kl": []}
    began = time.perf_counter()
    done = start
    with stopper:  # from here on the stop signals only set a flag: the loop stops between two iterations
        try:
            model.train()
            for iteration in bar:
                batch = stopper.next_batch(stream)  # None: stop here (asked, or out of data)
                if batch is None:
                    break
                images = batch["images"].to(device, non_blocking=True)
                target = batch["points"].to(device, non_blocking=True)
                terms = reconstnet_loss(model, images, target, config)
                optimizer.zero_grad(set_to_none=True)
                terms["loss"].backward()
                if config.grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                optimizer.step()
                scheduler.step()
                for name in history:
                    history[name].append(float(terms[name].detach()))
                done = iteration + 1
                data_position = getattr(batches, "position", None)
                if done % config.log_every == 0 or done == config.iterations:
                    writer.writerow([done] + [round(history[n][-1], 6) for n in ("loss", "chamfer", "emd", "kl")]
                                    + [scheduler.get_last_lr()[0], round(time.perf_counter() - began, 2)])
                    metrics_file.flush()
                    bar.set_postfix(chamfer=f"{history['chamfer'][-1]:.5f}")
                if stopper.checkpoint_due(done, config.checkpoint_every):
                    save_checkpoint(checkpoint_path, model, optimizer, scheduler, done, config, data_position)
                    stopper.checkpointed()
        except KeyboardInterrupt:
            log.warning("interrupted after iteration %d: checkpoint saved, resume with --resume", done)
            raise
        finally:
            save_checkpoint(checkpoint_path, model, optimizer, scheduler, done, config, data_position)
            metrics_file.close()
            bar.close()
    return {"model": model, "history": history, "iteration": done,
            "stopped": stopper.summary(done, config.iterations)}


def _mean_metrics(rows: list[dict]) -> dict:
    mean = {"chamfer": float(np.mean([r["chamfer"] for r in rows]))}
    mean["fscore"] = {t: float(np.mean([r["fscore"][t] for r in rows])) for t in rows[0]["fscore"]}
    if "emd" in rows[0]:
        mean["emd"] = float(np.mean([r["emd"] for r in rows]))
    return mean


@torch.no_grad()
def evaluate_reconstnet(model: ReconstNet, samples: Iterable[dict], conventions=("lmnet",), views: int | None = None,
                        device: str = "cpu", image_size: int = 128, frame: str = "object", fps_prefix: int = 0,
                        emd: bool = False) -> dict:
    """Metrics of every (object, view) pair under each named convention: mean and per category.

    Ground truth: the object's first ``model.points`` points when the dataset's farthest-point prefix
    covers them, else all its points. ``views``: the first N views of each object (default all).
    """
    unknown = [c for c in conventions if c not in CONVENTIONS]
    if unknown:
        raise ValueError(f"unknown convention(s) {unknown}; choose from {', '.join(CONVENTIONS)}")
    model.eval().to(device)
    rows: dict[str, list[tuple[str, dict]]] = {c: [] for c in conventions}
    objects = 0
    for sample in samples:
        if "points" not in sample:
            raise ValueError(f"{sample['id']}: no points (the 3D-R2N2 and SoftRas layouts have none); "
                             "evaluate on a voxforge dataset made with points, e.g. --preset pointcloud")
        points = np.asarray(sample["points"], np.float64)
        truth = points[:model.points] if model.points <= fps_prefix else points
        chosen = list(range(len(sample["images"]) if views is None else min(views, len(sample["images"]))))
        images = crop_views(sample["images"][chosen], image_size, rng=None)
        tensor = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(255.0).to(device)
        predicted = model(tensor)["points"].double().cpu().numpy()
        for index, view in enumerate(chosen):
            target = truth if frame == "object" else truth @ np.asarray(sample["world_to_camera"][view])[:, :3].T
            for name in conventions:
                rows[name].append((sample["category"], evaluate_cloud(predicted[index], target, name, emd=emd)))
        objects += 1
    report = {"objects": objects, "views": views or "all", "frame": frame, "conventions": {}}
    for name, entries in rows.items():
        if not entries:
            continue
        categories = sorted({category for category, _ in entries})
        report["conventions"][name] = {
            "description": CONVENTIONS[name].description,
            "mean": _mean_metrics([m for _, m in entries]),
            "per_category": {c: _mean_metrics([m for cat, m in entries if cat == c]) for c in categories},
        }
    return report


def is_reconstnet_run(run_dir: str | Path) -> bool:
    config = Path(run_dir) / "config.json"
    return config.is_file() and json.loads(config.read_text()).get("arch") == ARCH


def load_run(run_dir: str | Path, device: str = "cpu") -> tuple[ReconstNet, ReconstNetConfig, int]:
    state = torch.load(Path(run_dir) / "checkpoint.pt", map_location=device, weights_only=False)
    values = dict(state["config"])
    values["lr_steps"] = tuple(values.get("lr_steps", ()))
    config = ReconstNetConfig(**{k: v for k, v in values.items() if k in ReconstNetConfig.__dataclass_fields__})
    model = build_model(config)
    model.load_state_dict(state["model"])
    return model, config, state["iteration"]


def train_command(args) -> int:
    """``pipeline train --arch reconstnet``."""
    import sys

    config = ReconstNetConfig(width=args.width, points=args.points, frame=args.frame, iterations=args.iterations,
                              batch_size=args.batch_size, lr=args.lr, lr_steps=tuple(args.lr_steps),
                              weight_decay=args.weight_decay, grad_clip=args.grad_clip, emd_weight=args.emd_weight,
                              kl_weight=args.kl_weight, seed=args.seed, checkpoint_every=args.checkpoint_every,
                              checkpoint_minutes=args.checkpoint_minutes, time_limit=args.time_limit,
                              threads=getattr(args, "threads", 0))
    if args.device:
        config.device = args.device
    try:
        batches = reconstnet_batches(args.data, config, args.workers)
        result = train_reconstnet(config, batches, args.out, resume=args.resume)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted: checkpoint in {args.out}; continue with --resume", file=sys.stderr)
        return 130
    if result["stopped"]:
        return report_stop(result["stopped"], args.out)
    history = result["history"]
    if not history["chamfer"]:
        print(f"nothing to do: {args.out} is already at iteration {result['iteration']}")
        return 0
    print(f"trained {result['iteration']} iterations; Chamfer {history['chamfer'][0]:.5f} -> {history['chamfer'][-1]:.5f} "
          f"(squared, means summed); run: {args.out}")
    return 0


def eval_command(args) -> int:
    """``pipeline eval RUN`` for a reconstnet run: Chamfer and F-scores per category and convention."""
    import os
    import sys

    from voxforge.loaders import open_dataset

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, config, iteration = load_run(args.run, device)
    conventions = [c for c in args.convention.split(",") if c]
    split = None if args.split == "all" else args.split
    try:
        prefix = dataset_fps_prefix(args.data) if (Path(args.data) / "dataset.json").is_file() else 0
        report = evaluate_reconstnet(model, open_dataset(args.data, split), conventions, args.views, device,
                                     config.image_size, config.frame, prefix, emd=args.emd)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not report["objects"]:
        print(f"error: no objects in split {args.split!r} of {args.data}", file=sys.stderr)
        return 2
    report.update(run=args.run, data=args.data, split=args.split, iteration=iteration)
    with open(os.path.join(args.run, "eval.json"), "w") as handle:
        json.dump(report, handle, indent=2)
    print(f"{report['objects']} objects, {args.split} split, views: {report['views']}, target frame: {config.frame}")
    for name, result in report["conventions"].items():
        thresholds = list(result["mean"]["fscore"])
        print(f"[{name}] {result['description']}")
        header = "  " + f"{'category':<12} {'Chamfer':>9}" + "".join(f" {'F@' + t:>8}" for t in thresholds)
        print(header + (f" {'EMD':>8}" if "emd" in result["mean"] else ""))
        for category, values in [("mean", result["mean"])] + sorted(result["per_category"].items()):
            line = f"  {category:<12} {values['chamfer']:>9.5f}" + "".join(f" {values['fscore'][t]:>8.3f}" for t in thresholds)
            print(line + (f" {values['emd']:>8.5f}" if "emd" in values else ""))
    print(f"written: {os.path.join(args.run, 'eval.json')}")
    return 0
