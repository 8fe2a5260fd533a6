"""``manifest.jsonl``: one line per finished object (ok or failed), appended and fsynced as shards commit.

A row is written only after the shard holding the object is complete, so the manifest never points at
a missing sample. If a run dies between renaming a shard and writing its rows, the next run reads the
orphan shard's own metadata and restores the rows (:func:`recover_orphan_shards`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from voxforge.loaders import format as fmt
from voxforge.loaders.shards import iter_shard, shard_paths
from voxforge.pipeline.splits import SPLITS


class Manifest:
    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)
        self.path = self.out / fmt.MANIFEST_FILE

    def rows(self) -> dict[str, dict]:
        """Latest row per object id (a retried object's newer row wins)."""
        latest: dict[str, dict] = {}
        if self.path.exists():
            with self.path.open() as handle:
                for line in handle:
                    line = line.strip()
                    if not line:
                        continue
                    try:
                        row = json.loads(line)
                    except ValueError:
                        continue  # a line cut short by a kill: its object is simply redone
                    latest[row["id"]] = row
        return latest

    def append(self, rows: list[dict]) -> None:
        if not rows:
            return
        with self.path.open("a") as handle:
            handle.write("".join(json.dumps(row, sort_keys=True) + "\n" for row in rows))
            handle.flush()
            os.fsync(handle.fileno())


def manifest_row(meta: dict, status: str, error: str = "", shard: str = "", key: str = "") -> dict:
    row = {
        "id": meta["id"], "category": meta.get("category", ""), "source": meta.get("source", ""),
        "split": meta.get("split", ""), "license": meta.get("license", ""), "status": status,
        "error": error, "shard": shard, "key": key,
    }
    extra = meta.get("extra") or {}
    if extra.get("source_url"):  # attribution of downloaded objects (CC-BY asks for author and source)
        row.update(author=extra.get("author", ""), source_url=extra["source_url"])
    return row


def recover_orphan_shards(manifest: Manifest) -> int:
    """Add rows for complete shards the manifest does not mention; returns how many rows were added."""
    listed = {row["shard"] for row in manifest.rows().values() if row.get("shard")}
    added = []
    for split in SPLITS:
        for path in shard_paths(manifest.out / split):
            shard = f"{split}/{path.name}"
            if shard in listed:
                continue
            for key, members in iter_shard(path):
                meta = json.loads(members[fmt.META])
                added.append(manifest_row(meta, "ok", shard=shard, key=key))
    manifest.append(added)
    return len(added)
