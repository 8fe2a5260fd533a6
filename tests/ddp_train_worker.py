"""Run under ``torchrun --nproc-per-node 2``: one DDP training run over a shard dataset on CPUs (gloo).

Each rank writes ``OUT/rank<R>.json`` with the object ids it read and a checksum of its final weights,
so the test can check that ranks read disjoint shards and ended with the same (synchronized) model.
With ``stop``, rank 1 alone sends itself SIGUSR1 while reading its second batch: both ranks must stop
after iteration 2. With ``softras``, the mesh model trains instead of 3D-R2N2 (two views per object), on
the same engine.
Usage: python -m torch.distributed.run --nproc-per-node 2 tests/ddp_train_worker.py DATA OUT [stop] [softras]
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import torch

from voxforge.models import distributed
from voxforge.models.data import shard_batches
from voxforge.models.r2n2.train import TrainConfig, train


def main(data: str, out: str, stop: bool = False, softras: bool = False) -> None:
    state = distributed.setup("cpu")
    seen: list[str] = []

    def recording(batches):
        for count, batch in enumerate(batches):
            if stop and state.rank == 1 and count == 1:
                os.kill(os.getpid(), signal.SIGUSR1)
            seen.extend(batch["id"])
            yield batch

    if softras:
        from voxforge.models.softras.train import SoftRasConfig, train_softras

        config = SoftRasConfig(width=0.125, iterations=3, batch_size=1, lr=1e-3, device="cpu", log_every=1,
                               checkpoint_every=10**6)
        result = train_softras(config, recording(shard_batches(data, 1, (2, 2), workers=0)), Path(out) / "run",
                               progress=False)
    else:
        config = TrainConfig(arch="3d-gru-1", width=0.125, image_size=64, iterations=3, batch_size=1, views=(1, 2),
                             lr=1e-3, device="cpu", log_every=1, checkpoint_every=10**6, batch_norm=True)
        result = train(config, recording(shard_batches(data, 1, (1, 2), workers=0)), Path(out) / "run",
                       progress=False)
    weights = torch.cat([p.detach().flatten() for p in result["model"].parameters()])
    record = {"rank": state.rank, "world_size": state.world_size, "ids": seen, "iteration": result["iteration"],
              "stopped": result["stopped"],
              "weights_sum": float(weights.double().sum()), "weights_abs": float(weights.double().abs().sum())}
    (Path(out) / f"rank{state.rank}.json").write_text(json.dumps(record))
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], stop="stop" in sys.argv[3:], softras="softras" in sys.argv[3:])
