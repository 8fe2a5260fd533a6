"""One training function for every scale: one process, DDP under ``torchrun``, or Ray Train workers.

``torchrun --nproc-per-node N -m voxforge.pipeline.cli train ...`` starts N processes with RANK /
WORLD_SIZE / LOCAL_RANK set; :func:`setup` joins them into a process group (NCCL on GPUs, gloo on CPUs).
``pipeline train --address ray://head:10001 --ray-workers N`` (or ``--address auto``, or ``local`` for a
Ray started here) runs the same training engine (:func:`voxforge.models.engine.fit`) in N Ray Train
workers (:mod:`voxforge.models.ray_train`), whose process group Ray Train has already set up. Every rank reads its own shards (the loaders split shards
by rank, then by DataLoader worker); only rank 0 writes checkpoints, metrics and TensorBoard logs.
On several machines, ``--out`` must be storage that every node sees (rank 0 writes; all ranks read the
checkpoint on ``--resume``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

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
