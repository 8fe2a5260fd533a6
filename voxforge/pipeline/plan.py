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
    return {split: max(1, min(shard_size, math.ceil(selected_per_split.get(split, 0) / max(1, min_shards))))
            for split in SPLITS}


def _free_numbers(taken: set[int]) -> Iterator[int]:
    number = 0
    while True:
        if number not in taken:
            yield number
        number += 1


@dataclass
class Plan:
    tasks: list[ShardTask]
    skipped: int  # selected records already finished
    sizes: dict[str, int]

    @property
    def objects(self) -> int:
        return sum(len(task.records) for task in self.tasks)


def plan_shards(records: Iterable[ObjectRecord], split_of: Callable[[ObjectRecord], str],
                finished: Callable[[str], bool], taken: dict[str, set[int]], shard_size: int,
                min_shards: int) -> Plan:
    """Shard tasks for the unfinished ``records`` (see the module docstring).

    ``split_of``: a record's split; ``finished``: whether an object id is already done;
    ``taken``: shard numbers per split that committed shards hold.
    """
    records = list(records)
    splits = [split_of(record) for record in records]
    sizes = shard_sizes(Counter(splits), shard_size, min_shards)
    numbers = {split: _free_numbers(taken.get(split, set())) for split in SPLITS}
    pending: dict[str, list[ObjectRecord]] = {split: [] for split in SPLITS}
    tasks, skipped = [], 0
    for record, split in zip(records, splits):
        if finished(record.object_id):
            skipped += 1
            continue
        pending[split].append(record)
        if len(pending[split]) == sizes[split]:
            tasks.append(ShardTask(split, next(numbers[split]), pending[split]))
            pending[split] = []
    for split in SPLITS:
        if pending[split]:
            tasks.append(ShardTask(split, next(numbers[split]), pending[split]))
    return Plan(tasks, skipped, sizes)
