"""Training, evaluating and using the SoftRas-style mesh model (``pipeline train --arch softras``).

Training (as SoftRas's ``examples/recon``): every object of a batch comes with two random views a and b.
The network predicts a mesh from each view's RGBA image; each predicted mesh is rendered as a soft
silhouette (:func:`voxforge.models.softras.soft_silhouettes`, sharpness ``sigma``) in both views with the
dataset's own cameras (``K``, ``world_to_camera``) and compared with the stored masks: loss =
1 - soft IoU (mean of the four) + ``laplacian_weight`` x Laplacian + ``flatten_weight`` x flatten
(:mod:`voxforge.models.softras.model`). Defaults are the released ones: 64 px, batch 64, Adam lr 1e-4,
sigma 1e-4, weights 5e-3 and 5e-4. Views larger than ``image_size`` are area-downsampled, masks too (to
soft targets), and ``K`` scaled to match. The loop, checkpoints (exact resume), metrics and stops are the
shared engine's (:mod:`voxforge.models.engine`).

Evaluation voxelizes each predicted mesh with voxforge's voxelizer into the sample's own voxel cube
(``voxel_origin``, ``voxel_size``, same resolution and fill as its ground truth) and reports the voxel IoU
per category, as SoftRas and Neural Mesh Renderer report theirs (mean over 13 ShapeNet classes: NMR 0.602,
SoftRas 0.646, Liu et al. 2019, Table 1).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from voxforge.models.data import TEST_BACKGROUND
from voxforge.models.engine import EngineConfig, Family, config_from, fit, load_checkpoint, to_device
from voxforge.models.softras.silhouette import silhouette_iou
from voxforge.models.softras.model import MeshReconstructor, flatten_loss, laplacian_loss
from voxforge.models.softras.rasterizer import soft_silhouettes
from voxforge.models.stopping import STOP_SIGNALS

log = logging.getLogger(__name__)

ARCH = "softras"
# Mean voxel IoU over the 13 ShapeNet classes of the 3D-R2N2 split (Liu et al., ICCV 2019, Table 1).
PUBLISHED_MEAN_IOU = {"NMR (Kato et al. 2018)": 0.602, "SoftRas (Liu et al. 2019)": 0.646}
EVAL_SIGMA = 1e-9  # a nearly hard silhouette for the gallery (see the rasterizer's sharp limit)


@dataclass
class SoftRasConfig(EngineConfig):
    arch: str = ARCH
    image_size: int = 64
    batch_size: int = 64
    encoder: str = "plain"  # or "residual"
    sigma: float = 1e-4  # silhouette sharpness, squared NDC units (SoftRas's sigma_val at 64 px)
    laplacian_weight: float = 5e-3
    flatten_weight: float = 5e-4


def build_model(config: SoftRasConfig) -> MeshReconstructor:
    return MeshReconstructor(config.image_size, config.width, config.encoder)


def resize_views(images: torch.Tensor, masks: torch.Tensor, K: torch.Tensor, size: int):
    """Views (N, 3, H, W), masks (N, H, W) and intrinsics (N, 3, 3) at ``size`` x ``size``.

    Area downsampling (masks become coverage fractions in [0, 1]); K scaled so that pixel centres stay at
    integer coordinates: ``u' = (u + 0.5) * s - 0.5``. Unchanged when the views already have that size.
    """
    height = images.shape[-1]
    masks = masks.float()
    if height == size:
        return images, masks, K
    images = F.interpolate(images, size=(size, size), mode="area" if size < height else "bilinear")
    masks = F.interpolate(masks[:, None], size=(size, size), mode="area" if size < height else "bilinear")[:, 0]
    scale = size / height
    K = K.clone()
    K[:, :2, :2] *= scale
    K[:, :2, 2] = (K[:, :2, 2] + 0.5) * scale - 0.5
    return images, masks, K


def rgba(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """(N, 3, S, S) and (N, S, S) -> the network's (N, 4, S, S) input."""
    return torch.cat([images, masks[:, None].to(images.dtype)], dim=1)


