"""What a run has committed: one manifest per shard, merged into ``manifest.jsonl``.

Each shard task writes ``.voxforge/shards/<split>/shard-NNNNNN.json`` (one row per object of the
task: ok rows with their sample keys, failed rows with their reasons; the tar's size and sha256),
then the tar itself. A shard is **committed** when its manifest exists and so does its tar with the
recorded size (or it holds no ok object, hence no tar). The manifest goes first, so any tar a reader
can list has its manifest beside it; a manifest whose tar never arrived is a task that did not finish,
and its shard is made again.

``manifest.jsonl`` (one line per object, latest row of an id wins) is derived from the committed
shard manifests at the end of a run and on resume, so it never needs the driver's memory.
"""

from __future__ import annotations

import hashlib
import io
import json
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from voxforge.loaders import format as fmt
from voxforge.loaders.shards import shard_index, shard_name
from voxforge.loaders.tar_stream import group_samples, iter_tar_members
from voxforge.pipeline.splits import SPLITS
from voxforge.storage import Location, location

READ_BATCH = 256  # shard manifests fetched at once (object stores fetch a batch concurrently)


def manifest_row(meta: dict, status: str, error: str = "", shard: str = "", key: str = "",
                 warnings: list[str] | None = None, object_luma: list | None = None) -> dict:
    row = {
        "id": meta["id"], "category": meta.get("category", ""), "source": meta.get("source", ""),
        "split": meta.get("split", ""), "license": meta.get("license", ""), "status": status,
        "error": error, "shard": shard, "key": key, "warnings": list(warnings or []),
    }
    if object_luma is not None:  # ok samples: what pipeline inspect checks for dark or empty renders
        row["object_luma"] = list(object_luma)
    extra = meta.get("extra") or {}
    if extra.get("source_url"):  # attribution of downloaded objects (CC-BY asks for author and source)
        row.update(author=extra.get("author", ""), source_url=extra["source_url"])
    return row


def shard_manifest_path(split: str, index: int) -> str:
    return f"{fmt.SHARD_MANIFESTS}/{split}/{shard_name(index)[:-len(fmt.SHARD_SUFFIX)]}.json"


