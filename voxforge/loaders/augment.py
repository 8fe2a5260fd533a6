"""One fused pass per training view: background swap, flip, colour changes, normalization, CHW layout.

Why a compiled kernel: done as separate numpy steps, re-compositing, the colour jitter / PCA lighting
/ RGB permutation, clipping, normalization and the HWC -> CHW copy each walk the whole image again and
allocate a temporary, which cost more than decoding the PNGs. Every step is a per-pixel, per-channel
map, so one loop computes the final value of each output pixel once:

    x   = image[src] + (background[src] - old_background[src]) * (1 - alpha / 255)   (re-composite)
    y   = clip(x * scale[src] + offset[src], 0, 255)                                  (jitter, PCA noise)
    out = y * norm_scale[c] + norm_offset[c]                                          (/255, ImageNet)

with ``src = order[c]`` (RGB permutation) and the column mirrored when flipping. The result equals the
numpy reference (:func:`reference_view`) to float32 rounding; a test checks it.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def compose_view(image, alpha, old_background, new_color, new_image, use_image, recomposite, flip, order, scale, offset,
                 norm_scale, norm_offset, out, mask):
    """Write one view into ``out`` (3, H, W) float32 and ``mask`` (H, W) bool (alpha >= 128)."""
    height, width = alpha.shape
    low, high, inverse = np.float32(0.0), np.float32(255.0), np.float32(1.0 / 255.0)
    for row in range(height):
        for column in range(width):
            mask[row, column] = alpha[row, width - 1 - column if flip else column] >= 128
    for channel in range(3):  # channel-major: each output plane is written contiguously
        src = order[channel]
        a, o = scale[src], offset[src]
        n_scale, n_offset = norm_scale[channel], norm_offset[channel]
        change = new_color[src] - old_background[src]
        for row in range(height):
            for column in range(width):
                source_column = width - 1 - column if flip else column
                x = np.float32(image[row, source_column, src])
                if recomposite:
                    if use_image:
                        change = new_image[row, source_column, src] - old_background[src]
                    x += change * (np.float32(1.0) - np.float32(alpha[row, source_column]) * inverse)
                y = min(max(x * a + o, low), high)
                out[channel, row, column] = y * n_scale + n_offset


def reference_view(image, alpha, old_background, new_background, flip, order, scale, offset, norm_scale, norm_offset):
    """The same view computed step by step in numpy (the definition the kernel is tested against)."""
    x = image.astype(np.float32)
    if new_background is not None:
        change = np.asarray(new_background, np.float32) - np.asarray(old_background, np.float32)
        x = x + change * (1.0 - alpha.astype(np.float32)[..., None] / 255.0)
    if flip:
        x, alpha = x[:, ::-1], alpha[:, ::-1]
    y = np.clip(x * scale + offset, 0.0, 255.0)[..., order]
    return (y * norm_scale + norm_offset).transpose(2, 0, 1), alpha >= 128


def warm_up() -> None:
    """Compile (or load from numba's cache) before DataLoader workers fork, so they inherit the code."""
    pixel = np.zeros((1, 1), np.uint8)
    three = np.zeros(3, np.float32)
    compose_view(np.zeros((1, 1, 3), np.uint8), pixel, three, three, np.zeros((1, 1, 3), np.float32), False, True,
                 False, np.arange(3), three, three, three, three, np.empty((3, 1, 1), np.float32), np.empty((1, 1), bool))
