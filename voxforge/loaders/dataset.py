"""Reading a voxforge dataset folder back as sample dicts of numpy arrays."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from voxforge.loaders import format as fmt
from voxforge.loaders.png import decode_png
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


def plain_background_of(dataset_folder: str | Path) -> tuple[int, int, int] | None:
    """The plain colour a dataset was composited over, or None when it used photos."""
    config = json.loads((Path(dataset_folder) / fmt.DATASET_FILE).read_text())["config"]
    return None if config.get("backgrounds") else tuple(config.get("background_color", (255, 255, 255)))


class VoxforgeDataset:
    """A dataset folder: ``info`` (dataset.json), ``shards``, and iteration over decoded samples."""

    def __init__(self, path: str | Path, split: str | None = None) -> None:
        self.path = Path(path)
        info_path = self.path / fmt.DATASET_FILE
        if not info_path.exists():
            raise FileNotFoundError(f"{self.path} is not a voxforge dataset (no {fmt.DATASET_FILE})")
        self.info = json.loads(info_path.read_text())
        major = str(self.info.get("format_version", "0")).split(".")[0]
        if major != fmt.FORMAT_VERSION.split(".")[0]:
            raise ValueError(f"{self.path}: format {self.info.get('format_version')} is not readable by "
                             f"this voxforge (format {fmt.FORMAT_VERSION})")
        if split is not None and split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.splits = (split,) if split else SPLITS
        self.shards = [p for s in self.splits for p in shard_paths(self.path / s)]

    def __len__(self) -> int:
        per_split = self.info["counts"]["per_split"]
        return sum(per_split.get(s, 0) for s in self.splits)

    def __iter__(self) -> Iterator[dict]:
        for shard in self.shards:
            for _, members in iter_shard(shard):
                yield decode_sample(members)


def open_dataset(path: str | Path, split: str | None = None):
    """Open a voxforge dataset folder, the original 3D-R2N2 layout or the SoftRas ``.npz`` layout; iterate
    it for sample dicts."""
    from voxforge.loaders.r2n2 import R2N2Dataset, is_r2n2_layout
    from voxforge.loaders.softras import SoftRasDataset, is_softras_layout

    if is_r2n2_layout(path):
        return R2N2Dataset(path, split)
    if not (Path(path) / fmt.DATASET_FILE).exists() and is_softras_layout(path):
        return SoftRasDataset(path, split)
    return VoxforgeDataset(path, split)
