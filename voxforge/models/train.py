"""Training and evaluating 3D-R2N2 on voxforge or 3D-R2N2 data.

Defaults follow the released 3D-R2N2 code: Adam, lr 1e-4 dropping to 1e-5 at 20k and 1e-6 at 60k
iterations, weight decay 5e-5 on non-bias weights, each batch one random view count in 1..5.
Checkpoints hold model, optimizer, scheduler, RNG states, the iteration and the data position, so
``resume`` continues exactly. They are written every ``checkpoint_every`` iterations, every
``checkpoint_minutes`` minutes, at the end, and when the run stops early (SIGTERM, SIGINT, SIGUSR1 or
``time_limit``: :mod:`voxforge.models.stopping`).
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from voxforge.models.data import crop_views
from voxforge.models.r2n2 import R2N2, voxel_iou
from voxforge.models.stopping import STOP_SIGNALS, Stopper
from voxforge.models.threads import training_threads

log = logging.getLogger(__name__)

THRESHOLDS = (0.3, 0.4, 0.5)
TEST_BACKGROUND = 240.0  # 3D-R2N2 composites test views over this plain colour
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class TrainConfig:
    arch: str = "res3d-gru-3"
    width: float = 1.0
    iterations: int = 60000
    batch_size: int = 24
    views: tuple[int, int] = (1, 5)
    lr: float = 1e-4
    lr_steps: tuple[int, ...] = (20000, 60000)  # lr x 0.1 at each
    warmup: int = 0  # iterations of linear lr warm-up (0: none, as the paper)
    foreground_weight: float = 1.0  # loss weight of occupied voxels (1.0: the paper's plain cross-entropy)
    weight_decay: float = 5e-5
    grad_clip: float | None = None
    image_size: int = 127
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    seed: int = 0
    checkpoint_every: int = 2000  # iterations between checkpoints
    checkpoint_minutes: float = 10.0  # wall-clock minutes between checkpoints too (0: none)
    time_limit: float | None = None  # wall-clock minutes, then stop with a checkpoint (None: no limit)
    log_every: int = 50
    batch_norm: bool = False  # after every convolution (not in the paper; makes small CPU runs learn fast)
    amp: str = "none"  # "bf16" (CUDA or CPU) or "fp16" (CUDA) autocast
    compile: bool = False  # torch.compile the model
    threads: int = 0  # torch intra-op threads: 0 = sized to the usable CPUs (voxforge.models.threads), -1 = torch's
    extra: dict = field(default_factory=dict)


def make_optimizer(model: torch.nn.Module, config: TrainConfig):
    """Adam with weight decay on weights only (not biases or normalization scales), and the step schedule."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    optimizer = torch.optim.Adam(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=config.lr
    )
    steps, warmup = sorted(config.lr_steps), getattr(config, "warmup", 0)

    def factor(iteration: int) -> float:
        ramp = min(1.0, (iteration + 1) / warmup) if warmup else 1.0
        return ramp * 0.1 ** sum(iteration >= step for step in steps)

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
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


def save_checkpoint(path: Path, model, optimizer, scheduler, iteration: int, config: TrainConfig,
                    data_position: tuple[int, int] | None = None) -> None:
    temporary = path.with_suffix(".partial")
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "iteration": iteration, "config": asdict(config), "rng": _rng_state(),
                "data_position": data_position}, temporary)
    temporary.replace(path)


def restore_checkpoint(path: Path, model, optimizer, scheduler, device) -> tuple[int, tuple[int, int] | None]:
    """Model, optimizer, schedule and RNG states back from ``path``; returns the iteration to continue at
    and the saved data position (None when the batches had none)."""
    state = torch.load(path, map_location=device, weights_only=False)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"]["torch"].cpu())  # map_location moved it to the device; it must be a CPU tensor
    np.random.set_state(state["rng"]["numpy"])
    return state["iteration"], state.get("data_position")


