"""Point-cloud evaluation under named conventions, so figures are compared like with like.

Published Chamfer / EMD / F-score numbers differ by orders of magnitude only because of conventions.
Each convention here fixes every one of them:

- ``normalization`` of each cloud before comparing: ``none`` (as stored: voxforge's object frame, bbox
  centred with unit diagonal, ShapeNet v1's), ``unit-cube`` (3D-LMNet's ``scale``: each cloud on its own
  moved to its bounding-box centre and scaled so its longest side is 1, i.e. into [-0.5, 0.5]^3),
  ``unit-sphere`` (centroid at the origin, farthest point at radius 1).
- ``icp``: rigidly align the prediction to the ground truth first (point-to-point ICP), as 3D-LMNet's
  and 3D-ReConstNet's evaluation scripts do.
- ``squared`` and ``combine``: see :mod:`voxforge.models.reconstnet.losses`.

F-scores (Tatarchenko et al. 2019) use unsquared distances at thresholds in the normalized units:
precision = share of predicted points within the threshold of the ground truth, recall the converse.

The frame (object or view-centred) is a property of the model's target, not of the metric: a model
trained on view-centred targets (PSGN predicts in the input camera's frame) is evaluated against
ground truth rotated the same way (see ``frame`` in :mod:`voxforge.models.reconstnet.train`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial import cKDTree

from voxforge.models.reconstnet.losses import COMBINE_MODES, chamfer_distance, sinkhorn_emd

NORMALIZATIONS = ("none", "unit-cube", "unit-sphere")


@dataclass(frozen=True)
class Convention:
    name: str
    normalization: str
    icp: bool
    squared: bool
    combine: str
    description: str
    fscore_thresholds: tuple[float, ...] = (0.01, 0.02, 0.05)


CONVENTIONS = {c.name: c for c in (
    Convention("lmnet", "unit-cube", icp=True, squared=False, combine="sum",
               description="3D-LMNet / 3D-ReConstNet evaluation code: each cloud scaled into [-0.5, 0.5]^3 by its "
                           "own bounding box, prediction ICP-aligned to the ground truth, sqrt distances, the two "
                           "directions' means summed (their tables print these x 100)"),
    Convention("psgn", "none", icp=False, squared=True, combine="sum",
               description="PSGN's Chamfer form: squared distances, the two directions' means summed, clouds "
                           "compared as predicted (no rescaling, no alignment)"),
    Convention("plain", "none", icp=False, squared=False, combine="average",
               description="object frame as stored (unit bbox diagonal), no alignment, unsquared distances, "
                           "average of the two directions"),
)}


def normalize_cloud(points: np.ndarray, normalization: str) -> np.ndarray:
    """One cloud (N, 3) normalized as named (see the module docstring)."""
    points = np.asarray(points, np.float64)
    if normalization == "none":
        return points
    if normalization == "unit-cube":
        low, high = points.min(axis=0), points.max(axis=0)
        return (points - (low + high) / 2.0) / max(float((high - low).max()), 1e-12)
    if normalization == "unit-sphere":
        centred = points - points.mean(axis=0)
        return centred / max(float(np.linalg.norm(centred, axis=1).max()), 1e-12)
    raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")


def best_rigid_transform(source: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotation R and translation t minimizing sum |R s + t - t_i|^2 over paired points (Kabsch, no reflection)."""
    source_centre, target_centre = source.mean(axis=0), target.mean(axis=0)
    u, _, vt = np.linalg.svd((source - source_centre).T @ (target - target_centre))
    correction = np.diag([1.0, 1.0, np.sign(np.linalg.det(vt.T @ u.T))])
    rotation = vt.T @ correction @ u.T
    return rotation, target_centre - rotation @ source_centre


def icp_align(source: np.ndarray, target: np.ndarray, iterations: int = 50, tolerance: float = 1e-7) -> np.ndarray:
    """``source`` rigidly moved onto ``target`` by point-to-point ICP (nearest neighbours, Kabsch steps)."""
    tree = cKDTree(target)
    moved = np.asarray(source, np.float64).copy()
    previous = np.inf
    for _ in range(iterations):
        distances, nearest = tree.query(moved)
        error = float(np.mean(distances ** 2))
        if previous - error < tolerance:
            break
        previous = error
        rotation, translation = best_rigid_transform(moved, target[nearest])
        moved = moved @ rotation.T + translation
    return moved


def fscores(pred: np.ndarray, target: np.ndarray, thresholds) -> dict[str, float]:
    """F-score at each threshold (unsquared distances), keyed by the threshold as text."""
    to_target = cKDTree(target).query(pred)[0]
    to_pred = cKDTree(pred).query(target)[0]
    scores = {}
    for threshold in thresholds:
        precision, recall = float(np.mean(to_target < threshold)), float(np.mean(to_pred < threshold))
        scores[f"{threshold:g}"] = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return scores


def evaluate_cloud(pred, target, convention: Convention | str, emd: bool = False) -> dict:
    """Chamfer, F-scores (and optionally an approximate EMD) of one predicted cloud under a convention."""
    convention = CONVENTIONS[convention] if isinstance(convention, str) else convention
    if convention.combine not in COMBINE_MODES:
        raise ValueError(f"unknown combine {convention.combine!r}")
    pred = normalize_cloud(pred, convention.normalization)
    target = normalize_cloud(target, convention.normalization)
    if convention.icp:
        pred = icp_align(pred, target)
    pred_t, target_t = torch.from_numpy(pred)[None], torch.from_numpy(target)[None]
    result = {"chamfer": float(chamfer_distance(pred_t, target_t, convention.squared, convention.combine)[0]),
              "fscore": fscores(pred, target, convention.fscore_thresholds)}
    if emd and len(pred) == len(target):  # approximate, an upper bound of the exact value (see sinkhorn_emd)
        result["emd"] = float(sinkhorn_emd(pred_t, target_t, squared=convention.squared)[0])
    return result
