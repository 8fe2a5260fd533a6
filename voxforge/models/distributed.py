"""One training function for every scale: one process, DDP under ``torchrun``, or Ray Train workers.

``torchrun --nproc-per-node N -m voxforge.pipeline.cli train ...`` starts N processes with RANK /
WORLD_SIZE / LOCAL_RANK set; :func:`setup` joins them into a process group (NCCL on GPUs, gloo on CPUs).
``pipeline train --address ray://head:10001 --ray-workers N`` (or ``--address auto``, or ``local`` for a
Ray started here) runs the same :func:`voxforge.models.train.train` in N Ray Train workers, whose
process group Ray Train has already set up. Every rank reads its own shards (the loaders split shards
by rank, then by DataLoader worker); only rank 0 writes checkpoints, metrics and TensorBoard logs.
On several machines, ``--out`` must be storage that every node sees (rank 0 writes; all ranks read the
checkpoint on ``--resume``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Distributed:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: str) -> Distributed:
    """The process's rank and device; joins the torchrun process group when one is announced.

    ``device`` is the configured one ("cuda", "cuda:1", "cpu"); with several local ranks, plain "cuda"
    becomes ``cuda:LOCAL_RANK``.
    """
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and dist.is_available() and not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        # the loaders' DataLoader worker processes read RANK / WORLD_SIZE to pick their shards
        os.environ["RANK"], os.environ["WORLD_SIZE"] = str(rank), str(world)
    else:
        rank, world, local_rank = 0, 1, 0
    resolved = torch.device(device)
    if resolved.type == "cuda" and resolved.index is None and world > 1:
        resolved = torch.device("cuda", local_rank)
    if resolved.type == "cuda" and resolved.index is not None:  # plain "cuda" keeps the current device
        torch.cuda.set_device(resolved)
    return Distributed(rank, world, local_rank, resolved)


def all_ranks_have(flag: bool, state: Distributed) -> bool:
    """True when every rank has ``flag``: ranks stop together when any one's batch stream ends."""
    return agree(flag, 0, state)[0]


def agree(have_batch: bool, stop: int, state: Distributed) -> tuple[bool, int]:
    """One all_reduce per iteration for two questions: does every rank have a batch, and the largest stop
    code any rank was given (0: none; :class:`voxforge.models.stopping.Stopper`), so that all ranks end
    at the same iteration, whichever of them got the signal or ran out of data."""
    if state.world_size == 1:
        return have_batch, stop
    import torch.distributed as dist

    value = torch.tensor([0 if have_batch else 1, int(stop)],
                         device=state.device if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    missing, code = value.tolist()
    return not missing, int(code)


def wrap(model: torch.nn.Module, state: Distributed) -> torch.nn.Module:
    """DistributedDataParallel around ``model`` when there are several ranks; the model itself otherwise."""
    if state.world_size == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [state.device.index] if state.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def _ray_worker(settings: dict) -> dict:
    """Ray Train's per-worker loop: the same batches and :func:`train` as a single process."""
    import ray.train
    import ray.train.torch

    from voxforge.models.data import training_batches
    from voxforge.models.train import TrainConfig, train

    config = TrainConfig(**settings["config"])
    config.device = str(ray.train.torch.get_device())
    rank = ray.train.get_context().get_world_rank()
    batches = training_batches(settings["data"], config.batch_size, config.views, settings["workers"], config.seed)
    result = train(config, batches, settings["out"], resume=settings["resume"],
                   progress=settings["progress"] and rank == 0)
    return {"iteration": result["iteration"], "loss": result["losses"][-1] if result["losses"] else float("nan"),
            "stopped": result["stopped"],
            "world_size": result["world_size"], "iterations_per_second": result["iterations_per_second"],
            "images_per_second": result["images_per_second"], "data_wait_share": result["data_wait_share"]}


def train_with_ray(config, data: str, out: str | Path, address: str | None, workers: int, loader_workers: int = 2,
                   resume: bool = False, use_gpu: bool | None = None, progress: bool = True) -> dict:
    """Run :func:`voxforge.models.train.train` on ``workers`` Ray Train workers (DDP among them).

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
