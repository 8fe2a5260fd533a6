"""Training on a Ray cluster: the engine (:func:`voxforge.models.engine.fit`) in Ray Train workers, DDP
among them (:mod:`voxforge.models.distributed` explains the ranks), for every model family."""

from __future__ import annotations

import logging
import os
from dataclasses import asdict
from pathlib import Path


def _ray_worker(settings: dict) -> dict:
    """Ray Train's per-worker loop: the same batches and engine as a single process."""
    import ray.train
    import ray.train.torch

    from voxforge.models.engine import config_from
    from voxforge.models.families import family_trainer

    config_class, make_batches, train = family_trainer(settings["config"]["arch"])
    config = config_from(config_class, settings["config"])
    config.device = str(ray.train.torch.get_device())
    rank = ray.train.get_context().get_world_rank()
    batches = make_batches(settings["data"], config, settings["workers"])
    result = train(config, batches, settings["out"], resume=settings["resume"],
                   progress=settings["progress"] and rank == 0)
    from voxforge.models.commands import start_and_end

    window, first, last = start_and_end(result["losses"], config.log_every)
    return {"iteration": result["iteration"], "loss_window": window, "loss_first": first, "loss_last": last,
            "stopped": result["stopped"],
            "world_size": result["world_size"], "iterations_per_second": result["iterations_per_second"],
            "images_per_second": result["images_per_second"], "data_wait_share": result["data_wait_share"]}


def train_with_ray(config, data: str, out: str | Path, address: str | None, workers: int, loader_workers: int = 2,
                   resume: bool = False, use_gpu: bool | None = None, progress: bool = True) -> dict:
    """Train ``config`` (any family: its ``arch`` says which) on ``workers`` Ray Train workers, DDP among them.

    ``address``: a Ray cluster ("auto", "ray://host:10001", "host:6379") or None/"local" for a Ray
    started on this machine. Returns the last metrics rank 0 reported.
    """
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if use_gpu is None:
        use_gpu = config.device.startswith("cuda")
    if not ray.is_initialized():
        quiet = dict(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=True)
        if address and address != "local":
            ray.init(address=address, **quiet)
        else:
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # one machine: loopback only
            import tempfile

            ray.init(_temp_dir=os.path.join(tempfile.gettempdir(), "voxforge-ray"), **quiet)
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    settings = {"config": asdict(config), "data": str(Path(data).resolve()) if os.path.exists(data) else data,
                "out": str(out), "workers": loader_workers, "resume": resume, "progress": progress}
    trainer = TorchTrainer(
        _ray_worker, train_loop_config=settings,
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu),
        run_config=RunConfig(name="voxforge-train", storage_path=str(out / "ray")),
    )
    result = trainer.fit()
    return dict(getattr(result, "return_value", None) or {})  # rank 0's return value (Ray Train v2)