def resumed_stream(batches, done: int, position: tuple[int, int] | None):
    """An iterator over ``batches`` where a run that completed ``done`` iterations left it: batches that
    can ``seek`` (:class:`voxforge.models.data.EpochBatches`) start at the saved data ``position``; any
    other iterable is replayed (its first ``done`` batches read and dropped)."""
    if position is not None and hasattr(batches, "seek"):
        batches.seek(position)
        return iter(batches)
    stream = iter(batches)
    for _ in range(done):
        next(stream)
    return stream


def open_metrics(run_dir: Path, start: int, columns: list[str]):
    """``run_dir/metrics.csv`` opened for appending: (file, csv writer).

    A fresh run (``start`` 0) begins a new file with the header. A resumed one keeps the rows up to
    iteration ``start`` and drops later ones, logged by a run killed after its last checkpoint (as
    TensorBoard's ``purge_step`` does), so every iteration is logged once.
    """
    path = run_dir / "metrics.csv"
    rows = []
    if start and path.exists():
        with path.open(newline="") as handle:
            rows = list(csv.reader(handle))
    if not rows:
        metrics_file = path.open("w", newline="")
        writer = csv.writer(metrics_file)
        writer.writerow(columns)
        return metrics_file, writer
    kept = rows[:1] + [row for row in rows[1:] if row and _logged_at(row[0]) <= start]
    if len(kept) < len(rows):
        temporary = path.with_name("metrics.csv.partial")
        with temporary.open("w", newline="") as handle:
            csv.writer(handle).writerows(kept)
        temporary.replace(path)
    metrics_file = path.open("a", newline="")
    return metrics_file, csv.writer(metrics_file)


def _logged_at(cell: str) -> float:
    try:
        return float(cell)
    except ValueError:
        return float("inf")


def build_model(config: TrainConfig) -> R2N2:
    return R2N2(config.arch, config.width, config.image_size, batch_norm=config.batch_norm)


def load_run(run_dir: str | Path, device: str = "cpu") -> tuple[R2N2, dict]:
    """The trained model of a run folder (``checkpoint.pt``) in eval mode, and its saved configuration."""
    path = Path(run_dir) / "checkpoint.pt"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: is {run_dir} a folder written by pipeline train?")
    state = torch.load(path, map_location=device, weights_only=False)
    known = {f.name for f in fields(TrainConfig)}
    config = TrainConfig(**{k: v for k, v in state["config"].items() if k in known})
    model = build_model(config).to(device)
    model.load_state_dict(state["model"])
    return model.eval(), {**state["config"], "iteration": state["iteration"]}


