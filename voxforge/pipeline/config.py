"""The run's configuration: one dataclass, saved whole in ``dataset.json`` with every dataset."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields

# Settings that change what a sample contains: a resumed run must use the same values, or the
# dataset would mix two kinds of samples.
SAMPLE_DEFINING = (
    "source", "views", "size", "resolution", "fill", "voxel_surface", "wireframe", "points", "even_points",
    "backgrounds", "background_color", "seed", "renderer", "supersample", "split_ratios", "save_depth",
    "split_mode", "camera_layout", "azimuth", "elevation", "distance", "focal", "keep_in_frame", "voxel_samples",
    "voxel_extent", "fps_prefix", "cycles_samples", "denoise",
)
CYCLES_RENDERERS = ("blender", "blender-cycles")  # the renderers --cycles-samples and --denoise apply to
# voxforge.renderers.RENDERERS' names (a test checks they agree; that module imports the renderers' base)
RENDERER_NAMES = ("pyrender", "blender", "blender-cycles", "blender-workbench", "blender-eevee")


@dataclass
class RunConfig:
    source: str = "procedural"
    path: str | None = None  # folder for the local source
    category_map: str | None = None  # JSON/CSV path -> category for the local source
    categories: list[str] | None = None  # None = every category of the source
    limit: int | None = None  # at most this many objects, balanced across categories
    preset: str | None = None  # r2n2, softras, pointcloud: a published setup (voxforge.pipeline.presets)
    views: int = 24
    size: int = 127
    # cameras (defaults: 3D-R2N2's renders); distances in object-frame units (unit bbox diagonal)
    camera_layout: str = "random"  # random: uniform in the ranges; orbit: azimuths evenly spaced over the range
    azimuth: tuple[float, float] = (0.0, 360.0)
    elevation: tuple[float, float] = (25.0, 30.0)
    distance: tuple[float, float] = (0.65 * 1.75, 0.95 * 1.75)
    focal: float = 2.1875  # focal length in half-image units
    keep_in_frame: bool = True  # raise a distance where the object would leave the image
    resolution: int = 32
    fill: str = "carve"
    voxel_surface: str = "raster"  # binvox's rasterization (ShapeNet's files) or "exact" (binvox -e)
    wireframe: bool = False  # also voxelize every triangle edge (binvox -aw): no thin part can vanish
    voxel_samples: int | None = None  # sample lines per voxel edge (binvox's own: 1); None = 128 across the cube
    voxel_extent: float | None = None  # edge of a fixed voxel cube centred at the origin; None = the object's box
    points: int = 16384
    even_points: bool = False  # farthest-point subset of 8x as many samples: evenly spaced clouds
    fps_prefix: int = 0  # reorder points so the first N are a farthest-point subset of all of them
    backgrounds: str | None = None  # folder of photos (PASCAL VOC JPEGImages)
    background_color: tuple[int, int, int] = (255, 255, 255)
    out: str = "data/dataset"
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)  # 0 with an address: every CPU of the cluster
    seed: int = 0
    address: str | None = None  # Ray cluster address; None = start Ray on this machine
    renderer: str = "pyrender"
    supersample: int = 2  # render NxN larger and average: anti-aliased edges (1 = off, fastest)
    cycles_samples: int = 4  # Cycles: light samples per rendered pixel (x supersample**2 per output pixel)
    denoise: bool = False  # Cycles: OpenImageDenoise on every view (docs/rendering.md: slower, blurs texture)
    split_ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    shard_size: int = 64  # objects per shard (at most)
    min_shards: int = 8  # ... fewer per shard where a split would otherwise get fewer shards (training readers)
    timeout: float = 300.0  # seconds one object may take in a worker before it is failed
    max_attempts: int = 2  # a worker crash/time-out on the same object this often -> failed
    recycle_after: int | None = None  # replace a worker after this many objects (None: renderer's default, 0: never)
    worker_memory_gb: float | None = None  # ... or above this resident memory (None: renderer's default, 0: never)
    # hard cap on a worker's private memory (RLIMIT_DATA), enforced by the kernel while an object is made:
    # an object needing more fails with MemoryError instead of taking the node down (0: no cap)
    object_memory_gb: float = 16.0
    max_triangles: int = 10_000_000  # a file declaring more (polygons split, instances placed) is failed unread
    max_texture_pixels: int = 8192 * 8192  # a texture image larger than this (header) is left out, with a warning
    retry_failed: bool = False
    save_depth: bool = False
    progress: bool = True
    fault_injection: dict[str, str] = field(default_factory=dict)  # tests: object_id -> "crash"|"hang"|"error"|"stop"
    # download sources (shapenet, objaverse, objaverse-xl)
    cache: str | None = None  # shared download cache; None = $VOXFORGE_CACHE or ~/.cache/voxforge
    keep_meshes: bool = False  # keep downloaded meshes after their samples are made (default: evict)
    licenses: list[str] | None = None  # licence filter: by, by-sa, by-nd, by-nc, by-nc-sa, cc0, ... or "commercial"
    split_mode: str = "hash"  # "hash": from split_ratios; "r2n2": 3D-R2N2's split (split_file)
    split_file: str | None = None  # Pix2Vox ShapeNet.json with the 3D-R2N2 train/val/test ids
    xl_sources: list[str] | None = None  # objaverse-xl: sketchfab, smithsonian, thingiverse, github (None = all)
    file_types: list[str] | None = None  # objaverse-xl file types (None = those the loader reads)
    match_keywords: bool = False  # objaverse-xl: pick objects without LVIS labels by keywords in names/metadata
    downloads: int = 4  # parallel downloads (Ray tasks that hold no CPU)
    download_timeout: float = 60.0
    download_retries: int = 4
    download_backoff: float = 1.0
    mirrors: dict[str, str] = field(default_factory=dict)  # URL prefix -> replacement (hosts other than the Hub)

    def as_dict(self) -> dict:
        return asdict(self)

    def renderer_options(self) -> dict:
        """Keyword arguments of the renderer class beyond ``size`` and ``supersample``."""
        if self.renderer in CYCLES_RENDERERS:
            return {"samples": self.cycles_samples, "denoise": self.denoise}
        return {}

    @classmethod
    def from_dict(cls, values: dict) -> "RunConfig":
        known = {f.name for f in fields(cls)}
        config = cls(**{k: v for k, v in values.items() if k in known})
        config.background_color = tuple(config.background_color)
        config.split_ratios = tuple(config.split_ratios)
        config.azimuth, config.elevation, config.distance = (
            tuple(config.azimuth), tuple(config.elevation), tuple(config.distance))
        return config

    def validate(self) -> None:
        checks = [
            (self.views >= 1, "--views must be at least 1"),
            (16 <= self.size <= 4096, "--size must be in 16..4096"),
            (2 <= self.resolution <= 512, "--resolution must be in 2..512"),
            (self.fill in ("carve", "carve-dilated", "flood", "none"), "--fill must be carve, carve-dilated, flood or none"),
            (self.voxel_surface in ("raster", "exact"), "--voxel-surface must be raster or exact"),
            (self.points >= 1, "--points must be at least 1"),
            (self.workers >= 1 or (self.workers == 0 and self.address), "--workers must be at least 1"),
            (self.renderer in RENDERER_NAMES,
             f"unknown --renderer {self.renderer!r}; choose one of {', '.join(RENDERER_NAMES)}"),
            (1 <= self.supersample <= 4, "--supersample must be in 1..4"),
            (1 <= self.cycles_samples <= 4096, "--cycles-samples must be in 1..4096"),
            (self.renderer in CYCLES_RENDERERS or (self.cycles_samples == 4 and not self.denoise),
             "--cycles-samples and --denoise apply to --renderer blender (Cycles) only"),
            (self.shard_size >= 1, "--shard-size must be at least 1"),
            (self.min_shards >= 1, "--min-shards must be at least 1"),
            (self.recycle_after is None or self.recycle_after >= 0, "--recycle-after must be at least 0"),
            (self.worker_memory_gb is None or self.worker_memory_gb >= 0, "--worker-memory-gb must be at least 0"),
            (self.object_memory_gb >= 0, "--object-memory-gb must be at least 0"),
            (self.max_triangles >= 0, "--max-triangles must be at least 0"),
            (self.max_texture_pixels >= 0, "--max-texture-pixels must be at least 0"),
            (self.limit is None or self.limit >= 1, "--limit must be at least 1"),
            (self.downloads >= 1, "--downloads must be at least 1"),
            (self.download_retries >= 0 and self.download_timeout > 0 and self.download_backoff >= 0,
             "--download-retries must be >= 0, --download-timeout > 0, --download-backoff >= 0"),
            (self.split_mode in ("hash", "r2n2"), "--split must be hash or r2n2"),
            (self.split_mode == "hash" or self.source == "shapenet", "--split r2n2 applies to the shapenet source"),
            (self.camera_layout in ("random", "orbit"), "--camera-layout must be random or orbit"),
            (len(self.elevation) == 2 and len(self.azimuth) == 2 and len(self.distance) == 2
             and 0 < min(self.distance) and self.focal > 0,
             "--azimuth/--elevation/--distance take MIN,MAX (distances and --focal positive)"),
            (self.voxel_samples is None or self.voxel_samples >= 1, "--voxel-samples must be at least 1"),
            (self.voxel_extent is None or self.voxel_extent > 0, "--voxel-extent must be positive"),
            (0 <= self.fps_prefix <= self.points, "--fps-prefix must be in 0..--points"),
            (len(self.split_ratios) == 3 and min(self.split_ratios) >= 0 and sum(self.split_ratios) > 0,
             "--splits needs three non-negative ratios train,val,test"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
