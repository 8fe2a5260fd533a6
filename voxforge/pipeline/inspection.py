"""``pipeline inspect``: counts, failures and a contact sheet a person can look at."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from voxforge.loaders import open_dataset
from voxforge.pipeline.manifest import Manifest
from voxforge.renderers.cameras import project


def summarize(path: str | Path) -> str:
    """Counts per split and category, and every failure with its reason."""
    rows = Manifest(path).rows().values()
    ok = [r for r in rows if r["status"] == "ok"]
    failed = [r for r in rows if r["status"] == "failed"]
    per = Counter((r["split"], r["category"]) for r in ok)
    categories = sorted({c for _, c in per})
    splits = ("train", "val", "test")
    width = max([len(c) for c in categories] + [8])
    lines = [f"{'category':<{width}} " + " ".join(f"{s:>6}" for s in splits) + "  total"]
    for category in categories:
        counts = [per[(s, category)] for s in splits]
        lines.append(f"{category:<{width}} " + " ".join(f"{c:>6}" for c in counts) + f"  {sum(counts):>5}")
    totals = [sum(per[(s, c)] for c in categories) for s in splits]
    lines.append(f"{'total':<{width}} " + " ".join(f"{c:>6}" for c in totals) + f"  {sum(totals):>5}")
    lines.append(f"failed: {len(failed)}")
    for row in failed:
        lines.append(f"  {row['id']} ({row['category']}): {row['error']}")
    lines += warning_lines(ok)
    lines += render_lines(ok)
    return "\n".join(lines)


def warning_kind(warning: str) -> str:
    """A warning's kind: its words before the first colon, quoted names and numbers left out
    ("texture image '…' is missing")."""
    head = warning.split(":", 1)[0].split(" (", 1)[0]
    return re.sub(r"'[^']*'|\d+", "…", head)


def warning_lines(rows: list[dict], examples: int = 3) -> list[str]:
    """Samples with warnings (kept, but something in their file was not fully honoured), per kind with
    a few examples."""
    warned = [r for r in rows if r.get("warnings")]
    if not warned:
        return []
    kinds: dict[str, list[tuple[str, str]]] = {}
    for row in warned:
        for warning in row["warnings"]:
            kinds.setdefault(warning_kind(warning), []).append((row["id"], warning))
    lines = [f"with warnings: {len(warned)}"]
    for kind, found in sorted(kinds.items(), key=lambda item: -len(item[1])):
        lines.append(f"  {len(found)} x {kind}")
        lines += [f"    {object_id}: {warning}" for object_id, warning in found[:examples]]
    return lines


DARK_LUMA = 30.0  # mean object luma (0..255) below which a view counts as nearly black


def render_lines(rows: list[dict], floor: float = DARK_LUMA, examples: int = 3) -> list[str]:
    """Samples with a view whose object came out nearly black (mean luma below ``floor`` under the light rig
    it was rendered with) or with nothing rendered, from the manifest's ``object_luma``: a renderer's
    artefact (a mesh it shades wrongly) rather than the object's look, worth a glance before training."""
    flagged = []
    for row in rows:
        values = row.get("object_luma")
        if not values:
            continue
        empty = [view for view, value in enumerate(values) if value is None]
        dark = [view for view, value in enumerate(values) if value is not None and value < floor]
        if empty or dark:
            flagged.append((row["id"], empty, dark, values))
    if not flagged:
        return []
    lines = [f"dark or empty renders: {len(flagged)} (a view with nothing rendered, or an object whose mean luma "
             f"is below {floor:g} of 255)"]
    for object_id, empty, dark, values in flagged[:examples]:
        parts = ([f"empty view{'s' if len(empty) > 1 else ''} {', '.join(map(str, empty))}"] if empty else []) + \
            ([f"dark view{'s' if len(dark) > 1 else ''} {', '.join(f'{v} ({values[v]:.0f})' for v in dark)}"]
             if dark else [])
        lines.append(f"  {object_id}: {'; '.join(parts)}")
    if len(flagged) > examples:
        lines.append(f"  ... and {len(flagged) - examples} more (manifest.jsonl: object_luma)")
    return lines


def _overlay(image: np.ndarray, sample: dict, view: int) -> Image.Image:
    """View with occupied voxel centres (red) and surface points (green) projected by the stored camera."""
    tile = Image.fromarray(image).convert("RGB")
    draw = ImageDraw.Draw(tile)
    K, world_to_camera = sample["K"][view], sample["world_to_camera"][view]
    centres = sample["voxel_origin"] + (np.argwhere(sample["voxels"]) + 0.5) * sample["voxel_size"]
    for points, color in ((centres, (255, 0, 0)), (sample["points"][::16], (0, 200, 0))):
        pixels, _ = project(points, K, world_to_camera)
        for u, v in pixels:
            draw.point((float(u), float(v)), fill=color)
    return tile


def _voxel_projections(voxels: np.ndarray, size: int) -> Image.Image:
    """Front, side and top silhouettes of the grid, side by side (y up in the picture)."""
    views = [voxels.any(axis=2).T[::-1], voxels.any(axis=0).T[::-1], voxels.any(axis=1).T]
    strip = np.concatenate([np.pad(v, 1, constant_values=True) for v in views], axis=1)
    picture = Image.fromarray((~strip * 255).astype(np.uint8))
    scale = max(1, size // strip.shape[0])
    return picture.resize((strip.shape[1] * scale, strip.shape[0] * scale), Image.NEAREST).convert("RGB")


def contact_sheet(path: str | Path, out: str | Path, samples: int = 8, views: int = 6) -> Path:
    """A PNG grid: one row per sample (views, mask, projection overlay, voxel silhouettes)."""
    rows = []
    for index, sample in enumerate(open_dataset(path)):
        if index >= samples:
            break
        images = sample["images"]
        size = images.shape[1]
        tiles = [Image.fromarray(images[v]) for v in range(min(views, len(images)))]
        tiles.append(Image.fromarray((sample["masks"][0] * 255).astype(np.uint8)).convert("RGB"))
        tiles.append(_overlay(images[0], sample, 0))
        tiles.append(_voxel_projections(sample["voxels"], size))
        width = sum(t.width for t in tiles)
        row = Image.new("RGB", (width, size + 14), "white")
        x = 0
        for tile in tiles:
            row.paste(tile, (x, 14))
            x += tile.width
        ImageDraw.Draw(row).text((2, 1), f"{sample['category']}  {sample['id']}", fill=(0, 0, 0))
        rows.append(row)
    if not rows:
        raise ValueError(f"{path} has no samples to show")
    sheet = Image.new("RGB", (max(r.width for r in rows), sum(r.height for r in rows)), "white")
    y = 0
    for row in rows:
        sheet.paste(row, (0, y))
        y += row.height
    out = Path(out)
    sheet.save(out)
    return out
