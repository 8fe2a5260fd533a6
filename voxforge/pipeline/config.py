"""The run's configuration: one dataclass, saved whole in ``dataset.json`` with every dataset."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields

# Settings that change what a sample contains: a resumed run must use the same values, or the
# dataset would mix two kinds of samples.
SAMPLE_DEFINING = (
    "source", "views", "size", "resolution", "fill", "voxel_surface", "wireframe", "points", "even_points",
    "backgrounds", "background_color", "seed", "renderer", "supersample", "split_ratios", "save_depth",
)


@dataclass
class RunConfig:
    source: str = "procedural"
    path: str | None = None  # folder for the local source
    category_map: str | None = None  # JSON/CSV path -> category for the local source
    categories: list[str] | None = None  # None = every category of the source
    limit: int | None = None  # at most this many objects, balanced across categories
    views: int = 24
    size: int = 127
    resolution: int = 32
    fill: str = "carve"
    voxel_surface: str = "raster"  # binvox's rasterization (ShapeNet's files) or "exact" (binvox -e)
    wireframe: bool = False  # also voxelize every triangle edge (binvox -aw): no thin part can vanish
    points: int = 16384
    even_points: bool = False  # farthest-point subset of 8x as many samples: evenly spaced clouds
    backgrounds: str | None = None  # folder of photos (PASCAL VOC JPEGImages)
    background_color: tuple[int, int, int] = (255, 255, 255)
    out: str = "data/dataset"
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    seed: int = 0
    address: str | None = None  # Ray cluster address; None = start Ray on this machine
    renderer: str = "pyrender"
    supersample: int = 2  # render NxN larger and average: anti-aliased edges (1 = off, fastest)
    split_ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    shard_size: int = 64  # objects per shard
    timeout: float = 300.0  # seconds one object may take in a worker before it is failed
    max_attempts: int = 2  # a worker crash/time-out on the same object this often -> failed
    retry_failed: bool = False
    save_depth: bool = False
    progress: bool = True
    fault_injection: dict[str, str] = field(default_factory=dict)  # tests: object_id -> "crash"|"hang"|"error"

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "RunConfig":
        known = {f.name for f in fields(cls)}
        config = cls(**{k: v for k, v in values.items() if k in known})
        config.background_color = tuple(config.background_color)
        config.split_ratios = tuple(config.split_ratios)
        return config

    def validate(self) -> None:
        checks = [
            (self.views >= 1, "--views must be at least 1"),
            (16 <= self.size <= 4096, "--size must be in 16..4096"),
            (2 <= self.resolution <= 512, "--resolution must be in 2..512"),
            (self.fill in ("carve", "carve-dilated", "flood", "none"), "--fill must be carve, carve-dilated, flood or none"),
            (self.voxel_surface in ("raster", "exact"), "--voxel-surface must be raster or exact"),
            (self.points >= 1, "--points must be at least 1"),
            (self.workers >= 1, "--workers must be at least 1"),
            (1 <= self.supersample <= 4, "--supersample must be in 1..4"),
            (self.shard_size >= 1, "--shard-size must be at least 1"),
            (self.limit is None or self.limit >= 1, "--limit must be at least 1"),
            (len(self.split_ratios) == 3 and min(self.split_ratios) >= 0 and sum(self.split_ratios) > 0,
             "--splits needs three non-negative ratios train,val,test"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
