"""The evaluation table: IoU at each threshold per category and view count, beside the published
3D-R2N2 figures.

The published per-category figures come from the ``baseline`` field of Pix2Vox's ``ShapeNet.json``
(``{"1-view": .., ..., "5-view": ..}`` per synset). They are the numbers of Choy et al.'s per-class
table (res3d-gru-3 on the ShapeNet test split) and 3D-R2N2 computes IoU with the occupancy probability
thresholded at 0.4 (``TEST.VOXEL_THRESH = [0.4]`` in its released configuration); Pix2Vox prints them
beside its own thresholds unchanged. Compare them with our 0.4 column.
"""

from __future__ import annotations

import json
from pathlib import Path

BASELINE_THRESHOLD = "0.4"
BASELINE_SOURCE = "3D-R2N2 published (Choy et al. 2016, res3d-gru-3, IoU at threshold 0.4)"


def load_baselines(path: str | Path) -> dict[str, dict[str, float]]:
    """synset id -> {"1": IoU, ..., "5": IoU} from a Pix2Vox-style taxonomy JSON (entries without one skipped)."""
    entries = json.loads(Path(path).read_text())
    baselines: dict[str, dict[str, float]] = {}
    for entry in entries:
        figures = entry.get("baseline") or {}
        views = {key.split("-")[0]: float(value) for key, value in figures.items() if key.endswith("-view")}
        if views:
            baselines[str(entry["taxonomy_id"])] = views
    return baselines


def synset_of(category: str, synset_id: str | None = None) -> str | None:
    """The ShapeNet synset of a category: the sample's own id, else its name or a common synonym."""
    from voxforge.pipeline.sources.shapenet_taxonomy import NAME_TO_SYNSET, SYNONYMS, SYNSET_TO_NAME

    if synset_id and synset_id in SYNSET_TO_NAME:
        return synset_id
    name = category.strip().lower().replace(" ", "_")
    if name in SYNSET_TO_NAME:
        return name
    return NAME_TO_SYNSET.get(SYNONYMS.get(name, name))


def attach_baselines(report: dict, baselines: dict[str, dict[str, float]], synsets: dict[str, str | None]) -> dict:
    """Add ``report["baseline"]``: per category (the categories that have one) and the mean over those.

    ``synsets``: category -> synset id (see :func:`synset_of`). The mean is over categories, like the
    published table's; the view counts are those the report has.
    """
    per_category = {}
    for category in report["per_category"]:
        synset = synsets.get(category)
        if synset in baselines:
            per_category[category] = {"synset_id": synset, **baselines[synset]}
    views = sorted(report["per_views"], key=int)
    mean = {}
    for count in views:
        values = [figures[count] for figures in per_category.values() if count in figures]
        if values:
            mean[count] = sum(values) / len(values)
    report["baseline"] = {"source": BASELINE_SOURCE, "threshold": float(BASELINE_THRESHOLD),
                          "per_category": per_category, "mean_over_these_categories": mean}
    return report


def _objects(count: int) -> str:
    return f"{count} object{'' if count == 1 else 's'}"


def format_table(report: dict, split: str) -> str:
    """The printed table: one row per category (at the largest view count) and per view count."""
    thresholds = sorted(report["mean_iou"], key=float)
    most = max(report["per_views"], key=int)
    baseline = report.get("baseline", {}).get("per_category", {})
    head = "  ".join(f"IoU@{t}" for t in thresholds)
    lines = [f"{_objects(report['objects'])}, {split} split; IoU of occupancy > threshold"
             + (f"; published = {BASELINE_SOURCE}" if baseline else "")]
    lines.append(f"  {'':<20} {head}" + ("  published@0.4" if baseline else ""))

    def row(name: str, values: dict, published: float | None) -> str:
        cells = "  ".join(f"{values[t]:>{len('IoU@') + len(t)}.3f}" for t in thresholds)
        extra = f"  {published:>14.3f}" if published is not None else ("  " + " " * 13 + "-" if baseline else "")
        return f"  {name:<20} {cells}{extra}"

    lines.append(row(f"mean ({most} views)", report["mean_iou"], None))
    for category, values in sorted(report["per_category"].items()):
        lines.append(row(f"{category} ({most} view{'s' if most != '1' else ''})", values,
                         baseline.get(category, {}).get(most)))
    mean_baseline = report.get("baseline", {}).get("mean_over_these_categories", {})
    for count, values in sorted(report["per_views"].items(), key=lambda item: int(item[0])):
        lines.append(row(f"{count} view{'s' if count != '1' else ''}", values, mean_baseline.get(count)))
    if baseline:
        lines.append("  (published figures of the view-count rows: mean over the categories listed above)")
    return "\n".join(lines)
