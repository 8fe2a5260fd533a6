"""The on-disk contract of a voxforge dataset (documented in docs/FORMAT.md). Bump the version on change."""

from __future__ import annotations

import hashlib
import re

FORMAT_VERSION = "1.1"  # 1.1: per-shard manifests (.voxforge/shards/)
DATASET_FILE = "dataset.json"
MANIFEST_FILE = "manifest.jsonl"
SHARD_PREFIX = "shard"
SHARD_SUFFIX = ".tar"
SPLITS = ("train", "val", "test")
WORK_DIR = ".voxforge"  # runs' own state; never read by loaders
SHARD_MANIFESTS = WORK_DIR + "/shards"  # <split>/shard-NNNNNN.json: what each committed shard holds (and failed)

# member names inside a shard, after the "<key>." prefix
META = "json"
VOXELS = "voxels.binvox"
POINTS = "points.npy"
NORMALS = "normals.npy"
DEPTH = "depth.npy"


def image_member(view: int) -> str:
    return f"rgb_{view:02d}.png"


def mask_member(view: int) -> str:
    return f"mask_{view:02d}.png"


def sample_key(object_id: str) -> str:
    """A WebDataset key for any id: no dots or slashes (they split keys), unique via a short hash."""
    readable = re.sub(r"[^A-Za-z0-9_-]+", "_", object_id).strip("_")[-80:] or "object"
    return f"{readable}-{hashlib.sha1(object_id.encode()).hexdigest()[:10]}"
