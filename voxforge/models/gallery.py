"""PNG gallery of reconstructions: input views, predicted voxels, ground-truth voxels, side by side.

Voxels are drawn as shaded cubes in an isometric view with PIL only (no matplotlib): each occupied
voxel with an empty neighbour on a visible side contributes its visible faces, painted far to near.
The grid is indexed [x, y, z] with +Y up (voxforge's object frame; the 3D-R2N2 layout reads into the
same frame).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# unit cube corners of the three faces seen from the (+x, +y, +z) octant, with their brightness
_FACES = (
    (np.array([[1, 0, 0], [1, 1, 0], [1, 1, 1], [1, 0, 1]]), (1, 0, 0), 0.75),  # +x
    (np.array([[0, 1, 0], [1, 1, 0], [1, 1, 1], [0, 1, 1]]), (0, 1, 0), 1.00),  # +y (top)
    (np.array([[0, 0, 1], [1, 0, 1], [1, 1, 1], [0, 1, 1]]), (0, 0, 1), 0.55),  # +z
)


def _isometric_axes() -> tuple[np.ndarray, np.ndarray]:
    toward_viewer = np.ones(3) / np.sqrt(3)
    right = np.cross([0.0, 1.0, 0.0], toward_viewer)
    right /= np.linalg.norm(right)
    up = np.cross(toward_viewer, right)
    return right, up


def render_voxels(occupancy: np.ndarray, size: int = 160, color=(70, 130, 200),
                  background=(255, 255, 255)) -> Image.Image:
    """An isometric picture of a boolean (R, R, R) grid; an empty grid gives a blank image."""
    grid = np.asarray(occupancy, bool)
    resolution = grid.shape[0]
    image = Image.new("RGB", (size, size), background)
    if not grid.any():
        return image
    right, up = _isometric_axes()
    scale = size / (resolution * np.sqrt(2) * 1.05)  # the cube's projected width is R * sqrt(2)
    centre = np.full(3, resolution / 2)
    padded = np.pad(grid, 1)
    draw = ImageDraw.Draw(image)
    polygons = []
    for corners, normal, shade in _FACES:
        neighbour = padded[1 + normal[0]:, 1 + normal[1]:, 1 + normal[2]:][:resolution, :resolution, :resolution]
        visible = np.argwhere(grid & ~neighbour)
        if not len(visible):
            continue
        points = (visible[:, None, :] + corners[None] - centre) @ np.stack([right, up], 1)  # (N, 4, 2)
        pixels = np.stack([size / 2 + scale * points[..., 0], size / 2 - scale * points[..., 1]], -1)
        depth = visible.sum(1) + sum(normal)  # nearer to the viewer = larger x + y + z
        fill = tuple(int(c * shade) for c in color)
        polygons.extend((d, [tuple(p) for p in quad], fill) for d, quad in zip(depth, pixels))
    for _, quad, fill in sorted(polygons, key=lambda item: item[0]):
        draw.polygon(quad, fill=fill, outline=tuple(max(0, c - 40) for c in fill))
    return image


def _to_uint8(view: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 or float in 0..1, or (3, H, W) float -> (H, W, 3) uint8."""
    view = np.asarray(view)
    if view.ndim == 3 and view.shape[0] == 3 and view.shape[-1] != 3:
        view = view.transpose(1, 2, 0)
    if view.dtype != np.uint8:
        view = np.clip(view * (255.0 if view.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    return view


def gallery(rows: list[dict], path: str | Path, tile: int = 127, max_views: int = 5) -> Path:
    """Write one row per object: its input views, the prediction and the ground truth, with captions.

    Each row dict: ``views`` (V images), ``predicted`` and ``truth`` (boolean grids) and an optional
    ``caption`` (e.g. id, category and IoU).
    """
    caption_height = 14
    width = tile * (max_views + 2)
    height = len(rows) * (tile + caption_height)
    sheet = Image.new("RGB", (max(width, 1), max(height, 1)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for index, row in enumerate(rows):
        top = index * (tile + caption_height)
        for column, view in enumerate(list(row["views"])[:max_views]):
            picture = Image.fromarray(_to_uint8(view)).resize((tile, tile))
            sheet.paste(picture, (column * tile, top + caption_height))
        sheet.paste(render_voxels(row["predicted"], tile), (max_views * tile, top + caption_height))
        sheet.paste(render_voxels(row["truth"], tile, color=(90, 170, 90)), ((max_views + 1) * tile,
                                                                             top + caption_height))
        caption = row.get("caption", "")
        draw.text((2, top + 1), f"{caption}   [prediction | ground truth]", fill=(0, 0, 0))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".partial")
    sheet.save(temporary, format="PNG")
    temporary.replace(path)
    return path
