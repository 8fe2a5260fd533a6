"""Reading a voxforge dataset (a folder or a URL) back as sample dicts of numpy arrays."""

from __future__ import annotations

import glob
import io
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from voxforge.loaders import format as fmt
from voxforge.loaders.png import decode_png
from voxforge.loaders.remote import is_remote, iter_remote_shard, open_stream, resolve_remote_shards
from voxforge.loaders.shards import iter_shard, shard_paths
from voxforge.voxelize.binvox import decode_binvox

SPLITS = fmt.SPLITS
PER_VIEW = ("azimuth", "elevation", "distance", "focal_normalized", "K", "world_to_camera")


def decode_sample(members: dict[str, bytes], views: list[int] | None = None, meta: dict | None = None) -> dict:
    """One sample's shard members -> the documented dict (see docs/FORMAT.md).

    ``views``: decode only these views (training uses a few of the 24; PNG decoding dominates).
    ``meta``: the already parsed ``json`` member, when the caller has it.
    """
    meta = json.loads(members[fmt.META]) if meta is None else meta
    views = list(range(meta["views"])) if views is None else list(views)
    cameras = {k: (np.asarray(v)[views] if k in PER_VIEW else v) for k, v in meta["cameras"].items()}
    size = meta["image_size"]
    images = np.empty((len(views), size, size, 3), np.uint8)
    alphas = np.empty((len(views), size, size), np.uint8)
    for index, view in enumerate(views):
        decode_png(members[fmt.image_member(view)], images[index])
        decode_png(members[fmt.mask_member(view)], alphas[index])
    grid = decode_binvox(members[fmt.VOXELS])
    sample = {
        "id": meta["id"], "category": meta["category"], "split": meta["split"],
        "synset_id": meta.get("synset_id", ""), "model_id": meta.get("model_id", ""),
        "images": images,
        "views": np.asarray(views),
        "masks": alphas >= 128,
        "alphas": alphas,
        "K": np.asarray(cameras["K"], np.float64),
        "world_to_camera": np.asarray(cameras["world_to_camera"], np.float64),
        "azimuth": np.asarray(cameras["azimuth"]), "elevation": np.asarray(cameras["elevation"]),
        "distance": np.asarray(cameras["distance"]),
        "voxels": grid.occupancy, "voxel_origin": grid.origin, "voxel_size": grid.voxel_size,
        "points": np.load(io.BytesIO(members[fmt.POINTS])),
        "normals": np.load(io.BytesIO(members[fmt.NORMALS])),
        "meta": meta,
    }
    if fmt.DEPTH in members:
        sample["depth"] = np.load(io.BytesIO(members[fmt.DEPTH]))[views].astype(np.float32)
    return sample


def read_dataset_info(dataset: str | Path) -> dict:
    """``dataset.json`` of a dataset folder or URL; FileNotFoundError when there is none."""
    try:
        if is_remote(str(dataset)):
            with open_stream(str(dataset).rstrip("/") + "/" + fmt.DATASET_FILE) as stream:
                return json.loads(stream.read())
        return json.loads((Path(dataset) / fmt.DATASET_FILE).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{dataset} is not a voxforge dataset (no {fmt.DATASET_FILE})") from None


def plain_background_of(dataset: str | Path) -> tuple[int, int, int] | None:
    """The plain colour a dataset was composited over, or None when it used photos."""
    config = read_dataset_info(dataset)["config"]
    return None if config.get("backgrounds") else tuple(config.get("background_color", (255, 255, 255)))


def resolve_shards(source: str | Path | Sequence[str | Path], split: str | None = None) -> list[Path | str]:
    """Shards from a dataset folder (optionally one split), a glob, a list, or a remote location (any
    fsspec URL such as ``s3://bucket/ds`` or ``hf://datasets/OWNER/NAME``, http(s) URLs with
    ``{000..009}`` ranges: see :mod:`voxforge.loaders.remote`). Local shards come back as paths,
    remote ones as URLs."""
    if isinstance(source, (list, tuple)):
        return [p if is_remote(p) else Path(p) for p in source]
    if is_remote(str(source)):
        return resolve_remote_shards(str(source), split)
    source = str(source)
    if os.path.isdir(source):
        splits = (split,) if split else fmt.SPLITS
        return [p for s in splits for p in shard_paths(Path(source) / s)]
    matches = sorted(Path(p) for p in glob.glob(source))
    if not matches:
        raise FileNotFoundError(f"no shards match {source}")
    return matches


def iter_any_shard(shard: Path | str) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, members) per sample of a local shard or a remote one (streamed)."""
    return iter_remote_shard(shard) if is_remote(shard) else iter_shard(shard)


class VoxforgeDataset:
    """A dataset folder or URL: ``info`` (dataset.json), ``shards``, and iteration over decoded samples."""

    def __init__(self, path: str | Path, split: str | None = None) -> None:
        self.path = path if is_remote(str(path)) else Path(path)
        self.info = read_dataset_info(self.path)
        major = str(self.info.get("format_version", "0")).split(".")[0]
        if major != fmt.FORMAT_VERSION.split(".")[0]:
            raise ValueError(f"{self.path}: format {self.info.get('format_version')} is not readable by "
                             f"this voxforge (format {fmt.FORMAT_VERSION})")
        if split is not None and split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.splits = (split,) if split else SPLITS
        self.shards = [shard for s in self.splits for shard in resolve_shards(self.path, s)]

    def __len__(self) -> int:
        per_split = self.info["counts"]["per_split"]
        return sum(per_split.get(s, 0) for s in self.splits)

    def __iter__(self) -> Iterator[dict]:
        for shard in self.shards:
            for _, members in iter_any_shard(shard):
                yield decode_sample(members)


def open_dataset(path: str | Path, split: str | None = None):
    """Open a voxforge dataset (a folder or any fsspec/http(s) URL), the original 3D-R2N2 layout or the
    SoftRas ``.npz`` layout; iterate it for sample dicts."""
    if is_remote(str(path)):
        return VoxforgeDataset(path, split)
    from voxforge.loaders.r2n2 import R2N2Dataset, is_r2n2_layout
    from voxforge.loaders.softras import SoftRasDataset, is_softras_layout

    if is_r2n2_layout(path):
        return R2N2Dataset(path, split)
    if not (Path(path) / fmt.DATASET_FILE).exists() and is_softras_layout(path):
        return SoftRasDataset(path, split)
    return VoxforgeDataset(path, split)
