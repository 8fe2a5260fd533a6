"""From the selected records to shard tasks: the unit of work, of writing and of resume.

Per split, the records still to do (in selection order) are cut into runs of ``K`` objects; each run
is one shard task and gets the lowest shard number of its split that no committed shard holds. So
the same selection over the same committed shards always gives the same tasks, and a run killed
midway and started again makes exactly the shards it would have made uninterrupted: the remaining
records are the uncommitted runs themselves, whole and in order, and they fall on the same numbers.

``K`` is ``--shard-size``, lowered per split so that a split has at least ``--min-shards`` shards
when it has that many objects: training readers (ranks x loader workers) each get shards of their own.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from voxforge.pipeline.sources import ObjectRecord
from voxforge.pipeline.splits import SPLITS


@dataclass
class ShardTask:
    """One shard to make: ``split``, its number ``index`` and the records it holds, in order."""

    split: str
    index: int
    records: list[ObjectRecord] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.split}-{self.index:06d}"

    def to_row(self) -> dict:
        """A flat row for Ray Data (the records as one JSON string)."""
        return {"split": self.split, "index": self.index, "records": json.dumps([r.to_row() for r in self.records])}

    @classmethod
    def from_row(cls, row: dict) -> "ShardTask":
        return cls(split=str(row["split"]), index=int(row["index"]),
                   records=[ObjectRecord.from_row(r) for r in json.loads(str(row["records"]))])


def shard_sizes(selected_per_split: Counter, shard_size: int, min_shards: int) -> dict[str, int]:
    """Objects per shard for each split: ``shard_size``, or fewer so the split gets ``min_shards`` shards."""
    return {split: _shard_size(selected_per_split.get(split, 0), shard_size, min_shards) for split in SPLITS}


def _shard_size(selected: int, shard_size: int, min_shards: int) -> int:
    return max(1, min(shard_size, math.ceil(selected / max(1, min_shards))))


def _free_numbers(taken: set[int]) -> Iterator[int]:
    number = 0
    while True:
        if number not in taken:
            yield number
        number += 1


class Planner:
    """Turns a stream of selected records into shard tasks as they fill (see the module docstring).

    Memory: per split at most ``shard_size x min_shards`` pending records (until the split is known to
    be large enough for full shards), then one shard's worth; never the whole selection.

    ``split_of``: a record's split; ``finished``: whether an object id is already done; ``taken``: shard
    numbers per split that committed shards hold.
    """

    def __init__(self, split_of: Callable[[ObjectRecord], str], finished: Callable[[str], bool],
                 taken: dict[str, set[int]], shard_size: int, min_shards: int) -> None:
        self.split_of, self.finished = split_of, finished
        self.shard_size, self.min_shards = shard_size, min_shards
        self.numbers = {split: _free_numbers(taken.get(split, set())) for split in SPLITS}
        self.pending: dict[str, list[ObjectRecord]] = {split: [] for split in SPLITS}
        self.selected_per_split: Counter = Counter()
        self.per_category: Counter = Counter()
        self.skipped = 0
        self.objects = 0  # in tasks so far
        self.tasks = 0

    @property
    def selected(self) -> int:
        return sum(self.selected_per_split.values())

    def _size(self, split: str) -> int | None:
        """Objects per shard of ``split`` once known: full shards as soon as the split has enough objects."""
        if self.selected_per_split[split] >= self.shard_size * self.min_shards:
            return self.shard_size
        return None

    def _cut(self, split: str, size: int, whole_only: bool) -> list[ShardTask]:
        pending, tasks = self.pending[split], []
        while len(pending) >= size or (pending and not whole_only):
            chunk, pending = pending[:size], pending[size:]
            tasks.append(ShardTask(split, next(self.numbers[split]), chunk))
        self.pending[split] = pending
        self.tasks += len(tasks)
        self.objects += sum(len(task.records) for task in tasks)
        return tasks

    def add(self, record: ObjectRecord) -> list[ShardTask]:
        """Take one selected record; returns the tasks it completed (usually none)."""
        split = self.split_of(record)
        self.selected_per_split[split] += 1
        self.per_category[record.category] += 1
        if self.finished(record.object_id):
            self.skipped += 1
            return []
        self.pending[split].append(record)
        size = self._size(split)
        return self._cut(split, size, whole_only=True) if size else []

    def finish(self) -> list[ShardTask]:
        """The remaining tasks, once every record was added."""
        tasks = []
        for split in SPLITS:
            size = self._size(split) or _shard_size(self.selected_per_split[split], self.shard_size, self.min_shards)
            tasks += self._cut(split, size, whole_only=False)
        return tasks


@dataclass
class Plan:
    tasks: list[ShardTask]
    skipped: int  # selected records already finished
    selected: int

    @property
    def objects(self) -> int:
        return sum(len(task.records) for task in self.tasks)


def plan_shards(records: Iterable[ObjectRecord], split_of: Callable[[ObjectRecord], str],
                finished: Callable[[str], bool], taken: dict[str, set[int]], shard_size: int,
                min_shards: int) -> Plan:
    """Every shard task for ``records`` at once (:class:`Planner` for a stream)."""
    planner = Planner(split_of, finished, taken, shard_size, min_shards)
    tasks = [task for record in records for task in planner.add(record)]
    tasks += planner.finish()
    return Plan(tasks, planner.skipped, planner.selected)
