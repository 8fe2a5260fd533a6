"""Silhouette IoU and its loss, as Neural Mesh Renderer and Soft Rasterizer train single-view models
from masks alone (self-supervised by the other views' silhouettes).

Soft IoU of two silhouettes A, B with values in [0, 1]: |A*B| / |A + B - A*B| summed over pixels;
the loss is 1 - IoU averaged over the batch. Differentiable in both arguments, any device.
"""

from __future__ import annotations

import torch


def silhouette_iou(predicted: torch.Tensor, target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-sample soft IoU (B,) of silhouettes (B, ...) in [0, 1] (hard 0/1 masks give the usual IoU)."""
    if predicted.shape != target.shape:
        raise ValueError(f"silhouettes differ in shape: {tuple(predicted.shape)} and {tuple(target.shape)}")
    predicted, target = predicted.float().flatten(1), target.float().flatten(1)
    intersection = (predicted * target).sum(dim=1)
    union = (predicted + target - predicted * target).sum(dim=1) + eps
    return intersection / union


def silhouette_iou_loss(predicted: torch.Tensor, target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """1 - mean soft IoU over the batch (SoftRas's ``iou_loss``)."""
    return 1.0 - silhouette_iou(predicted, target, eps).mean()
