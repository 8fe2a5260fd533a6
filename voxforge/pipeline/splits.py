"""Deterministic train/val/test assignment from the object id alone (stable when sources grow)."""

from __future__ import annotations

import hashlib

from voxforge.loaders.format import SPLITS


def unit_hash(*parts: object) -> float:
    """A number in [0, 1) fixed by ``parts``."""
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") / 2.0**64


def assign_split(object_id: str, ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> str:
    position = unit_hash("split", object_id) * sum(ratios)
    cumulative = 0.0
    for name, ratio in zip(SPLITS, ratios):
        cumulative += ratio
        if position < cumulative:
            return name
    return next(name for name, ratio in zip(reversed(SPLITS), reversed(ratios)) if ratio > 0)


def object_seed(seed: int, object_id: str, purpose: str) -> int:
    """Independent, reproducible random streams per object and purpose (cameras, lights, points)."""
    return int(unit_hash(seed, object_id, purpose) * 2.0**63)