def autocast(device: torch.device, amp: str):
    """bf16/fp16 autocast on the device, or nothing. bf16 needs no loss scaling; fp16 (CUDA only) does."""
    if amp in ("none", "", None):
        return contextlib.nullcontext()
    if amp not in AMP_DTYPES:
        raise ValueError(f"--amp must be one of none, {', '.join(AMP_DTYPES)}; got {amp!r}")
    if amp == "fp16" and device.type != "cuda":
        raise ValueError("--amp fp16 needs a CUDA device (use bf16 on CPUs)")
    return torch.autocast(device_type=device.type, dtype=AMP_DTYPES[amp])


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host -> device copy that overlaps with compute on CUDA (pinned source, non-blocking)."""
    if device.type == "cuda" and not tensor.is_pinned():
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)


def _configure_cuda(device: torch.device) -> None:
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # five input shapes (1..5 views): each tuned once
        torch.set_float32_matmul_precision("high")  # TF32 for the fp32 parts (fc layers, optimizer-free math)


class _TensorBoard:
    """``run_dir/tensorboard`` scalars beside metrics.csv (silently absent without the tensorboard package)."""

    def __init__(self, run_dir: Path, start: int) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # pragma: no cover - tensorboard is a pinned dependency
            log.warning("tensorboard is not installed: logging to metrics.csv only")
            self.writer = None
            return
        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=start or None)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if self.writer is not None:
            for name, value in values.items():
                self.writer.add_scalar(name, value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


METRIC_COLUMNS = ["iteration", "loss", "lr", "views", "seconds", "images_per_s", "data_wait"]


def train(config: TrainConfig, batches: Iterable[dict], run_dir: str | Path, resume: bool = False,
          progress: bool = True, on_log: Callable[[int, torch.nn.Module], None] | None = None,
          signals: Iterable[int] = STOP_SIGNALS) -> dict:
    """Train for ``config.iterations`` steps; writes ``checkpoint.pt``, ``metrics.csv`` and TensorBoard logs.

    ``batches`` yields dicts with ``images`` (B, V, 3, H, W) and ``voxels`` (B, 32, 32, 32). With
    ``resume``, the model, optimizer, schedule and RNG come back from the checkpoint and the caller's
    batch stream is advanced past the batches already used. Under ``torchrun`` or Ray Train the model
    runs in DDP and only rank 0 writes files. The logged loss is the mean over the last ``log_every``
    iterations of rank 0; ``data_wait`` is the share of wall time spent waiting for batches.
    ``on_log(iteration, model)`` runs on rank 0 after each log line (e.g. a validation pass); the model
    is put back in training mode afterwards.

    Checkpoints: every ``config.checkpoint_every`` iterations and ``config.checkpoint_minutes`` minutes
    of wall-clock time, at the end, and on a stop. ``signals`` (default SIGTERM, SIGINT, SIGUSR1; ``()``
    for none) and ``config.time_limit`` (minutes since the call) end the run at the next iteration
    boundary with a checkpoint; ``result["stopped"]`` then holds the reason, the iteration and the exit
    status ``pipeline train`` uses (:mod:`voxforge.models.stopping`), else None. Under DDP all ranks stop
    at the same iteration.

    torch's intra-op threads are ``config.threads``, by default sized to the CPUs this process may use
    less the ``batches``' DataLoader workers (each rank its share; :mod:`voxforge.models.threads`), and
    put back afterwards.
    """
    with training_threads(getattr(batches, "workers", 0), config.threads):
        return _train(config, batches, run_dir, resume, progress, on_log, signals)


def _train(config: TrainConfig, batches: Iterable[dict], run_dir: str | Path, resume: bool, progress: bool,
           on_log: Callable[[int, torch.nn.Module], None] | None, signals: Iterable[int]) -> dict:
    from voxforge.models import distributed

    stopper = Stopper(config.checkpoint_minutes, config.time_limit, signals)  # its clock starts now
    run_dir = Path(run_dir)
    state = distributed.setup(config.device)
    device = state.device
    _configure_cuda(device)
    if state.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    model = build_model(config).to(device)
    optimizer, scheduler = make_optimizer(model, config)
    scaler = torch.amp.GradScaler("cuda") if config.amp == "fp16" else None
    start, saved_position = 0, None
    checkpoint_path = run_dir / "checkpoint.pt"
    if resume and checkpoint_path.exists():
        start, saved_position = restore_checkpoint(checkpoint_path, model, optimizer, scheduler, device)
    if state.is_main:
        (run_dir / "config.json").write_text(json.dumps(asdict(config), indent=2))
    forward = distributed.wrap(model, state)
    if config.compile:
        forward.compile()  # in place: checkpoints keep the plain module's parameter names
    stream = resumed_stream(batches, start, saved_position)
    data_position = getattr(batches, "position", None)
    from tqdm import tqdm

    metrics_file, writer = open_metrics(run_dir, start, METRIC_COLUMNS) if state.is_main else (None, None)
    board = _TensorBoard(run_dir, start) if state.is_main else None
    bar = tqdm(range(start, config.iterations), initial=start, total=config.iterations, unit="it",
               disable=not (progress and state.is_main), smoothing=0.05)
    losses: list[float] = []
    pending: list[torch.Tensor] = []  # losses still on the device: read back at log time, not every step
    began = time.perf_counter()
    waited = 0.0
    images_seen = window_images = 0
    window_start, window_wait = began, 0.0
    done = start  # iterations completed
    with stopper:  # from here on the stop signals only set a flag: the loop stops between two iterations
        try:
            model.train()
            for iteration in bar:
                batch = stopper.next_batch(stream, state)  # None: stop here (asked, or out of data), on every rank
                waited += stopper.fetch_seconds
                window_wait += stopper.fetch_seconds
                if batch is None:
                    break
                images = to_device(batch["images"], device)
                voxels = to_device(batch["voxels"], device)
                with autocast(device, config.amp):
                    logits = forward(images)
                loss = model.loss(logits, voxels, config.foreground_weight)  # float32 whatever the autocast
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.unscale_(optimizer)
                else:
                    loss.backward()
                if config.grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                scheduler.step()
                pending.append(loss.detach())
                count = images.shape[0] * images.shape[1]
                images_seen += count
                window_images += count
                done = iteration + 1
                data_position = getattr(batches, "position", None)  # after this step's batch
                if done % config.log_every == 0 or done == config.iterations:
                    window = torch.stack(pending).float().cpu().tolist()  # one device sync per log line
                    losses.extend(window)
                    pending.clear()
                    now = time.perf_counter()
                    rate = window_images / max(now - window_start, 1e-9)
                    share = window_wait / max(now - window_start, 1e-9)
                    if state.is_main:
                        mean_loss = float(np.mean(window))
                        lr = scheduler.get_last_lr()[0]
                        writer.writerow([done, round(mean_loss, 6), lr, images.shape[1], round(now - began, 2),
                                         round(rate, 1), round(share, 4)])
                        metrics_file.flush()
                        board.scalars(done, {"train/loss": mean_loss, "train/lr": lr, "perf/images_per_s": rate,
                                             "perf/data_wait_share": share,
                                             "perf/iterations_per_s": len(window) / max(now - window_start, 1e-9)})
                        bar.set_postfix(loss=f"{mean_loss:.4f}", img_s=f"{rate:.0f}", wait=f"{share:.0%}")
                        if on_log is not None:
                            on_log(done, model)
                            model.train()
                    window_start, window_wait, window_images = time.perf_counter(), 0.0, 0
                if state.is_main and stopper.checkpoint_due(done, config.checkpoint_every):
                    save_checkpoint(checkpoint_path, model, optimizer, scheduler, done, config, data_position)
                    stopper.checkpointed()
        except KeyboardInterrupt:
            log.warning("interrupted after iteration %d: checkpoint saved, resume with --resume", done)
            raise
        finally:
            if pending:
                losses.extend(torch.stack(pending).float().cpu().tolist())
            if state.is_main:
                save_checkpoint(checkpoint_path, model, optimizer, scheduler, done, config, data_position)
                metrics_file.close()
                board.close()
            bar.close()
    seconds = time.perf_counter() - began
    trained = done - start
    return {"model": model, "losses": losses, "iteration": done, "seconds": seconds,
            "iterations_per_second": trained / max(seconds, 1e-9), "images_per_second": images_seen / max(seconds, 1e-9),
            "data_wait_share": waited / max(seconds, 1e-9), "rank": state.rank, "world_size": state.world_size,
            "stopped": stopper.summary(done, config.iterations)}


@torch.no_grad()
def evaluate(model: R2N2, samples: Iterable[dict], views: Iterable[int] = (1, 2, 3, 4, 5), device: str = "cpu",
             crop: int | None = None, old_background=None, gallery: int = 0) -> dict:
    """IoU at thresholds 0.3/0.4/0.5, per category and per number of views (the first N views).

    ``old_background``: the plain colour the stored views were rendered over; when given, views are
    re-composited over 3D-R2N2's test colour (240) from their alpha, as its evaluation does. The first
    ``gallery`` objects come back under ``"gallery"`` (views, prediction at 0.4, truth, caption).
    """
    from voxforge.loaders.torch import recomposite
    from voxforge.models.report import synset_of

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
                             "caption": f"{sample.get('id', '')} ({category}) {count} views, IoU@0.4 {iou:.3f}"})

    def mean(groups):  # NaN for no objects (the caller says so), without numpy's empty-slice warning
        return {k: float(np.mean(v)) if v else float("nan") for k, v in groups.items()}

    report = {"mean_iou": mean(overall), "per_category": {c: mean(g) for c, g in per_category.items()},
              "per_views": {n: mean(g) for n, g in per_views.items()}, "objects": len(overall["0.4"]),
              "synsets": synsets}
    if gallery:
        report["gallery"] = rows
    return report
