"""Training and evaluating the point-cloud network (:class:`voxforge.models.reconstnet.network.ReconstNet`).

One random view per object and step (backgrounds re-composited to a random light colour, as the
3D-R2N2 trainer does), cropped to ``image_size`` (3D-LMNet / 3D-ReConstNet crop 3D-R2N2's 137 px
renders to 128); the target is the object's first ``points`` stored points (the farthest-point
subset with ``--preset pointcloud``) or a random subset of that size. Loss: Chamfer distance (squared,
means summed, as PSGN) + ``emd_weight`` x approximate EMD (Sinkhorn) + ``kl_weight`` x the latent's KL
divergence to N(0, I). The optimizer, schedule, checkpoints (exact ``--resume``) and ``metrics.csv``
and stops with a checkpoint on a signal or a time limit are the shared engine's
(:mod:`voxforge.models.engine`).

``frame="view"`` trains on targets rotated into the input camera's frame (PSGN's view-centred
setting); evaluation rotates the ground truth the same way.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from voxforge.models.data import EpochBatches, crop_views
from voxforge.models.reconstnet.network import ReconstNet, kl_divergence
from voxforge.models.reconstnet.losses import chamfer_distance, sinkhorn_emd
from voxforge.models.reconstnet.metrics import CONVENTIONS, evaluate_cloud
from voxforge.models.stopping import STOP_SIGNALS
from voxforge.models.threads import worker_init
from voxforge.models.engine import EngineConfig, Family, config_from, fit, load_checkpoint, to_device

log = logging.getLogger(__name__)

ARCH = "reconstnet"
FRAMES = ("object", "view")


@dataclass
class ReconstNetConfig(EngineConfig):
    arch: str = ARCH
    width: float = 1.0  # channel multiplier of the ResNet-50 encoder (1.0 = the real one)
    points: int = 1024
    latent: int = 100
    image_size: int = 128  # input crop (3D-LMNet / 3D-ReConstNet: 137 px renders cropped to 128)
    frame: str = "object"  # target frame: object (3D-LMNet, 3D-ReConstNet) or view (PSGN)
    batch_size: int = 32
    chamfer_squared: bool = True
    emd_weight: float = 1.0
    emd_epsilon: float = 0.01  # Sinkhorn's final blur (distance units); coarse is enough for a gradient
    emd_iterations: int = 5
    kl_weight: float = 1e-3


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
    """Loss terms of images (B, 3, S, S) against target points (B, N, 3): chamfer, emd, kl and the total."""
    return _terms(model(images), target, config)


def _terms(out: dict, target: torch.Tensor, config: ReconstNetConfig) -> dict[str, torch.Tensor]:
    predicted = out["points"].float()
    terms = {"chamfer": chamfer_distance(predicted, target, squared=config.chamfer_squared).mean(),
             "kl": kl_divergence(out["mean"].float(), out["log_variance"].float()).mean()}
    terms["emd"] = sinkhorn_emd(predicted, target, epsilon=config.emd_epsilon,
                                iterations=config.emd_iterations).mean() if config.emd_weight \
        else predicted.new_zeros(())
    terms["loss"] = terms["chamfer"] + config.emd_weight * terms["emd"] + config.kl_weight * terms["kl"]
    return terms


def _step(model: ReconstNet, forward, batch: dict, device: torch.device,
          config: ReconstNetConfig) -> dict[str, torch.Tensor]:
    return _terms(forward(to_device(batch["images"], device)), to_device(batch["points"], device), config)


FAMILY = Family(ARCH, build=lambda config: build_model(config), step=_step, terms=("chamfer", "emd", "kl"),
                images=lambda batch: (batch["images"].shape[0], 1))


def train_reconstnet(config: ReconstNetConfig, batches: Iterable[dict], run_dir: str | Path, resume: bool = False,
                     progress: bool = True, signals: Iterable[int] = STOP_SIGNALS) -> dict:
    """Train 3D-ReConstNet for ``config.iterations`` steps with :func:`voxforge.models.engine.fit`.

    ``batches`` yields ``{"images": (B, 3, S, S) float in [0, 1], "points": (B, N, 3)}``. Files
    (``checkpoint.pt``, ``metrics.csv`` with the chamfer, emd and kl terms, ``config.json``), resume,
    stops, threads and the returned dict (``history`` holds each term per iteration) are the engine's.
    """
    if config.frame not in FRAMES:
        raise ValueError(f"frame must be one of {FRAMES}, got {config.frame!r}")
    return fit(FAMILY, config, batches, run_dir, resume, progress, signals=signals)


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


def load_run(run_dir: str | Path, device: str = "cpu") -> tuple[ReconstNet, ReconstNetConfig, int]:
    state = load_checkpoint(run_dir, device)
    config = config_from(ReconstNetConfig, state["config"])
    model = build_model(config)
    model.load_state_dict(state["model"])
    return model, config, state["iteration"]
