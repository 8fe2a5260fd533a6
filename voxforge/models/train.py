"""Training and evaluating 3D-R2N2 on voxforge or 3D-R2N2 data.

Defaults follow the released 3D-R2N2 code: Adam, lr 1e-4 dropping to 1e-5 at 20k and 1e-6 at 60k
iterations, weight decay 5e-5 on non-bias weights, each batch one random view count in 1..5.
Checkpoints hold model, optimizer, scheduler, RNG states and the iteration, so ``resume`` continues
exactly.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from voxforge.models.data import crop_views
from voxforge.models.r2n2 import R2N2, voxel_iou

log = logging.getLogger(__name__)

THRESHOLDS = (0.3, 0.4, 0.5)


@dataclass
class TrainConfig:
    arch: str = "res3d-gru-3"
    width: float = 1.0
    iterations: int = 60000
    batch_size: int = 24
    views: tuple[int, int] = (1, 5)
    lr: float = 1e-4
    lr_steps: tuple[int, ...] = (20000, 60000)  # lr x 0.1 at each
    weight_decay: float = 5e-5
    grad_clip: float | None = None
    image_size: int = 127
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    seed: int = 0
    checkpoint_every: int = 2000
    log_every: int = 50
    extra: dict = field(default_factory=dict)


def make_optimizer(model: torch.nn.Module, config: TrainConfig):
    """Adam with weight decay on weights only (not biases), and the step schedule."""
    decay = [p for n, p in model.named_parameters() if not n.endswith("bias")]
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias")]
    optimizer = torch.optim.Adam(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=config.lr
    )
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(config.lr_steps), gamma=0.1)
    return optimizer, scheduler


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


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state()}


def save_checkpoint(path: Path, model, optimizer, scheduler, iteration: int, config: TrainConfig) -> None:
    temporary = path.with_suffix(".partial")
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "iteration": iteration, "config": asdict(config), "rng": _rng_state()}, temporary)
    temporary.replace(path)


def train(config: TrainConfig, batches: Iterable[dict], run_dir: str | Path, resume: bool = False,
          progress: bool = True) -> dict:
    """Train for ``config.iterations`` steps; writes ``checkpoint.pt`` and ``metrics.csv`` in ``run_dir``.

    ``batches`` yields dicts with ``images`` (B, V, 3, H, W) and ``voxels`` (B, 32, 32, 32). With
    ``resume``, the model, optimizer, schedule and RNG come back from the checkpoint and the caller's
    batch stream is advanced past the batches already used.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    device = torch.device(config.device)
    model = R2N2(config.arch, config.width, config.image_size).to(device)
    optimizer, scheduler = make_optimizer(model, config)
    start = 0
    checkpoint_path = run_dir / "checkpoint.pt"
    if resume and checkpoint_path.exists():
        state = torch.load(checkpoint_path, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start = state["iteration"]
        torch.set_rng_state(state["rng"]["torch"])
        np.random.set_state(state["rng"]["numpy"])
    (run_dir / "config.json").write_text(json.dumps(asdict(config), indent=2))
    stream = iter(batches)
    for _ in range(start):  # the data position: skip what the checkpointed run already consumed
        next(stream)
    from tqdm import tqdm

    metrics_file = (run_dir / "metrics.csv").open("a", newline="")
    writer = csv.writer(metrics_file)
    if start == 0:
        writer.writerow(["iteration", "loss", "lr", "views", "seconds"])
    bar = tqdm(range(start, config.iterations), initial=start, total=config.iterations, disable=not progress, unit="it")
    losses: list[float] = []
    began = time.perf_counter()
    done = start  # iterations completed
    try:
        model.train()
        for iteration in bar:
            batch = next(stream, None)
            if batch is None:  # a finite batch stream (a time budget, a fixed list) has ended
                break
            images = batch["images"].to(device, non_blocking=True)
            voxels = batch["voxels"].to(device, non_blocking=True)
            loss = model.loss(model(images), voxels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
            if (iteration + 1) % config.log_every == 0:
                writer.writerow([iteration + 1, losses[-1], scheduler.get_last_lr()[0], images.shape[1],
                                 round(time.perf_counter() - began, 2)])
                metrics_file.flush()
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
            done = iteration + 1
            if done % config.checkpoint_every == 0:
                save_checkpoint(checkpoint_path, model, optimizer, scheduler, done, config)
    except KeyboardInterrupt:
        log.warning("interrupted after iteration %d: checkpoint saved, resume with --resume", done)
        raise
    finally:
        save_checkpoint(checkpoint_path, model, optimizer, scheduler, done, config)
        metrics_file.close()
        bar.close()
    return {"model": model, "losses": losses, "iteration": done}


@torch.no_grad()
def evaluate(model: R2N2, samples: Iterable[dict], views: Iterable[int] = (1, 2, 3, 4, 5), device: str = "cpu",
             crop: int | None = None) -> dict:
    """IoU at thresholds 0.3/0.4/0.5, per category and per number of views (the first N views)."""
    model.eval().to(device)
    per_category: dict[str, dict[str, list[float]]] = {}
    per_views: dict[str, dict[str, list[float]]] = {}
    overall: dict[str, list[float]] = {str(t): [] for t in THRESHOLDS}
    for sample in samples:
        images = sample["images"]
        if crop is not None:
            images = crop_views(images, crop, rng=None)  # centred
        tensor = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(255.0)[None]
        truth = torch.from_numpy(np.asarray(sample["voxels"]))[None]
        for count in views:
            probabilities = model.occupancy(model(tensor[:, :count].to(device))).cpu()
            for threshold in THRESHOLDS:
                value = float(voxel_iou(probabilities, truth, threshold)[0])
                key = str(threshold)
                per_views.setdefault(str(count), {}).setdefault(key, []).append(value)
                if count == max(views):
                    per_category.setdefault(sample["category"], {}).setdefault(key, []).append(value)
                    overall[key].append(value)

    def mean(groups):
        return {k: float(np.mean(v)) for k, v in groups.items()}

    return {"mean_iou": mean(overall), "per_category": {c: mean(g) for c, g in per_category.items()},
            "per_views": {n: mean(g) for n, g in per_views.items()}, "objects": len(overall["0.4"])}