def _step(model: MeshReconstructor, forward, batch: dict, device: torch.device,
          config: SoftRasConfig) -> dict[str, torch.Tensor]:
    images, masks = batch["images"], batch["masks"]  # (B, 2, 3, H, W), (B, 2, H, W)
    objects, views = masks.shape[:2]
    if views != 2:
        raise ValueError(f"softras trains on two views per object, the batch holds {views}")
    size = config.image_size
    flat_images, flat_masks, flat_K = resize_views(images.flatten(0, 1), masks.flatten(0, 1),
                                                   batch["K"].flatten(0, 1).float(), size)
    inputs = to_device(rgba(flat_images, flat_masks), device)
    vertices = forward(inputs)  # (2B, V, 3): one mesh per (object, view)
    count = vertices.shape[1]
    targets = to_device(flat_masks, device).view(objects, 1, 2, size, size).expand(objects, 2, 2, size, size)
    K = to_device(flat_K, device).view(objects, 1, 2, 3, 3).expand(objects, 2, 2, 3, 3)
    pose = to_device(batch["world_to_camera"].float(), device).view(objects, 1, 2, 3, 4).expand(objects, 2, 2, 3, 4)
    # mesh (object, i) rendered in view (object, j) for i, j in {a, b}
    seen = vertices.view(objects, 2, 1, count, 3).expand(objects, 2, 2, count, 3)
    silhouettes = soft_silhouettes(seen.reshape(-1, count, 3), model.faces, K.reshape(-1, 3, 3),
                                   pose.reshape(-1, 3, 4), size, config.sigma)
    vertices = vertices.float()
    terms = {"iou": 1.0 - silhouette_iou(silhouettes, targets.reshape(-1, size, size)).mean(),
             "laplacian": laplacian_loss(vertices, model.laplacian),
             "flatten": flatten_loss(vertices, model.edge_quads)}
    terms["loss"] = terms["iou"] + config.laplacian_weight * terms["laplacian"] + \
        config.flatten_weight * terms["flatten"]
    return terms


FAMILY = Family(ARCH, build=lambda config: build_model(config), step=_step, terms=("iou", "laplacian", "flatten"))


def softras_batches(root: str | Path, config: SoftRasConfig, workers: int = 2, split: str = "train"):
    """Endless batches of two random views per object from a voxforge dataset: ``images`` (B, 2, 3, H, W)
    float in [0, 1] (plain backgrounds re-composited to random light colours), ``masks`` (B, 2, H, W) bool,
    ``K`` (B, 2, 3, 3), ``world_to_camera`` (B, 2, 3, 4); resumable (:class:`voxforge.models.data.EpochBatches`).

    Raises FileNotFoundError for a folder that is not a voxforge dataset (the 3D-R2N2 layout stores no
    cameras in voxforge's frame; build the data with ``pipeline run ... --preset softras``)."""
    from voxforge.loaders.dataset import read_dataset_info
    from voxforge.models.data import shard_batches

    read_dataset_info(root)
    return shard_batches(root, config.batch_size, (2, 2), workers, config.seed, split)


def train_softras(config: SoftRasConfig, batches: Iterable[dict], run_dir: str | Path, resume: bool = False,
                  progress: bool = True, on_log=None, signals: Iterable[int] = STOP_SIGNALS) -> dict:
    """Train the mesh model for ``config.iterations`` steps with :func:`voxforge.models.engine.fit`.

    ``batches`` as :func:`softras_batches` gives. Files (``checkpoint.pt``, ``metrics.csv`` with the iou,
    laplacian and flatten terms, ``config.json``, TensorBoard), resume, stops, threads and the returned
    dict are the engine's.
    """
    return fit(FAMILY, config, batches, run_dir, resume, progress, on_log, signals)


def load_run(run_dir: str | Path, device: str = "cpu") -> tuple[MeshReconstructor, SoftRasConfig, int]:
    """The trained model of a run folder in eval mode, its configuration and iteration."""
    state = load_checkpoint(run_dir, device)
    config = config_from(SoftRasConfig, state["config"])
    model = build_model(config).to(device)
    model.load_state_dict(state["model"])
    return model.eval(), config, int(state["iteration"])


def _input_views(sample: dict, chosen: list[int], old_background, size: int) -> tuple[torch.Tensor, np.ndarray]:
    """RGBA network inputs (N, 4, size, size) of a sample's views over the test colour, and the RGB views."""
    from voxforge.loaders.torch import recomposite

    images = sample["images"][chosen]
    alphas = sample["alphas"][chosen]
    if old_background is not None:
        images = recomposite(images, alphas, old_background, TEST_BACKGROUND)
    rgb = torch.from_numpy(np.ascontiguousarray(images, np.float32)).permute(0, 3, 1, 2) / 255.0
    masks = torch.from_numpy(alphas.astype(np.float32) / 255.0)
    K = torch.from_numpy(np.asarray(sample["K"])[chosen]).float()
    rgb, masks, _ = resize_views(rgb, masks, K, size)
    return rgba(rgb, masks), np.clip(images, 0, 255).astype(np.uint8)


