"""How far two renderers agree on what an object looks like, view by view, not only on its silhouette.

Both renders must show the same object with the same cameras and light rigs (a
:class:`voxforge.renderers.base.RenderResult` each). Per view, over the object region (pixels where both
alphas are >= 128):

- ``luma``: mean luma of each render, Y' = 0.2126 R' + 0.7152 G' + 0.0722 B' on the stored (sRGB-encoded)
  values, 0..255 (Rec. 709 weights), and ``luma_ratio`` = second / first;
- ``color``: mean R', G', B' of each render;
- ``luma_distance``: the 1-Wasserstein distance between the two renders' luma distributions over the
  region (0..255 units; scipy's ``wasserstein_distance``): 0 when the histograms match, whatever the pixels;
- ``ssim``: the structural similarity of the two luma images (Wang, Bovik, Sheikh and Simoncelli, IEEE TIP
  2004: Gaussian window sigma 1.5, K1 0.01, K2 0.03, data range 255; scikit-image's
  ``structural_similarity``) averaged over the object region: 1 for identical structure.

:func:`shading_agreement` also gives the medians over the views; :func:`dark_views` flags views whose
object is darker than a floor.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

LUMA_WEIGHTS = np.array([0.2126, 0.7152, 0.0722])  # Rec. 709
COVERED = 128  # alpha at or above this is the object (voxforge's mask threshold)


@dataclass(frozen=True)
class ViewAgreement:
    luma: tuple[float, float]
    luma_ratio: float
    color: tuple[tuple[float, float, float], tuple[float, float, float]]
    luma_distance: float
    ssim: float
    pixels: int  # object pixels compared

    def as_dict(self) -> dict:
        return asdict(self)


def luma(color: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 or float sRGB-encoded colour -> (...) float64 luma in 0..255."""
    return np.asarray(color, np.float64) @ LUMA_WEIGHTS


def view_agreement(color_a: np.ndarray, alpha_a: np.ndarray, color_b: np.ndarray, alpha_b: np.ndarray) -> ViewAgreement:
    """Agreement of one view: colours (H, W, 3) uint8 and alphas (H, W) uint8 of the two renders.

    Raises ValueError when the shapes differ or the two renders share no object pixel."""
    from scipy.stats import wasserstein_distance
    from skimage.metrics import structural_similarity

    if color_a.shape != color_b.shape or alpha_a.shape != alpha_b.shape:
        raise ValueError(f"the renders differ in size: {color_a.shape} and {color_b.shape}")
    region = (alpha_a >= COVERED) & (alpha_b >= COVERED)
    if not region.any():
        raise ValueError("the two renders share no object pixel: compare masks first")
    y_a, y_b = luma(color_a), luma(color_b)
    _, ssim_map = structural_similarity(y_a, y_b, data_range=255.0, gaussian_weights=True, sigma=1.5,
                                        use_sample_covariance=False, full=True)
    mean_a, mean_b = float(y_a[region].mean()), float(y_b[region].mean())
    return ViewAgreement(
        luma=(mean_a, mean_b), luma_ratio=mean_b / max(mean_a, 1e-9),
        color=(tuple(float(c) for c in color_a[region].mean(axis=0)),
               tuple(float(c) for c in color_b[region].mean(axis=0))),
        luma_distance=float(wasserstein_distance(y_a[region], y_b[region])),
        ssim=float(ssim_map[region].mean()), pixels=int(region.sum()))


def shading_agreement(first, second) -> dict:
    """Per-view :class:`ViewAgreement` of two :class:`~voxforge.renderers.base.RenderResult` of the same
    views, and their medians: ``{"views": [...], "median": {"luma_ratio", "luma_distance", "ssim"}}``."""
    if first.color.shape != second.color.shape:
        raise ValueError(f"the renders differ in views or size: {first.color.shape} and {second.color.shape}")
    views = [view_agreement(first.color[v], first.alpha[v], second.color[v], second.alpha[v])
             for v in range(len(first.color))]
    median = {name: float(np.median([getattr(view, name) for view in views]))
              for name in ("luma_ratio", "luma_distance", "ssim")}
    return {"views": [view.as_dict() for view in views], "median": median}


def object_luma(color: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """(V,) mean luma of each view's object pixels (NaN for a view without any)."""
    values = []
    for view_color, view_alpha in zip(color, alpha):
        region = view_alpha >= COVERED
        values.append(float(luma(view_color[region]).mean()) if region.any() else float("nan"))
    return np.asarray(values)


def dark_views(color: np.ndarray, alpha: np.ndarray, floor: float) -> list[int]:
    """Views whose object's mean luma is below ``floor`` (0..255), or that show no object at all."""
    means = object_luma(color, alpha)
    return [int(v) for v in np.flatnonzero(~(means >= floor))]
