"""Shard tasks as a Ray Data source, read from the run's plan file: the plan never sits in the driver.

The driver streams the selection through :class:`voxforge.pipeline.plan.Planner` into a plan file (one
JSON line per shard task) under the output (``.voxforge/plans/<run>.jsonl``), keeping only where each
line starts: 8 bytes per task. Each Ray read task fetches one line (a ranged read: a byte range of a
local file or one ranged GET on an object store), so each shard task is its own block; Ray Data hands
a block to one actor, and a block per task spreads the tasks over the whole actor pool.
"""

from __future__ import annotations

import json
from array import array
from functools import partial

from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask


def _read_task(url: str, relative: str, start: int, end: int):
    """One task's row, with ``error`` "" (or, when the plan cannot be read, why: the worker that receives
    that row reports it, so the driver says it in one line instead of Ray failing the run)."""
    import pyarrow as pa

    from voxforge.storage import location, storage_problem

    where = location(url)
    try:
        row = {**json.loads(where.fs.cat_file(where.path(relative), start=start, end=end)), "error": ""}
    except OSError as problem:
        row = {"split": "", "index": -1, "records": "[]",
               "error": f"cannot read the run's plan from {url}: {storage_problem(problem)}"}
    return [pa.Table.from_pylist([row])]


class ShardTaskSource(Datasource):
    """The tasks of the plan file ``relative`` under the output ``url``; ``starts`` holds each line's offset
    and, last, the file's size."""

    def __init__(self, url: str, relative: str, starts: array) -> None:
        self.url, self.relative, self.starts = url, relative, starts

    def estimate_inmemory_data_size(self) -> int:
        return int(self.starts[-1]) if len(self.starts) else 0

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                       data_context=None) -> list[ReadTask]:
        return [ReadTask(partial(_read_task, self.url, self.relative, start, end),
                         BlockMetadata(num_rows=1, size_bytes=end - start, exec_stats=None, input_files=None))
                for start, end in zip(self.starts[:-1], self.starts[1:])]
