"""``pipeline export DIR --layout parquet``: one row per object, for tools that want columns.

Files: ``OUT/data/{split}-NNNNN-of-MMMMM.parquet`` (the Hub's naming, so ``datasets.load_dataset(OUT)``
finds the splits; ``val`` is written as ``validation``). Columns are listed in docs/FORMAT.md. Views
stay PNG bytes (as in the shards: decoding is the reader's choice), stored as ``datasets`` Image
structs ``{bytes, path}`` with the ``huggingface`` schema metadata, so ``datasets`` decodes them to
images while pandas, DuckDB or Polars see plain binary. Each file is written under a temporary name
and renamed when complete.

The export loads with every ``datasets`` from 2.14 on: the schema metadata names only feature types
all of them know (``Value``, ``Image``, ``Sequence``; 4.0 and later read ``Sequence`` as ``List``), and
the sample metadata is a plain ``string`` column holding the ``json`` member's text (``json.loads`` it),
not the ``Json`` type that only ``datasets`` >= 4.7 has; ``depth`` is float32 (the shards' float16 widened,
exactly), as pyarrow before 15 cannot open a Parquet file with float16 columns. Writing needs pyarrow only.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from voxforge.loaders import format as fmt
from voxforge.loaders.hf import HF_SPLIT_NAMES

ROWS_PER_FILE = 1000
ROWS_PER_GROUP = 16  # rows are large (all views and points): small row groups keep readers' memory low


def _value(dtype: str) -> dict:
    return {"dtype": dtype, "_type": "Value"}


def _sequence(feature: dict) -> dict:
    return {"feature": feature, "length": -1, "_type": "Sequence"}


_IMAGE = {"_type": "Image"}


def _arrow_type(feature: dict):
    import pyarrow as pa

    if feature["_type"] == "Sequence":
        return pa.list_(_arrow_type(feature["feature"]))
    if feature["_type"] == "Image":
        return pa.struct({"bytes": pa.binary(), "path": pa.string()})
    return getattr(pa, feature["dtype"])()  # string, binary, int32, float32, float64: pyarrow's names too


def parquet_columns(has_depth: bool = False) -> dict[str, dict]:
    """Column -> its ``datasets`` feature as ``Features.to_dict`` writes it, in the form every ``datasets``
    since 2.14 reads (``Sequence``, never ``List``/``Json``)."""
    text, f64, f32 = _value("string"), _value("float64"), _value("float32")
    columns = {
        "id": text, "key": text, "category": text, "split": text, "source": text, "license": text,
        "synset_id": text, "model_id": text, "image_size": _value("int32"),
        "images": _sequence(_IMAGE), "masks": _sequence(_IMAGE),
        "azimuth": _sequence(f64), "elevation": _sequence(f64), "distance": _sequence(f64),
        "K": _sequence(_sequence(_sequence(f64))), "world_to_camera": _sequence(_sequence(_sequence(f64))),
        "voxels_binvox": _value("binary"), "voxel_resolution": _value("int32"),
        "voxel_origin": _sequence(f64), "voxel_size": f64,
        "points": _sequence(_sequence(f32)), "normals": _sequence(_sequence(f32)),
        "metadata": text,  # the json member's text: json.loads(row["metadata"])
    }
    if has_depth:  # float32, not the shards' float16: pyarrow < 15 cannot open a Parquet file with float16 columns
        columns["depth"] = _sequence(_sequence(_sequence(f32)))
    return columns


def parquet_schema(has_depth: bool = False):
    """The Arrow schema of the export, with the ``huggingface`` metadata ``datasets`` reads its features from."""
    import json

    import pyarrow as pa

    columns = parquet_columns(has_depth)
    metadata = {"huggingface": json.dumps({"info": {"features": columns}})}
    return pa.schema([pa.field(name, _arrow_type(feature)) for name, feature in columns.items()], metadata=metadata)


def parquet_features(has_depth: bool = False):
    """The ``datasets.Features`` the export loads as (needs ``datasets``)."""
    from datasets import Features

    return Features.from_arrow_schema(parquet_schema(has_depth))


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
        "metadata": members[fmt.META].decode("utf-8"),  # the member as written: JSON text
    }
    if fmt.DEPTH in members:
        row["depth"] = np.load(io.BytesIO(members[fmt.DEPTH]))
    return row


def _nested_lists(arrays: list[np.ndarray], dtype):
    """Nested Arrow lists (one per row) of n-dimensional arrays, built from their flat values and offsets."""
    import pyarrow as pa

    arrays = [np.asarray(a, dtype) for a in arrays]
    nested = pa.array(np.concatenate([a.reshape(-1) for a in arrays]))
    for level in range(arrays[0].ndim - 1, -1, -1):  # innermost lists first
        lengths = np.concatenate([np.full(int(np.prod(a.shape[:level])), a.shape[level], np.int64) for a in arrays])
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
        nested = pa.ListArray.from_arrays(pa.array(offsets), nested)
    return nested


def _arrow_table(rows: list[dict], schema):
    import pyarrow as pa

    columns = {}
    for name in schema.names:
        values = [row.get(name) for row in rows]
        if name in ("points", "normals", "depth"):
            columns[name] = _nested_lists(values, np.float32)
        else:
            columns[name] = pa.array(values, schema.field(name).type)
    return pa.Table.from_pydict(columns, schema=schema)


def export_parquet(dataset: str | Path, out: str | Path, split: str | None = None,
                   rows_per_file: int = ROWS_PER_FILE) -> dict[str, int]:
    """Write each split's samples as Parquet; returns rows written per split."""
    import pyarrow.parquet as pq

    from voxforge.loaders.dataset import VoxforgeDataset, iter_any_shard, resolve_shards

    source = VoxforgeDataset(dataset, split)  # checks the folder and its format version
    has_depth = bool(source.info["config"].get("save_depth"))
    schema = parquet_schema(has_depth)
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
                    writer, in_file = pq.ParquetWriter(partial, schema, compression="zstd"), 0
                batch.append(_row(key, members))
                rows, in_file = rows + 1, in_file + 1
                if len(batch) >= ROWS_PER_GROUP or in_file == rows_per_file:
                    writer.write_table(_arrow_table(batch, schema), row_group_size=ROWS_PER_GROUP)
                    batch = []
                if in_file == rows_per_file:
                    writer.close()
                    os.replace(partial, target)
                    writer = None
        if writer is not None:
            if batch:
                writer.write_table(_arrow_table(batch, schema), row_group_size=ROWS_PER_GROUP)
            writer.close()
            os.replace(partial, target)
        written[name] = rows
        if rows != total:
            raise ValueError(f"{name}: {rows} samples in the shards but {total} in {fmt.DATASET_FILE}")
    return written
