"""The download stage: a Ray Data map that fetches each object's mesh just before the render actors need it.

It runs as one Ray actor with ``num_cpus=0`` (downloads wait on the network, not a core, and the
render actors hold every CPU) taking ``--downloads`` objects at a time in threads, so downloads
overlap rendering instead of all happening first. A :class:`StagingGate` bounds how many fetched objects wait on disk;
the render worker releases an object's slot, and evicts its mesh (unless ``--keep-meshes``), once the
object's sample is made. A failed download never fails the task: it becomes the object's
``fetch_error`` and the render worker records the object as failed with that reason.
"""

from __future__ import annotations

import json
from pathlib import Path

from voxforge.loaders import format as fmt
from voxforge.pipeline.downloads.cache import StagingGate, evict
from voxforge.pipeline.downloads.hub import redact


def staging_dir(out: str | Path, run_token: str) -> Path:
    return Path(out) / fmt.WORK_DIR / "staged" / run_token


class Downloader:
    """A Ray Data actor (``num_cpus=0``) whose calls run ``--downloads`` at a time in threads: downloads wait
    on the network, so one process with a thread per download is enough (no process per download)."""

    def __init__(self, out: str, run_token: str, staged_limit: int, keep_meshes: bool) -> None:
        self.gate = StagingGate(staging_dir(out, run_token), staged_limit)
        self.keep_meshes = keep_meshes

    def __call__(self, batch: dict) -> dict:
        """Materialize each record's mesh in the cache; adds a ``fetch_error`` column ("" when fine)."""
        import numpy as np

        from voxforge.pipeline.downloads.materialize import cached_path, ensure_local
        from voxforge.pipeline.sources import ObjectRecord

        errors = []
        for text in batch["record"]:
            record = ObjectRecord.from_row(json.loads(str(text)))
            if not record.fetch:
                errors.append("")
                continue
            self.gate.wait_for_slot()
            try:
                _, downloaded = ensure_local(record.fetch)
                evict_path = str(cached_path(record.fetch)) if downloaded and not self.keep_meshes else None
                self.gate.stage(record.object_id, evict_path)
                errors.append("")
            except Exception as error:  # one object's download never stops the run
                errors.append(redact(f"download: {error}"))
        return {**batch, "fetch_error": np.array(errors, dtype=object)}


def release_staged(out: str | Path, run_token: str, object_id: str) -> None:
    """Called by the render worker when the object's sample is made: free its slot, evict its mesh."""
    path = StagingGate(staging_dir(out, run_token), 1).release(object_id)
    if path:
        evict(path)
