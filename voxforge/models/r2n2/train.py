"""Training and evaluating 3D-R2N2 on voxforge or 3D-R2N2 data.

Defaults follow the released 3D-R2N2 code: Adam, lr 1e-4 dropping to 1e-5 at 20k and 1e-6 at 60k
iterations, weight decay 5e-5 on non-bias weights, each batch one random view count in 1..5. The loop,
checkpoints (exact ``resume``), metrics and stops are the shared engine's (:mod:`voxforge.models.engine`);
this module says how to build the network and score a batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from voxforge.models.data import TEST_BACKGROUND, crop_views
from voxforge.models.engine import EngineConfig, Family, config_from, fit, load_checkpoint, to_device
from voxforge.models.r2n2.network import R2N2, voxel_iou
from voxforge.models.stopping import STOP_SIGNALS

log = logging.getLogger(__name__)

THRESHOLDS = (0.3, 0.4, 0.5)


@dataclass
class TrainConfig(EngineConfig):
    arch: str = "res3d-gru-3"
    batch_size: int = 24
    views: tuple[int, int] = (1, 5)
    lr_steps: tuple[int, ...] = (20000, 60000)  # lr x 0.1 at each
    foreground_weight: float = 1.0  # loss weight of occupied voxels (1.0: the paper's plain cross-entropy)
    weight_decay: float = 5e-5
    image_size: int = 127
    batch_norm: bool = False  # after every convolution (not in the paper; makes small CPU runs learn fast)
    extra: dict = field(default_factory=dict)


def array_batches(images: np.ndarray, voxels: np.ndarray, config: TrainConfig) -> Iterator[dict]:
    """Endless batches from in-memory arrays (N, V, H, W, 3) uint8 and (N, R, R, R): one view count per batch."""
    rng = np.random.default_rng(config.seed)
    while True:
        chosen = rng.choice(len(images), size=min(config.batch_size, len(images)), replace=False)
        count = int(rng.integers(config.views[0], config.views[1] + 1))
        picks = np.stack([rng.choice(images.shape[1], size=count, replace=False) for _ in chosen])
        batch = images[chosen[:, None], picks]
        yield {"images": torch.from_numpy(batch).permute(0, 1, 4, 2, 3).float() / 255.0,
               "voxels": torch.from_numpy(voxels[chosen])}


def build_model(config: TrainConfig) -> R2N2:
    return R2N2(config.arch, config.width, config.image_size, batch_norm=config.batch_norm)


def load_run(run_dir: str | Path, device: str = "cpu") -> tuple[R2N2, dict]:
    """The trained model of a run folder (``checkpoint.pt``) in eval mode, and its saved configuration."""
    state = load_checkpoint(run_dir, device)
    config = config_from(TrainConfig, state["config"])
    model = build_model(config).to(device)
    model.load_state_dict(state["model"])
    return model.eval(), {**state["config"], "iteration": state["iteration"]}


def _step(model: R2N2, forward, batch: dict, device: torch.device, config: TrainConfig) -> dict[str, torch.Tensor]:
    images = to_device(batch["images"], device)
    voxels = to_device(batch["voxels"], device)
    logits = forward(images)
    return {"loss": model.loss(logits, voxels, config.foreground_weight)}  # float32 whatever the autocast


FAMILY = Family("r2n2", build=lambda config: build_model(config), step=_step)


def train(config: TrainConfig, batches: Iterable[dict], run_dir: str | Path, resume: bool = False,
          progress: bool = True, on_log: Callable[[int, torch.nn.Module], None] | None = None,
          signals: Iterable[int] = STOP_SIGNALS) -> dict:
    """Train 3D-R2N2 for ``config.iterations`` steps with :func:`voxforge.models.engine.fit`.

    ``batches`` yields dicts with ``images`` (B, V, 3, H, W) float in [0, 1] and ``voxels`` (B, 32, 32, 32).
    The loss is the voxel cross-entropy (``foreground_weight`` on occupied voxels). Files, resume, stops,
    threads and the returned dict are the engine's; ``result["losses"]`` holds every iteration's loss.
    """
    return fit(FAMILY, config, batches, run_dir, resume, progress, on_log, signals)


@torch.no_grad()
def evaluate(model: R2N2, samples: Iterable[dict], views: Iterable[int] = (1, 2, 3, 4, 5), device: str = "cpu",
             crop: int | None = None, old_background=None, gallery: int = 0) -> dict:
    """IoU at thresholds 0.3/0.4/0.5, per category and per number of views (the first N views).

    ``old_background``: the plain colour the stored views were rendered over; when given, views are
    re-composited over 3D-R2N2's test colour (240) from their alpha, as its evaluation does. The first
    ``gallery`` objects come back under ``"gallery"`` (views, prediction at 0.4, truth, caption).
    """
    from voxforge.loaders.torch import recomposite
    from voxforge.models.r2n2.report import synset_of

    model.eval().to(device)
    views = tuple(views)
    per_category: dict[str, dict[str, list[float]]] = {}
    per_views: dict[str, dict[str, list[float]]] = {}
    overall: dict[str, list[float]] = {str(t): [] for t in THRESHOLDS}
    synsets: dict[str, str | None] = {}
    rows: list[dict] = []
    for sample in samples:
        images = sample["images"]
        if old_background is not None and sample.get("alphas") is not None:
            images = recomposite(images, sample["alphas"], old_background, TEST_BACKGROUND)
        if crop is not None:
            images = crop_views(images, crop, rng=None)  # centred
        tensor = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(255.0)[None]
        truth = torch.from_numpy(np.asarray(sample["voxels"]))[None]
        category = sample["category"]
        synsets.setdefault(category, synset_of(category, sample.get("synset_id")))
        for count in views:
            probabilities = model.occupancy(model(tensor[:, :count].to(device))).float().cpu()
            for threshold in THRESHOLDS:
                value = float(voxel_iou(probabilities, truth, threshold)[0])
                key = str(threshold)
                per_views.setdefault(str(count), {}).setdefault(key, []).append(value)
                if count == max(views):
                    per_category.setdefault(category, {}).setdefault(key, []).append(value)
                    overall[key].append(value)
            if count == max(views) and len(rows) < gallery:
                iou = overall["0.4"][-1]
                rows.append({"views": np.clip(images[:count], 0, 255).astype(np.uint8),
                             "predicted": (probabilities[0] > 0.4).numpy(), "truth": truth[0].numpy().astype(bool),
                             "caption": f"{sample.get('id', '')} ({category}) {count} views, IoU@0.4 = {iou:.3f}"})

    def mean(groups):  # NaN for no objects (the caller says so), without numpy's empty-slice warning
        return {k: float(np.mean(v)) if v else float("nan") for k, v in groups.items()}

    report = {"mean_iou": mean(overall), "per_category": {c: mean(g) for c, g in per_category.items()},
              "per_views": {n: mean(g) for n, g in per_views.items()}, "objects": len(overall["0.4"]),
              "synsets": synsets}
    if gallery:
        report["gallery"] = rows
    return report