@dataclass
class ShardManifest:
    """One shard task's outcome: its rows (ok and failed) and the tar's size and sha256."""

    split: str
    index: int
    rows: list[dict] = field(default_factory=list)
    bytes: int = 0
    sha256: str = ""
    run: str = ""

    @property
    def name(self) -> str:
        """``train/shard-000003.tar``: the tar's path in the dataset."""
        return f"{self.split}/{shard_name(self.index)}"

    @property
    def ok(self) -> int:
        return sum(row["status"] == "ok" for row in self.rows)

    def to_json(self) -> bytes:
        return json.dumps({"format_version": fmt.FORMAT_VERSION, "shard": self.name, "split": self.split,
                           "index": self.index, "objects": len(self.rows), "ok": self.ok, "bytes": self.bytes,
                           "sha256": self.sha256, "run": self.run, "rows": self.rows}, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> "ShardManifest":
        value = json.loads(data)
        return cls(split=value["split"], index=int(value["index"]), rows=value["rows"], bytes=int(value["bytes"]),
                   sha256=value.get("sha256", ""), run=value.get("run", ""))


def committed_shards(where: Location) -> Iterator[ShardManifest]:
    """The committed shards' manifests, split by split in shard order.

    A tar without a manifest (a dataset from before per-shard manifests, or one whose ``.voxforge``
    was deleted) gets one rebuilt from its samples' metadata (failed objects of such shards are not
    known, so they are tried again).
    """
    for split in SPLITS:
        tars = {shard_index(name): size for name, size in where.list_files(split).items()
                if shard_index(name) is not None}
        listed = sorted(index for name in where.list_files(f"{fmt.SHARD_MANIFESTS}/{split}")
                        if name.endswith(".json") and (index := shard_index(name[:-5] + fmt.SHARD_SUFFIX)) is not None)
        seen = set()
        for start in range(0, len(listed), READ_BATCH):
            batch = [shard_manifest_path(split, i) for i in listed[start:start + READ_BATCH]]
            for manifest in sorted(_parse_all(where.read_many(batch).values()), key=lambda m: m.index):
                seen.add(manifest.index)
                if manifest.ok == 0 or tars.get(manifest.index) == manifest.bytes:
                    yield manifest
        for index in sorted(set(tars) - seen):
            yield recover_shard_manifest(where, split, index)


def count_safely_written(where: Location) -> int | None:
    """Objects the committed shards hold (shard manifests whose tar is complete): what a run that stopped
    on a storage error leaves usable. None when the location cannot be read."""
    made: set[int] = set()
    try:
        for manifest in committed_shards(where):
            made.update(id_hash(row["id"]) for row in manifest.rows if row["status"] == "ok")
    except OSError:
        return None
    return len(made)


def _parse_all(documents: Iterable[bytes]) -> Iterator[ShardManifest]:
    for data in documents:
        try:
            yield ShardManifest.from_json(data)
        except (ValueError, KeyError):
            continue  # unreadable: treated as absent, so the shard is made again


def recover_shard_manifest(where: Location, split: str, index: int) -> ShardManifest:
    """Rebuild (and write) the manifest of a tar that has none, from its samples' own metadata."""
    name = f"{split}/{shard_name(index)}"
    data = where.read_bytes(name)  # one shard: tens of MB at most
    manifest = ShardManifest(split=split, index=index, bytes=len(data), sha256=hashlib.sha256(data).hexdigest(),
                             run="recovered")
    for key, members in group_samples(iter_tar_members(io.BytesIO(data), where.url_of(name))):
        meta = json.loads(members[fmt.META])
        manifest.rows.append(manifest_row(meta, "ok", shard=name, key=key, warnings=meta.get("warnings"),
                                          object_luma=meta.get("object_luma")))
    where.write_bytes(shard_manifest_path(split, index), manifest.to_json())
    return manifest


def id_hash(object_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(object_id.encode(), digest_size=8).digest(), "little")


class IdSet:
    """Object ids held as sorted 64-bit hashes: 8 bytes per id, so 10M finished objects take 80 MB."""

    def __init__(self, hashes: array | None = None) -> None:
        self._hashes = np.unique(np.frombuffer(hashes, dtype=np.uint64)) if hashes else np.empty(0, np.uint64)

    def __len__(self) -> int:
        return len(self._hashes)

    def __contains__(self, object_id: str) -> bool:
        value = np.uint64(id_hash(object_id))
        position = int(np.searchsorted(self._hashes, value))
        return position < len(self._hashes) and self._hashes[position] == value


@dataclass
class CommittedState:
    """What the committed shards say: finished ids and the shard numbers taken per split."""

    ok: IdSet
    failed: IdSet
    taken: dict[str, set[int]]

    def finished(self, retry_failed: bool):
        """A test ``object_id -> bool``: already made (or failed, unless failures are retried)."""
        if retry_failed:
            return lambda object_id: object_id in self.ok
        return lambda object_id: object_id in self.ok or object_id in self.failed


@dataclass
class MergedCounts:
    """Counts of the merged manifest: ok objects per split and category, failures, shards, licences."""

    per_split: Counter = field(default_factory=Counter)
    per_category: Counter = field(default_factory=Counter)
    licenses: Counter = field(default_factory=Counter)
    shards: dict[str, list[str]] = field(default_factory=lambda: {split: [] for split in SPLITS})
    failed: int = 0
    credited: int = 0
    authors: set = field(default_factory=set)
    state: CommittedState | None = None

    @property
    def objects(self) -> int:
        return sum(self.per_split.values())


def merge_manifests(where: Location, attribution_file: str) -> MergedCounts:
    """Write ``manifest.jsonl`` (and ``attribution.csv`` when objects carry a source URL) from the
    committed shard manifests, and gather what a resume needs (:class:`CommittedState`), in one pass.

    Streaming: memory holds one batch of shard manifests, 8 bytes per finished id and the ids of
    failed objects, never the rows of the whole dataset.
    """
    import csv

    counts = MergedCounts()
    failed_ids: set[str] = set()
    ok_hashes, failed_hashes = array("Q"), array("Q")  # 8 bytes per id, not a Python int each
    taken: dict[str, set[int]] = {split: set() for split in SPLITS}
    manifest_file = where.staging_file(fmt.MANIFEST_FILE)
    credits_file = where.staging_file(attribution_file)
    try:
        with open(manifest_file, "w") as lines, open(credits_file, "w", newline="") as credits:
            writer = csv.writer(credits)
            writer.writerow(["id", "author", "license", "source_url"])
            for manifest in committed_shards(where):
                taken[manifest.split].add(manifest.index)
                buffer = io.StringIO()
                for row in manifest.rows:
                    buffer.write(json.dumps(row, sort_keys=True) + "\n")
                    if row["status"] != "ok":
                        failed_ids.add(row["id"])
                        failed_hashes.append(id_hash(row["id"]))
                        continue
                    failed_ids.discard(row["id"])  # failed once, made by a later --retry-failed run
                    ok_hashes.append(id_hash(row["id"]))
                    counts.per_split[row["split"]] += 1
                    counts.per_category[row["category"]] += 1
                    counts.licenses[row.get("license", "")] += 1
                    if row.get("source_url"):
                        writer.writerow([row["id"], row.get("author", ""), row.get("license", ""), row["source_url"]])
                        counts.credited += 1
                        if row.get("author"):
                            counts.authors.add(row["author"])
                lines.write(buffer.getvalue())
                if manifest.ok:
                    counts.shards[manifest.split].append(manifest.name)
        counts.failed = len(failed_ids)
        where.put_file(manifest_file, fmt.MANIFEST_FILE)
        if counts.credited:
            where.put_file(credits_file, attribution_file)
    finally:
        manifest_file.unlink(missing_ok=True)
        credits_file.unlink(missing_ok=True)
    counts.state = CommittedState(IdSet(ok_hashes), IdSet(failed_hashes), taken)
    return counts


class Manifest:
    """``manifest.jsonl`` of a dataset (a folder or a URL), read back."""

    def __init__(self, out) -> None:
        self.where = out if isinstance(out, Location) else location(out)

    def rows(self) -> dict[str, dict]:
        """Latest row per object id (a retried object's newer row wins)."""
        latest: dict[str, dict] = {}
        try:
            text = self.where.read_text(fmt.MANIFEST_FILE)
        except FileNotFoundError:
            return latest
        for line in text.splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except ValueError:
                continue
            latest[row["id"]] = row
        return latest

