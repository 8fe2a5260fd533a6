"""``pipeline export DIR --layout parquet``: one row per object, for tools that want columns.

Files: ``OUT/data/{split}-NNNNN-of-MMMMM.parquet`` (the Hub's naming, so ``datasets.load_dataset(OUT)``
finds the splits; ``val`` is written as ``validation``). Columns are listed in docs/FORMAT.md. Views
stay PNG bytes (as in the shards: decoding is the reader's choice), stored as ``datasets`` Image
structs ``{bytes, path}`` with the ``huggingface`` schema metadata, so ``datasets`` decodes them to
images while pandas, DuckDB or Polars see plain binary. Each file is written under a temporary name
and renamed when complete.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from voxforge.loaders import format as fmt
from voxforge.loaders.hf import HF_SPLIT_NAMES

ROWS_PER_FILE = 1000
ROWS_PER_GROUP = 16  # rows are large (all views and points): small row groups keep readers' memory low


def parquet_features(has_depth: bool = False):
    from datasets import Features, Image, Json, List, Value

    columns = {
        "id": Value("string"), "key": Value("string"), "category": Value("string"), "split": Value("string"),
        "source": Value("string"), "license": Value("string"), "synset_id": Value("string"),
        "model_id": Value("string"), "image_size": Value("int32"),
        "images": List(Image()), "masks": List(Image()),
        "azimuth": List(Value("float64")), "elevation": List(Value("float64")), "distance": List(Value("float64")),
        "K": List(List(List(Value("float64")))), "world_to_camera": List(List(List(Value("float64")))),
        "voxels_binvox": Value("binary"), "voxel_resolution": Value("int32"),
        "voxel_origin": List(Value("float64")), "voxel_size": Value("float64"),
        "points": List(List(Value("float32"))), "normals": List(List(Value("float32"))),
        "metadata": Json(),
    }
    if has_depth:
        columns["depth"] = List(List(List(Value("float16"))))
    return Features(columns)


def _row(key: str, members: dict[str, bytes]) -> dict:
    import io
    import json

    meta = json.loads(members[fmt.META])
    cameras, views = meta["cameras"], meta["views"]
    row = {
        "id": meta["id"], "key": key, "category": meta["category"], "split": meta["split"],
        "source": meta.get("source", ""), "license": meta.get("license", ""),
        "synset_id": meta.get("synset_id", ""), "model_id": meta.get("model_id", ""),
        "image_size": meta["image_size"],
        "images": [{"bytes": members[fmt.image_member(v)], "path": None} for v in range(views)],
        "masks": [{"bytes": members[fmt.mask_member(v)], "path": None} for v in range(views)],
        "azimuth": cameras["azimuth"], "elevation": cameras["elevation"], "distance": cameras["distance"],
        "K": cameras["K"], "world_to_camera": cameras["world_to_camera"],
        "voxels_binvox": members[fmt.VOXELS], "voxel_resolution": meta["voxels"]["resolution"],
        "voxel_origin": meta["voxels"]["origin"], "voxel_size": meta["voxels"]["voxel_size"],
        "points": np.load(io.BytesIO(members[fmt.POINTS])), "normals": np.load(io.BytesIO(members[fmt.NORMALS])),
        "metadata": json.dumps(meta, sort_keys=True),
    }
    if fmt.DEPTH in members:
        row["depth"] = np.load(io.BytesIO(members[fmt.DEPTH]))
    return row


def _arrow_table(rows: list[dict], features):
    import pyarrow as pa

    columns = {}
    for name, feature in features.items():
        values = [row.get(name) for row in rows]
        if name in ("points", "normals"):
            flat = pa.array(np.concatenate([v.reshape(-1) for v in values]), pa.float32())
            offsets = np.cumsum([0] + [len(v) for v in values], dtype=np.int32)
            inner = pa.ListArray.from_arrays(pa.array(np.arange(0, len(flat) + 1, 3, dtype=np.int32)), flat)
            columns[name] = pa.ListArray.from_arrays(pa.array(offsets), inner)
        elif name == "depth":
            columns[name] = pa.array([v.tolist() for v in values], features.arrow_schema.field(name).type)
        else:
            columns[name] = pa.array(values, features.arrow_schema.field(name).type)
    return pa.Table.from_pydict(columns, schema=features.arrow_schema)


def export_parquet(dataset: str | Path, out: str | Path, split: str | None = None,
                   rows_per_file: int = ROWS_PER_FILE) -> dict[str, int]:
    """Write each split's samples as Parquet; returns rows written per split."""
    import pyarrow.parquet as pq

    from voxforge.loaders.dataset import VoxforgeDataset, iter_any_shard, resolve_shards

    source = VoxforgeDataset(dataset, split)  # checks the folder and its format version
    has_depth = bool(source.info["config"].get("save_depth"))
    features = parquet_features(has_depth)
    folder = Path(out) / "data"
    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, int] = {}
    for name in source.splits:
        total = source.info["counts"]["per_split"].get(name, 0)
        if not total:
            continue
        files = max(1, -(-total // rows_per_file))
        writer, partial, target, batch, rows, in_file = None, None, None, [], 0, 0
        for shard in resolve_shards(dataset, name):
            for key, members in iter_any_shard(shard):
                if writer is None:
                    target = folder / f"{HF_SPLIT_NAMES[name]}-{rows // rows_per_file:05d}-of-{files:05d}.parquet"
                    partial = target.with_name(target.name + ".partial")
                    writer, in_file = pq.ParquetWriter(partial, features.arrow_schema, compression="zstd"), 0
                batch.append(_row(key, members))
                rows, in_file = rows + 1, in_file + 1
                if len(batch) >= ROWS_PER_GROUP or in_file == rows_per_file:
                    writer.write_table(_arrow_table(batch, features), row_group_size=ROWS_PER_GROUP)
                    batch = []
                if in_file == rows_per_file:
                    writer.close()
                    os.replace(partial, target)
                    writer = None
        if writer is not None:
            if batch:
                writer.write_table(_arrow_table(batch, features), row_group_size=ROWS_PER_GROUP)
            writer.close()
            os.replace(partial, target)
        written[name] = rows
        if rows != total:
            raise ValueError(f"{name}: {rows} samples in the shards but {total} in {fmt.DATASET_FILE}")
    return written
