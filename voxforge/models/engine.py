"""The one training loop of every bundled model (3D-R2N2, 3D-ReConstNet, SoftRas).

A model family is a small :class:`Family`: how to build its network from its configuration, and how to
turn a batch into a loss (plus the named terms to log). Everything else lives here, once:

- Adam with weight decay on weights only and a step schedule with optional linear warm-up
  (:func:`make_optimizer`; the 3D-R2N2 release's optimizer);
- checkpoints (``checkpoint.pt``) holding model, optimizer, schedule, RNG states, the iteration and the
  data position, so ``resume`` continues exactly (:func:`save_checkpoint`, :func:`restore_checkpoint`,
  :func:`resumed_stream`); written every ``checkpoint_every`` iterations, every ``checkpoint_minutes``
  minutes, at the end and when the run stops early (SIGTERM, SIGINT, SIGUSR1 or ``time_limit``:
  :mod:`voxforge.models.stopping`);
- ``metrics.csv`` (one row per ``log_every`` iterations, every iteration logged once across resumes) and
  TensorBoard scalars beside it, a progress bar;
- bf16/fp16 autocast (``amp``), ``torch.compile`` (``compile``), DDP under ``torchrun`` or Ray Train
  (:mod:`voxforge.models.distributed`; only rank 0 writes files), torch thread sizing
  (:mod:`voxforge.models.threads`), and an ``on_log`` hook (e.g. a validation pass).
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from voxforge.models import distributed
from voxforge.models.stopping import STOP_SIGNALS, Stopper
from voxforge.models.threads import training_threads

log = logging.getLogger(__name__)

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
BASE_COLUMNS = ("iteration", "loss")
TAIL_COLUMNS = ("lr", "views", "seconds", "images_per_s", "data_wait")


@dataclass
class EngineConfig:
    """Settings every model family shares; each family's configuration extends it."""

    arch: str = ""
    width: float = 1.0
    iterations: int = 60000
    batch_size: int = 32
    lr: float = 1e-4
    lr_steps: tuple[int, ...] = ()  # lr x 0.1 at each
    warmup: int = 0  # iterations of linear lr warm-up (0: none)
    weight_decay: float = 0.0  # on weights only, not biases or normalization scales
    grad_clip: float | None = None
    device: str = field(default_factory=lambda: "cuda" if torch.cuda.is_available() else "cpu")
    seed: int = 0
    checkpoint_every: int = 2000  # iterations between checkpoints
    checkpoint_minutes: float = 10.0  # wall-clock minutes between checkpoints too (0: none)
    time_limit: float | None = None  # wall-clock minutes, then stop with a checkpoint (None: no limit)
    log_every: int = 50
    amp: str = "none"  # "bf16" (CUDA or CPU) or "fp16" (CUDA) autocast
    compile: bool = False  # torch.compile the model
    threads: int = 0  # torch intra-op threads: 0 = sized to the usable CPUs (voxforge.models.threads), -1 = torch's


@dataclass(frozen=True)
class Family:
    """What a model family tells the engine.

    ``build(config)``: the network (an ``nn.Module``), built after ``torch.manual_seed(config.seed)``.
    ``step(model, forward, batch, device, config)``: the loss terms of one batch as float32 scalars, with
    the total under ``"loss"`` (the one that is back-propagated) and every name in ``terms``. ``model`` is
    the plain module (for its helper methods); ``forward`` is what to call for the forward pass (the DDP
    wrapper under several ranks), run by the engine inside autocast.
    ``images(batch)``: (objects, views per object) of the batch, for throughput and the ``views`` column.
    """

    name: str
    build: Callable
    step: Callable
    terms: tuple[str, ...] = ()
    images: Callable = field(default=lambda batch: tuple(batch["images"].shape[:2]))

    @property
    def columns(self) -> list[str]:
        return [*BASE_COLUMNS, *self.terms, *TAIL_COLUMNS]


