"""Reading the original 3D-R2N2 data layout as voxforge sample dicts.

Layout: ``ShapeNetRendering/<synset>/<id>/rendering/NN.png`` (RGBA renders) with
``rendering_metadata.txt`` (per view: azimuth, elevation, in-plane rotation, distance ratio, and a
last column that is not a pinhole field of view), and ``ShapeNetVox32/<synset>/<id>/model.binvox``.
An optional Pix2Vox-style taxonomy JSON (``ShapeNet.json``) gives category names and splits.

Conventions (as in meshrcnn / PyTorch3D's R2N2 dataset, checked against the real alpha masks):
- Cameras: Blender's extrinsics from (azimuth, elevation, distance_ratio x 1.75), looking at the
  origin, with Blender's 90-degree x rotation of imported OBJs folded in; focal 2.1875 in half-image
  units. They are returned in voxforge's OpenCV form (``K`` in pixels, ``world_to_camera`` 3x4).
- The frame is voxforge's (ShapeNet +Y up, centred, unit diagonal); a 3D-R2N2 azimuth ``a`` is the
  voxforge azimuth ``90 - a`` (elevation and distance agree): ``r2n2_world_to_camera(a, e, r)`` equals
  ``look_at(camera_position(90 - a, e, 1.75 r))`` exactly.
- Voxels: indexed [x, y, z] in the ShapeNet frame (+Y up). The binvox header's translate/scale refer
  to the original mesh, not the rendered frame; the renders show the model centred at the origin with
  a unit bounding-box diagonal, and ``binvox -cb`` fitted the grid to that box. So the occupied
  voxels' bounding box is placed centred at the origin and scaled to a unit diagonal
  (``voxel_origin``/``voxel_size`` describe that placement).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from voxforge.renderers.backgrounds import composite
from voxforge.voxelize.binvox import read_binvox

RENDERING_DIR = "ShapeNetRendering"
VOXEL_DIR = "ShapeNetVox32"
MAX_CAMERA_DISTANCE = 1.75
FOCAL_NORMALIZED = 2.1875


def is_r2n2_layout(path: str | Path) -> bool:
    path = Path(path)
    return (path / RENDERING_DIR).is_dir() and (path / VOXEL_DIR).is_dir()


def r2n2_world_to_camera(azimuth: float, elevation: float, distance_ratio: float) -> np.ndarray:
    """OpenCV 3x4 ``world_to_camera`` of one 3D-R2N2 view (ShapeNet frame, +Y up)."""
    az, el = -np.radians(azimuth), -np.radians(elevation)
    sa, ca, se, ce = np.sin(az), np.cos(az), np.sin(el), np.cos(el)
    world_to_object = np.array([[ca * ce, sa * ce, -se], [-sa, ca, 0.0], [ca * se, sa * se, ce]])
    object_to_blender_camera = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    rotation = object_to_blender_camera @ world_to_object
    translation = -object_to_blender_camera @ np.array([distance_ratio * MAX_CAMERA_DISTANCE, 0.0, 0.0])
    obj_import_rotation = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])  # Blender's OBJ import
    blender_to_opencv = np.diag([1.0, -1.0, -1.0])
    return blender_to_opencv @ np.concatenate([rotation @ obj_import_rotation, translation[:, None]], axis=1)


def r2n2_intrinsics(size: int) -> np.ndarray:
    focal = FOCAL_NORMALIZED * size / 2.0
    centre = (size - 1) / 2.0
    return np.array([[focal, 0.0, centre], [0.0, focal, centre], [0.0, 0.0, 1.0]])


def read_metadata(path: str | Path) -> np.ndarray:
    """(V, 5): azimuth, elevation, in-plane rotation, distance ratio, last column (kept as is)."""
    rows = [[float(v) for v in line.split()] for line in Path(path).read_text().splitlines() if line.strip()]
    return np.array(rows, dtype=np.float64)


def voxel_frame(occupancy: np.ndarray) -> tuple[np.ndarray, float]:
    """Origin and voxel size placing the occupied box centred at the origin with unit diagonal."""
    occupied = np.argwhere(occupancy)
    low, high = occupied.min(axis=0), occupied.max(axis=0) + 1
    voxel_size = 1.0 / float(np.linalg.norm(high - low))
    return -(low + high) / 2.0 * voxel_size, voxel_size


def _taxonomy(root: Path, taxonomy: str | Path | None) -> dict[tuple[str, str], tuple[str, str]]:
    """(synset, model id) -> (category name, split), from a Pix2Vox-style JSON if there is one."""
    path = Path(taxonomy) if taxonomy else root / "ShapeNet.json"
    if not path.is_file():
        return {}
    lookup = {}
    for entry in json.loads(path.read_text()):
        for split in ("train", "val", "test"):
            for model_id in entry.get(split, []):
                lookup[(entry["taxonomy_id"], model_id)] = (entry["taxonomy_name"], split)
    return lookup


def iter_r2n2(root: str | Path, taxonomy: str | Path | None = None, split: str | None = None) -> Iterator[dict]:
    """Sample dicts (same keys as voxforge datasets, no points) for every object with renders and voxels."""
    from voxforge.pipeline.sources.shapenet_taxonomy import category_name

    root = Path(root)
    names = _taxonomy(root, taxonomy)
    for rendering in sorted((root / RENDERING_DIR).glob("*/*/rendering")):
        synset, model_id = rendering.parent.parent.name, rendering.parent.name
        voxel_path = root / VOXEL_DIR / synset / model_id / "model.binvox"
        if not voxel_path.is_file():
            continue
        category, object_split = names.get((synset, model_id), (category_name(synset), ""))
        if split is not None and object_split != split:
            continue
        metadata = read_metadata(rendering / "rendering_metadata.txt")
        rgba = np.stack([np.asarray(Image.open(rendering / f"{v:02d}.png").convert("RGBA")) for v in range(len(metadata))])
        alpha = rgba[..., 3]
        images = composite(rgba[..., :3], alpha, np.full(3, 255, np.uint8))  # over white
        grid = read_binvox(voxel_path)
        origin, voxel_size = voxel_frame(grid.occupancy)
        size = images.shape[1]
        yield {
            "id": f"{synset}/{model_id}", "category": category, "split": object_split,
            "synset_id": synset, "model_id": model_id,
            "images": images, "alphas": alpha, "masks": alpha >= 128,
            "K": np.stack([r2n2_intrinsics(size)] * len(metadata)),
            "world_to_camera": np.stack([r2n2_world_to_camera(m[0], m[1], m[3]) for m in metadata]),
            "azimuth": np.mod(90.0 - metadata[:, 0], 360.0), "elevation": metadata[:, 1],
            "distance": metadata[:, 3] * MAX_CAMERA_DISTANCE,
            "voxels": grid.occupancy, "voxel_origin": origin, "voxel_size": voxel_size,
            "meta": {"layout": "r2n2", "metadata": metadata.tolist(), "binvox_translate": grid.origin.tolist(),
                     "binvox_scale": grid.voxel_size * grid.resolution},
        }


class R2N2Dataset:
    """The 3D-R2N2 folder layout, iterable like :class:`voxforge.loaders.VoxforgeDataset`."""

    def __init__(self, path: str | Path, split: str | None = None, taxonomy: str | Path | None = None) -> None:
        self.path, self.split, self.taxonomy = Path(path), split, taxonomy

    def __iter__(self) -> Iterator[dict]:
        return iter_r2n2(self.path, self.taxonomy, self.split)


def _safe_name(text: str) -> str:
    """A single path component for any id (no separators, no '..'), readable where possible."""
    from voxforge.loaders.format import sample_key

    return text if text and all(c.isalnum() or c in "-_" for c in text) else sample_key(text)


def check_r2n2_cameras(sample: dict) -> None:
    """Refuse a sample whose cameras 3D-R2N2's metadata cannot express: its rows hold azimuth, elevation
    and distance only, and readers use the fixed focal (2.1875 half-image units) and a centred principal
    point; a dataset made with another ``--focal`` would be re-read with the wrong camera."""
    K = np.asarray(sample["K"], np.float64)
    size = sample["images"].shape[1]
    expected = r2n2_intrinsics(size)
    if not np.allclose(K, expected[None], rtol=1e-6, atol=1e-6):
        focal = K[:, 0, 0] / (size / 2.0)
        raise ValueError(f"{sample['id']}: rendered with focal {focal.min():.4g}..{focal.max():.4g} (half-image units), "
                         f"but the 3D-R2N2 layout's readers assume {FOCAL_NORMALIZED}: make the dataset with --preset "
                         "r2n2 (or --focal 2.1875), or export --layout parquet, which keeps every camera")


def export_r2n2(samples, out: str | Path, plain_background=None) -> dict[str, int]:
    """Write samples in the 3D-R2N2 layout (renders, metadata, ShapeNetVox32, ShapeNet.json).

    Renders are RGBA: the object's colour is recovered exactly when the dataset was composited over a
    plain colour (``plain_background``), else the composited RGB is kept under the alpha. Metadata rows
    are ``azimuth elevation 0 distance_ratio 25`` in 3D-R2N2's conventions (the 25 is the constant the
    original files carry). Returns objects written per category. Raises ValueError for a sample rendered
    with another focal than 3D-R2N2's (:func:`check_r2n2_cameras`).
    """
    from voxforge.voxelize.binvox import write_binvox
    from voxforge.voxelize.grid import VoxelGrid

    out = Path(out)
    taxonomy: dict[str, dict] = {}
    written: dict[str, int] = {}
    for sample in samples:
        check_r2n2_cameras(sample)  # before this sample writes anything
        synset = _safe_name(sample.get("synset_id") or sample["category"])
        model = _safe_name(sample.get("model_id") if sample.get("synset_id") else sample["id"])
        rendering = out / RENDERING_DIR / synset / model / "rendering"
        rendering.mkdir(parents=True, exist_ok=True)
        alpha = sample["alphas"]
        color = sample["images"].astype(np.float32)
        if plain_background is not None:
            a = alpha[..., None].astype(np.float32) / 255.0
            behind = np.asarray(plain_background, np.float32) * (1.0 - a)
            color = np.where(a > 0, (color - behind) / np.maximum(a, 1e-6), 0.0)
        rgba = np.concatenate([np.clip(np.rint(color), 0, 255).astype(np.uint8), alpha[..., None]], axis=-1)
        names = []
        for view in range(len(rgba)):
            names.append(f"{view:02d}.png")
            Image.fromarray(rgba[view], "RGBA").save(rendering / names[-1])
        rows = [f"{np.mod(90.0 - az, 360.0):.9g} {el:.9g} 0 {d / MAX_CAMERA_DISTANCE:.9g} 25"
                for az, el, d in zip(sample["azimuth"], sample["elevation"], sample["distance"])]
        (rendering / "rendering_metadata.txt").write_text("\n".join(rows) + "\n")
        (rendering / "renderings.txt").write_text("\n".join(names) + "\n")
        voxels = out / VOXEL_DIR / synset / model
        voxels.mkdir(parents=True, exist_ok=True)
        write_binvox(VoxelGrid(sample["voxels"], np.asarray(sample["voxel_origin"]), float(sample["voxel_size"])),
                     voxels / "model.binvox")
        entry = taxonomy.setdefault(synset, {"taxonomy_id": synset, "taxonomy_name": sample["category"],
                                             "train": [], "val": [], "test": []})
        entry.setdefault(sample.get("split") or "train", []).append(model)
        written[sample["category"]] = written.get(sample["category"], 0) + 1
    (out / "ShapeNet.json").write_text(json.dumps(list(taxonomy.values()), indent=2))
    return written