def voxelize_prediction(vertices: np.ndarray, faces: np.ndarray, sample: dict) -> np.ndarray:
    """The predicted mesh's occupancy in the sample's voxel cube, with its ground truth's resolution and fill."""
    from voxforge.voxelize.grid import VoxelizeError, voxelize

    truth = np.asarray(sample["voxels"])
    resolution = truth.shape[0]
    fill = (sample.get("meta") or {}).get("voxels", {}).get("fill", "carve")
    try:
        grid = voxelize(vertices[faces], resolution, fill=fill,
                        bounds=(np.asarray(sample["voxel_origin"], float), float(sample["voxel_size"]) * resolution))
    except VoxelizeError:  # a mesh collapsed to nothing: nothing occupied
        return np.zeros_like(truth, dtype=bool)
    return grid.occupancy


@torch.no_grad()
def evaluate_softras(model: MeshReconstructor, samples: Iterable[dict], views: int | None = None, device: str = "cpu",
                     old_background=None, gallery: int = 0) -> dict:
    """Voxel IoU of the meshes predicted from each object's first ``views`` views (default all), and the
    silhouette IoU of each mesh in its input view: mean and per category.

    Each prediction is voxelized into the object's voxel cube (:func:`voxelize_prediction`); IoU =
    |predicted and truth| / |predicted or truth| over the boolean grids (no threshold: the mesh is closed).
    ``old_background``: the plain colour the views were rendered over; inputs are re-composited over
    :data:`TEST_BACKGROUND` from their alpha. The first ``gallery`` objects come back under ``"gallery"``
    (input view, predicted silhouette, true mask; predicted and true voxels).
    """
    model.eval().to(device)
    faces = model.faces.cpu().numpy()
    size = model.image_size
    per_category: dict[str, dict[str, list[float]]] = {}
    rows = []
    objects = 0
    for sample in samples:
        total = len(sample["images"])
        chosen = list(range(total if views is None else min(views, total)))
        inputs, shown = _input_views(sample, chosen, old_background, size)
        vertices = model(inputs.to(device)).float()
        K = torch.from_numpy(np.asarray(sample["K"])[chosen]).float().to(device)
        pose = torch.from_numpy(np.asarray(sample["world_to_camera"])[chosen]).float().to(device)
        height = sample["images"].shape[1]
        silhouettes = soft_silhouettes(vertices, model.faces, K, pose, height, EVAL_SIGMA).cpu().numpy() >= 0.5
        truth = np.asarray(sample["voxels"], bool)
        masks = np.asarray(sample["alphas"])[chosen] >= 128
        groups = per_category.setdefault(sample["category"], {"iou": [], "silhouette_iou": []})
        for index in range(len(chosen)):
            predicted = voxelize_prediction(vertices[index].cpu().numpy().astype(np.float64), faces, sample)
            union = np.logical_or(predicted, truth).sum()
            iou = float(np.logical_and(predicted, truth).sum() / union) if union else 1.0
            both = np.logical_or(silhouettes[index], masks[index]).sum()
            mask_iou = float(np.logical_and(silhouettes[index], masks[index]).sum() / both) if both else 1.0
            groups["iou"].append(iou)
            groups["silhouette_iou"].append(mask_iou)
            if index == 0 and len(rows) < gallery:
                rows.append({"views": [shown[0], silhouettes[0].astype(np.uint8) * 255, masks[0].astype(np.uint8) * 255],
                             "predicted": predicted, "truth": truth,
                             "caption": f"{sample.get('id', '')} ({sample['category']}) voxel IoU = {iou:.3f}"})
        objects += 1

    def mean(values: list[float]) -> float:  # NaN for no objects (the caller says so)
        return float(np.mean(values)) if values else float("nan")

    everything = {key: [v for g in per_category.values() for v in g[key]] for key in ("iou", "silhouette_iou")}
    report = {"mean_iou": mean(everything["iou"]), "mean_silhouette_iou": mean(everything["silhouette_iou"]),
              "per_category": {c: {"iou": mean(g["iou"]), "silhouette_iou": mean(g["silhouette_iou"]),
                                   "predictions": len(g["iou"])} for c, g in sorted(per_category.items())},
              "objects": objects, "views": views or "all",
              "published_mean_iou": dict(PUBLISHED_MEAN_IOU),
              "published_note": "mean voxel IoU over the 13 ShapeNet classes of the 3D-R2N2 split at 32^3 "
                                "(Liu et al., ICCV 2019, Table 1); comparable only on those classes and data"}
    if gallery:
        report["gallery"] = rows
    return report