def make_optimizer(model: torch.nn.Module, config):
    """Adam with weight decay on weights only (not biases or normalization scales), and the step schedule."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    optimizer = torch.optim.Adam(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=config.lr
    )
    steps, warmup = sorted(config.lr_steps), config.warmup

    def factor(iteration: int) -> float:
        ramp = min(1.0, (iteration + 1) / warmup) if warmup else 1.0
        return ramp * 0.1 ** sum(iteration >= step for step in steps)

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return optimizer, scheduler


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state()}


def save_checkpoint(path: Path, model, optimizer, scheduler, iteration: int, config,
                    data_position: tuple[int, int] | None = None) -> None:
    """``path`` replaced atomically: a kill while writing leaves the previous checkpoint whole."""
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
        torch.backends.cudnn.benchmark = True  # few input shapes (3D-R2N2: 1..5 views): each tuned once
        torch.set_float32_matmul_precision("high")  # TF32 for the fp32 parts


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


def fit(family: Family, config, batches: Iterable[dict], run_dir: str | Path, resume: bool = False,
        progress: bool = True, on_log: Callable[[int, torch.nn.Module], None] | None = None,
        signals: Iterable[int] = STOP_SIGNALS) -> dict:
    """Train ``family``'s model for ``config.iterations`` steps on ``batches``; files in ``run_dir``.

    Writes ``config.json``, ``checkpoint.pt``, ``metrics.csv`` (columns :attr:`Family.columns`: each
    term's mean over the last ``log_every`` iterations of rank 0, the learning rate, views per object,
    seconds since the start, images per second and ``data_wait``, the share of wall time spent waiting
    for batches) and TensorBoard logs (``train/<term>``, ``train/lr``, ``perf/...``).

    ``resume``: model, optimizer, schedule and RNG come back from ``run_dir/checkpoint.pt`` and the batch
    stream continues at the saved data position (or is replayed past the batches already used). Under
    ``torchrun`` or Ray Train the model runs in DDP and only rank 0 writes files. ``on_log(iteration,
    model)`` runs on rank 0 after each log line; the model is put back in training mode afterwards.

    Stops: ``signals`` (default SIGTERM, SIGINT, SIGUSR1; ``()`` for none) and ``config.time_limit``
    (minutes since the call) end the run at the next iteration boundary with a checkpoint;
    ``result["stopped"]`` then holds the reason, the iteration and the exit status ``pipeline train``
    uses (:mod:`voxforge.models.stopping`), else None. Under DDP all ranks stop at the same iteration.

    torch's intra-op threads are ``config.threads``, by default sized to the CPUs this process may use
    less the ``batches``' DataLoader workers (:mod:`voxforge.models.threads`), and put back afterwards.

    Returns ``model`` (trained, plain module), ``losses`` (every iteration's total loss), ``history``
    (every iteration's value of each term), ``iteration`` (completed), ``seconds``,
    ``iterations_per_second``, ``images_per_second``, ``data_wait_share``, ``rank``, ``world_size`` and
    ``stopped``.
    """
    with training_threads(getattr(batches, "workers", 0), config.threads):
        return _fit(family, config, batches, run_dir, resume, progress, on_log, signals)


def _fit(family: Family, config, batches, run_dir, resume, progress, on_log, signals) -> dict:
    stopper = Stopper(config.checkpoint_minutes, config.time_limit, signals)  # its clock starts now
    run_dir = Path(run_dir)
    state = distributed.setup(config.device)
    device = state.device
    autocast(device, config.amp)  # an impossible --amp fails here, before any file is written
    _configure_cuda(device)
    if state.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    model = family.build(config).to(device)
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

    names = ("loss", *family.terms)
    metrics_file, writer = open_metrics(run_dir, start, family.columns) if state.is_main else (None, None)
    board = _TensorBoard(run_dir, start) if state.is_main else None
    bar = tqdm(range(start, config.iterations), initial=start, total=config.iterations, unit="it",
               disable=not (progress and state.is_main), smoothing=0.05)
    history: dict[str, list[float]] = {name: [] for name in names}
    pending: list[torch.Tensor] = []  # terms still on the device: read back at log time, not every step
    began = time.perf_counter()
    waited = 0.0
    images_seen = window_images = 0
    window_start, window_wait = began, 0.0
    views = 0
    done = start  # iterations completed

    def read_back() -> list[list[float]]:
        window = torch.stack(pending).float().cpu().tolist()  # one device sync per log line
        pending.clear()
        for row in window:
            for name, value in zip(names, row):
                history[name].append(value)
        return window

    with stopper:  # from here on the stop signals only set a flag: the loop stops between two iterations
        try:
            model.train()
            for iteration in bar:
                batch = stopper.next_batch(stream, state)  # None: stop here (asked, or out of data), on every rank
                waited += stopper.fetch_seconds
                window_wait += stopper.fetch_seconds
                if batch is None:
                    break
                with autocast(device, config.amp):
                    terms = family.step(model, forward, batch, device, config)
                loss = terms["loss"].float()
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
                pending.append(torch.stack([terms[name].detach().float() for name in names]))
                objects, views = family.images(batch)
                images_seen += objects * views
                window_images += objects * views
                done = iteration + 1
                data_position = getattr(batches, "position", None)  # after this step's batch
                if done % config.log_every == 0 or done == config.iterations:
                    window = np.asarray(read_back())
                    now = time.perf_counter()
                    rate = window_images / max(now - window_start, 1e-9)
                    share = window_wait / max(now - window_start, 1e-9)
                    if state.is_main:
                        means = dict(zip(names, window.mean(axis=0).tolist()))
                        lr = scheduler.get_last_lr()[0]
                        writer.writerow([done] + [round(means[name], 6) for name in names]
                                        + [lr, views, round(now - began, 2), round(rate, 1), round(share, 4)])
                        metrics_file.flush()
                        board.scalars(done, {**{f"train/{name}": value for name, value in means.items()},
                                             "train/lr": lr, "perf/images_per_s": rate, "perf/data_wait_share": share,
                                             "perf/iterations_per_s": len(window) / max(now - window_start, 1e-9)})
                        bar.set_postfix(loss=f"{means['loss']:.4f}", img_s=f"{rate:.0f}", wait=f"{share:.0%}")
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
                read_back()
            if state.is_main:
                save_checkpoint(checkpoint_path, model, optimizer, scheduler, done, config, data_position)
                metrics_file.close()
                board.close()
            bar.close()
    seconds = time.perf_counter() - began
    trained = done - start
    return {"model": model, "losses": history["loss"], "history": history, "iteration": done, "seconds": seconds,
            "iterations_per_second": trained / max(seconds, 1e-9), "images_per_second": images_seen / max(seconds, 1e-9),
            "data_wait_share": waited / max(seconds, 1e-9), "rank": state.rank, "world_size": state.world_size,
            "stopped": stopper.summary(done, config.iterations)}


def load_checkpoint(run_dir: str | Path, device: str = "cpu") -> dict:
    """The raw ``checkpoint.pt`` of a run folder (model state, config, iteration, ...).

    Raises FileNotFoundError with a sentence a user can act on when there is none.
    """
    path = Path(run_dir) / "checkpoint.pt"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: is {run_dir} a folder written by pipeline train?")
    return torch.load(path, map_location=device, weights_only=False)


def config_from(cls, values: dict):
    """A configuration dataclass from saved values (unknown keys dropped, lists back to tuples)."""
    known = cls.__dataclass_fields__
    kept = {k: (tuple(v) if isinstance(v, list) else v) for k, v in values.items() if k in known}
    return cls(**kept)


def run_arch(run_dir: str | Path) -> str | None:
    """The ``arch`` a run folder was trained with (from its config.json), or None."""
    path = Path(run_dir) / "config.json"
    try:
        return json.loads(path.read_text()).get("arch")
    except (OSError, ValueError):
        return None



def config_from_args(cls, args, skip: tuple[str, ...] = ()):
    """A family's configuration from ``pipeline train``'s parsed arguments: every field of ``cls`` the
    command line gave (not None) is taken, the rest keep the family's defaults (each family has its own
    batch size, schedule and image size); names in ``skip`` are left to the caller."""
    given = {name: getattr(args, name) for name in cls.__dataclass_fields__
             if name not in skip and getattr(args, name, None) is not None}
    return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in given.items()})
