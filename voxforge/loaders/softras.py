"""The Soft Rasterizer / Neural Mesh Renderer dataset layout: per-category ``.npz`` files.

Layout (as Kato et al.'s ``make_dataset.py`` writes it and SoftRas's ``examples/recon/datasets.py``
reads it): ``<synset>_<split>_images.npz`` holds one array (``np.savez_compressed`` default key
``arr_0``) of shape (N, 24, 4, 64, 64) uint8, RGB + alpha channels first, views in order;
``<synset>_<split>_voxels.npz`` holds (N, 32, 32, 32) bool. Readers take the first array of each file,
whatever its key. voxforge also writes ``<synset>_<split>_ids.txt`` (object ids, one a line) so a
read-back keeps them; SoftRas ignores it.

Conventions, derived from SoftRas's own code (``get_points_from_angles``, ``look_at``,
``perspective``, the rasterizer's pixel grid and ``Model.evaluate_iou``):

- Cameras: view k has its eye at ``get_points_from_angles(2.732, 30, -15 k)``, looks at the origin
  with +Y up, viewing angle 15 degrees (focal 1 / tan 15 in half-image units), 64x64 pixels with
  the image's top row at +Y. SoftRas's look-at camera has x = up x forward, the mirror of a right-handed
  camera, so its frame is voxforge's with **z negated**: a voxforge object rendered by voxforge's
  OpenCV camera at azimuth ``-15 k`` (mod 360), elevation 30, distance 2.732 is exactly the image
  SoftRas renders of that object with z negated from its view k.
- Voxels: SoftRas voxelizes ``v * 31/32 + 0.5`` on a 32^3 lattice, so voxel i covers
  ``[(i - 16) / 31, (i - 15) / 31)``: a fixed cube of edge 32/31 centred at the origin. Its
  ``evaluate_iou`` compares ``voxelize(...).transpose(0, 2, 1, 3)[:, :, :, ::-1]`` with the files, so
  file voxel ``[i, j, k]`` is SoftRas point (x=j, y=i, z=31-k), which is voxforge voxel
  ``[x=j, y=i, z=k]``: the files are voxforge's grid transposed to ``[y, x, z]``.
- Colour: written premultiplied (colour x alpha over black, as neural renderers composite) by default.
  Kato's script inverts it (``image = 1 - image``); whether the published files carry that
  inversion could not be checked here (no real file was available), so ``color="inverted"`` writes
  ``alpha - colour x alpha`` instead. SoftRas's training signal is the alpha channel only.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from voxforge.renderers.cameras import camera_position, intrinsics, look_at


IMAGE_SIZE = 64
VIEWS = 24
ELEVATION_DEG = 30.0
DISTANCE = 2.732
VIEWING_ANGLE_DEG = 15.0
FOCAL_NORMALIZED = 1.0 / math.tan(math.radians(VIEWING_ANGLE_DEG))
AZIMUTH_STEP_DEG = -15.0  # voxforge azimuth of view k: -15 k (mod 360)
VOXEL_RESOLUTION = 32
VOXEL_SIZE = 1.0 / 31.0
VOXEL_EXTENT = VOXEL_RESOLUTION * VOXEL_SIZE  # 32/31
VOXEL_ORIGIN = -VOXEL_EXTENT / 2.0
COLOR_MODES = ("premultiplied", "inverted")
_FILE = re.compile(r"^(?P<synset>.+)_(?P<split>train|val|test)_images\.npz$")


def softras_azimuths(views: int = VIEWS) -> np.ndarray:
    """voxforge azimuths (degrees) of SoftRas's views 0..views-1."""
    return np.mod(AZIMUTH_STEP_DEG * np.arange(views), 360.0)


def softras_cameras(size: int = IMAGE_SIZE, views: int = VIEWS) -> tuple[np.ndarray, np.ndarray]:
    """(K (V, 3, 3), world_to_camera (V, 3, 4)) of SoftRas's views in voxforge's OpenCV form."""
    K = np.stack([intrinsics(size, FOCAL_NORMALIZED)] * views)
    poses = np.stack([look_at(camera_position(a, ELEVATION_DEG, DISTANCE)) for a in softras_azimuths(views)])
    return K, poses


def voxels_to_softras(occupancy: np.ndarray) -> np.ndarray:
    """voxforge occupancy [x, y, z] on SoftRas's grid -> the files' [y, x, z] order."""
    return np.ascontiguousarray(np.asarray(occupancy, bool).transpose(1, 0, 2))


def voxels_from_softras(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(array, bool).transpose(1, 0, 2))


def resample_to_softras_grid(occupancy: np.ndarray, origin, voxel_size: float) -> np.ndarray:
    """Nearest-voxel resampling of any grid onto SoftRas's fixed 32^3 cube (identity when already on it)."""
    occupancy = np.asarray(occupancy, bool)
    centres = VOXEL_ORIGIN + (np.arange(VOXEL_RESOLUTION) + 0.5) * VOXEL_SIZE
    axes = [np.floor((centres - float(np.asarray(origin)[a])) / voxel_size).astype(int) for a in range(3)]
    inside = [(index >= 0) & (index < occupancy.shape[a]) for a, index in enumerate(axes)]
    picked = occupancy[np.ix_(*[np.clip(index, 0, occupancy.shape[a] - 1) for a, index in enumerate(axes)])]
    return picked & inside[0][:, None, None] & inside[1][None, :, None] & inside[2][None, None, :]


def _on_softras_grid(sample: dict) -> bool:
    return (sample["voxels"].shape == (VOXEL_RESOLUTION,) * 3 and abs(sample["voxel_size"] - VOXEL_SIZE) < 1e-9
            and np.allclose(sample["voxel_origin"], VOXEL_ORIGIN, atol=1e-9))


def check_softras_cameras(sample: dict) -> None:
    """Refuse a sample not rendered from SoftRas's 24 fixed views (its images would not match the layout)."""
    images = sample["images"]
    ok = (images.shape[0] == VIEWS and images.shape[1:3] == (IMAGE_SIZE, IMAGE_SIZE)
          and np.allclose(np.mod(np.asarray(sample["azimuth"]) - softras_azimuths() + 180.0, 360.0) - 180.0, 0, atol=1e-6)
          and np.allclose(sample["elevation"], ELEVATION_DEG, atol=1e-6)
          and np.allclose(sample["distance"], DISTANCE, atol=1e-6)
          and np.allclose(sample["K"][:, 0, 0], FOCAL_NORMALIZED * IMAGE_SIZE / 2.0, rtol=1e-6))
    if not ok:
        raise ValueError(f"{sample['id']}: not rendered from SoftRas's views (24 views 15 degrees apart, "
                         "elevation 30, distance 2.732, 64 px, viewing angle 15): make the dataset with --preset softras")


def softras_rgba(sample: dict, plain_background=None, color: str = "premultiplied") -> np.ndarray:
    """(V, 4, H, W) uint8: RGB premultiplied by alpha (or Kato's inversion of it) and the alpha."""
    if color not in COLOR_MODES:
        raise ValueError(f"color must be one of {COLOR_MODES}, got {color!r}")
    alpha = sample["alphas"].astype(np.float32)[..., None] / 255.0
    composited = sample["images"].astype(np.float32)
    if plain_background is not None:  # undo the compositing: what the object itself contributes
        premultiplied = composited - np.asarray(plain_background, np.float32) * (1.0 - alpha)
    else:  # photo backgrounds cannot be separated: keep the composite under the alpha
        premultiplied = composited * alpha
    if color == "inverted":
        premultiplied = 255.0 * alpha - premultiplied
    rgb = np.clip(np.rint(premultiplied), 0, 255).astype(np.uint8)
    return np.concatenate([rgb, sample["alphas"][..., None]], axis=-1).transpose(0, 3, 1, 2)


def _write_npz(path: Path, array: np.ndarray) -> None:
    """``np.savez_compressed`` under a temporary name, renamed when complete (key ``arr_0``)."""
    temporary = path.with_name(path.name + ".partial")
    with open(temporary, "wb") as handle:
        np.savez_compressed(handle, array)
    os.replace(temporary, path)


def export_softras(samples, out: str | Path, plain_background=None, color: str = "premultiplied",
                   splits: tuple[str, ...] = ("train", "val", "test")) -> dict[str, int]:
    """Write samples rendered with ``--preset softras`` as ``<synset>_<split>_{images,voxels}.npz``.

    Voxels not already on SoftRas's fixed grid are resampled onto it (nearest voxel). Every class gets a
    file for each of ``splits``, empty (0 objects) where the split has none of it: SoftRas's scripts open
    ``<synset>_val`` and ``<synset>_test`` for every class they train. Returns objects written per
    ``<synset>_<split>``.
    """
    from voxforge.loaders.r2n2 import _safe_name

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    groups: dict[str, dict[str, list]] = {}
    for sample in samples:
        check_softras_cameras(sample)
        synset = _safe_name(sample.get("synset_id") or sample["category"])
        name = f"{synset}_{sample.get('split') or 'train'}"
        voxels = sample["voxels"] if _on_softras_grid(sample) else \
            resample_to_softras_grid(sample["voxels"], sample["voxel_origin"], sample["voxel_size"])
        group = groups.setdefault(name, {"images": [], "voxels": [], "ids": []})
        group["images"].append(softras_rgba(sample, plain_background, color))
        group["voxels"].append(voxels_to_softras(voxels))
        group["ids"].append(sample["id"])
    if groups:
        model = next(iter(groups.values()))
        image_shape, voxel_shape = model["images"][0].shape, model["voxels"][0].shape
        image_dtype, voxel_dtype = model["images"][0].dtype, model["voxels"][0].dtype
        for synset in {name.rsplit("_", 1)[0] for name in groups}:
            for split in splits:
                groups.setdefault(f"{synset}_{split}", {
                    "images": np.zeros((0, *image_shape), image_dtype), "voxels": np.zeros((0, *voxel_shape), voxel_dtype),
                    "ids": []})
    for name, group in sorted(groups.items()):
        _write_npz(out / f"{name}_images.npz", np.asarray(group["images"]) if group["ids"] else group["images"])
        _write_npz(out / f"{name}_voxels.npz", np.asarray(group["voxels"]) if group["ids"] else group["voxels"])
        (out / f"{name}_ids.txt").write_text("".join(f"{object_id}\n" for object_id in group["ids"]))
    return {name: len(group["ids"]) for name, group in sorted(groups.items())}


def _first_array(path: Path) -> np.ndarray:
    with np.load(path, allow_pickle=False) as archive:  # as SoftRas: the first array, whatever its key
        return archive[archive.files[0]]


def is_softras_layout(path: str | Path) -> bool:
    path = Path(path)
    return path.is_dir() and any(
        _FILE.match(p.name) and (path / p.name.replace("_images.npz", "_voxels.npz")).is_file()
        for p in path.glob("*_images.npz"))


def iter_softras(root: str | Path, split: str | None = None, color: str = "premultiplied") -> Iterator[dict]:
    """Sample dicts (voxforge keys, no points) from the SoftRas layout, images composited over white."""
    from voxforge.pipeline.sources.shapenet_taxonomy import category_name

    root = Path(root)
    K, poses = softras_cameras()
    for images_path in sorted(root.glob("*_images.npz")):
        match = _FILE.match(images_path.name)
        voxels_path = images_path.with_name(images_path.name.replace("_images.npz", "_voxels.npz"))
        if not match or not voxels_path.is_file() or (split is not None and match["split"] != split):
            continue
        rgba, voxels = _first_array(images_path), _first_array(voxels_path)
        if rgba.ndim != 5 or rgba.shape[1:3] != (VIEWS, 4) or voxels.shape[1:] != (VOXEL_RESOLUTION,) * 3 \
                or len(voxels) != len(rgba):
            raise ValueError(f"{images_path}: expected (N, 24, 4, H, W) images and (N, 32, 32, 32) voxels, "
                             f"got {rgba.shape} and {voxels.shape}")
        ids_path = images_path.with_name(images_path.name.replace("_images.npz", "_ids.txt"))
        ids = ids_path.read_text().splitlines() if ids_path.is_file() else []
        synset = match["synset"]
        for index in range(len(rgba)):
            views = rgba[index].transpose(0, 2, 3, 1)  # (V, H, W, 4)
            alpha = views[..., 3]
            colour = views[..., :3].astype(np.float32)
            if color == "inverted":
                colour = alpha[..., None].astype(np.float32) - colour
            images = np.clip(np.rint(colour + 255.0 - alpha[..., None].astype(np.float32)), 0, 255).astype(np.uint8)
            size = views.shape[1]
            yield {
                "id": ids[index] if len(ids) == len(rgba) else f"{synset}/{index:06d}",
                "category": category_name(synset), "split": match["split"], "synset_id": synset,
                "model_id": ids[index].split("/")[-1] if len(ids) == len(rgba) else f"{index:06d}",
                "images": images, "alphas": alpha, "masks": alpha >= 128,
                "K": K if size == IMAGE_SIZE else np.stack([intrinsics(size, FOCAL_NORMALIZED)] * VIEWS),
                "world_to_camera": poses,
                "azimuth": softras_azimuths(), "elevation": np.full(VIEWS, ELEVATION_DEG),
                "distance": np.full(VIEWS, DISTANCE),
                "voxels": voxels_from_softras(voxels[index]),
                "voxel_origin": np.full(3, VOXEL_ORIGIN), "voxel_size": VOXEL_SIZE,
                "meta": {"layout": "softras", "file": images_path.name, "index": index},
            }


class SoftRasDataset:
    """A folder in the SoftRas layout, iterable like :class:`voxforge.loaders.VoxforgeDataset`."""

    def __init__(self, path: str | Path, split: str | None = None, color: str = "premultiplied") -> None:
        self.path, self.split, self.color = Path(path), split, color

    def __iter__(self) -> Iterator[dict]:
        return iter_softras(self.path, self.split, self.color)
