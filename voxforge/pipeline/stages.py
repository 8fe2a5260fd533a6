"""The per-object stages, and the Ray worker that runs them in sequence for each object.

load + normalize -> render V views -> composite backgrounds -> voxelize -> sample points -> encode.
The stages are plain functions; :class:`ObjectWorker` is the callable class Ray Data runs as an actor
pool (``map_batches(ObjectWorker, concurrency=N)``), so a renderer is set up once per worker process
and a mesh never travels between processes. Any error in one object becomes a failed row with its
reason; it never fails the Ray task.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import signal
import time
import traceback
from pathlib import Path

import numpy as np
from PIL import Image

from voxforge.loaders import format as fmt
from voxforge.pipeline.config import RunConfig
from voxforge.pipeline.isolation import AttemptGuard
from voxforge.pipeline.recycling import WorkerRecycler
from voxforge.pipeline.meshes import flatten, validate_and_normalize
from voxforge.pipeline.sources import ObjectRecord, load_record, local_mesh_file
from voxforge.pipeline.splits import object_seed
from voxforge.renderers import get_renderer, sample_lighting
from voxforge.renderers.base import attach_source_file
from voxforge.renderers.backgrounds import BackgroundPool, composite, list_background_images
from voxforge.renderers.cameras import CameraRanges, sample_cameras
from voxforge.voxelize import encode_binvox, sample_surface, voxelize
from voxforge.voxelize.grid import centered_bounds
from voxforge.voxelize.points import farthest_points_first


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_stage(record: ObjectRecord) -> dict:
    """Mesh in the object frame (the scene for rendering, one triangle soup for geometry)."""
    scene, normalization = validate_and_normalize(load_record(record))
    vertices, faces = flatten(scene)
    mesh_file = local_mesh_file(record)  # a download source's copy in the cache, else the record's uri
    source_hash = file_sha256(mesh_file) if os.path.isfile(mesh_file) else ""
    if source_hash:  # renderers that read the file themselves (Blender) place it with this matrix
        attach_source_file(scene, mesh_file, normalization.matrix())
    return {"scene": scene, "vertices": vertices, "faces": faces, "normalization": normalization,
            "source_sha256": source_hash}


def camera_ranges(config: RunConfig) -> CameraRanges:
    return CameraRanges(azimuth_deg=tuple(config.azimuth), elevation_deg=tuple(config.elevation),
                        distance=tuple(config.distance), focal_normalized=config.focal, layout=config.camera_layout,
                        keep_in_frame=config.keep_in_frame)


def render_stage(loaded: dict, renderer, config: RunConfig, object_id: str) -> dict:
    """Random cameras and lights, then the renderer's colour, alpha and depth."""
    radius = float(np.linalg.norm(loaded["vertices"][np.unique(loaded["faces"])], axis=1).max())
    cameras = sample_cameras(
        config.views, config.size, np.random.default_rng(object_seed(config.seed, object_id, "cameras")),
        camera_ranges(config), object_radius=radius,
    )
    lights = sample_lighting(config.views, np.random.default_rng(object_seed(config.seed, object_id, "lights")))
    result = renderer.render(loaded["scene"], cameras, lights)
    return {"cameras": cameras, "lights": lights, "render": result}


def composite_stage(rendered: dict, backgrounds: BackgroundPool, config: RunConfig, object_id: str) -> np.ndarray:
    """Each view over its own background crop (or the plain colour)."""
    rng = np.random.default_rng(object_seed(config.seed, object_id, "backgrounds"))
    result = rendered["render"]
    return np.stack([
        composite(result.color[v], result.alpha[v], backgrounds.sample(config.size, rng)) for v in range(len(result.color))
    ])


def geometry_stage(loaded: dict, config: RunConfig, object_id: str) -> dict:
    """Solid voxels in a cube centred on the object (edge = its longest extent, or ``voxel_extent`` around
    the origin) and surface points (the first ``fps_prefix`` of them a farthest-point subset)."""
    vertices, faces = loaded["vertices"], loaded["faces"]
    triangles = vertices[faces]
    bounds = centered_bounds(triangles) if config.voxel_extent is None else \
        (np.full(3, -config.voxel_extent / 2.0), float(config.voxel_extent))
    grid = voxelize(triangles, resolution=config.resolution, fill=config.fill, bounds=bounds,
                    surface=config.voxel_surface, samples=config.voxel_samples, wireframe=config.wireframe)
    points, normals = sample_surface(vertices, faces, config.points, seed=object_seed(config.seed, object_id, "points"),
                                     even=config.even_points)
    if config.fps_prefix:
        points, normals = farthest_points_first(points, normals, config.fps_prefix)
    return {"voxels": grid, "points": points, "normals": normals}


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def encode_stage(record: ObjectRecord, split: str, loaded: dict, rendered: dict, images: np.ndarray,
                 geometry: dict, config: RunConfig) -> dict[str, bytes]:
    """The sample's shard members (see docs/FORMAT.md)."""
    cameras, grid = rendered["cameras"], geometry["voxels"]
    meta = {
        "format_version": fmt.FORMAT_VERSION,
        "id": record.object_id, "category": record.category, "source": record.source, "split": split,
        "license": record.license, "synset_id": record.synset_id, "model_id": record.model_id,
        "source_uri": record.uri if record.source != "local" else os.path.basename(record.uri),
        "source_sha256": loaded["source_sha256"], "extra": record.extra,
        "normalization": loaded["normalization"].as_dict(),
        "image_size": config.size, "views": config.views, "renderer": config.renderer,
        "cameras": {
            "convention": "OpenCV: x right, y down, z forward; pixel centres at integers",
            "azimuth": cameras.azimuth.tolist(), "elevation": cameras.elevation.tolist(),
            "distance": cameras.distance.tolist(), "focal_normalized": cameras.focal_normalized.tolist(),
            "K": cameras.K.tolist(), "world_to_camera": cameras.world_to_camera.tolist(),
        },
        "lights": [rig.as_dict() for rig in rendered["lights"]],
        "voxels": {"resolution": grid.resolution, "origin": grid.origin.tolist(), "voxel_size": grid.voxel_size,
                   "fill": config.fill, "surface": config.voxel_surface, "wireframe": config.wireframe,
                   "occupied": int(grid.occupancy.sum())},
        "points": {"count": int(len(geometry["points"])), "evenly_spaced": config.even_points,
                   "fps_prefix": config.fps_prefix},
    }
    members = {fmt.META: json.dumps(meta, sort_keys=True).encode()}
    alpha = rendered["render"].alpha
    for view in range(len(images)):
        members[fmt.image_member(view)] = _png(images[view])
        members[fmt.mask_member(view)] = _png(alpha[view])
    members[fmt.VOXELS] = encode_binvox(grid)
    members[fmt.POINTS] = _npy(geometry["points"])
    members[fmt.NORMALS] = _npy(geometry["normals"])
    if config.save_depth:
        members[fmt.DEPTH] = _npy(rendered["render"].depth.astype(np.float16))
    return members


def _inject_fault(kind: str) -> None:
    """Test hook: behave like a renderer that crashes, hangs or raises on this object."""
    if kind == "crash":
        os.kill(os.getpid(), signal.SIGSEGV)
    elif kind == "hang":
        while True:
            time.sleep(1)
    elif kind == "error":
        raise RuntimeError("injected renderer error")


class ObjectWorker:
    """A Ray Data actor: one renderer per worker process, reused for every object it gets."""

    def __init__(self, config: dict, run_token: str) -> None:
        self.config = RunConfig.from_dict(config)
        # one worker per CPU is the parallelism; Mesa's software rasterizer would add a thread per core
        os.environ.setdefault("LP_NUM_THREADS", "1")
        self.renderer = get_renderer(self.config.renderer)(self.config.size, supersample=self.config.supersample)
        photos = list_background_images(self.config.backgrounds) if self.config.backgrounds else None
        self.backgrounds = BackgroundPool(photos, color=self.config.background_color)
        work_dir = Path(self.config.out) / fmt.WORK_DIR / "attempts"
        self.guard = AttemptGuard(work_dir, run_token, self.config.max_attempts, self.config.timeout)
        self.recycler = WorkerRecycler(
            self.renderer.recycle_after_objects if self.config.recycle_after is None else self.config.recycle_after,
            self.renderer.memory_limit_bytes if self.config.worker_memory_gb is None
            else int(self.config.worker_memory_gb * 2**30),
            journal=Path(self.config.out) / fmt.WORK_DIR / "recycled_workers.jsonl",
        )
        self.run_token = run_token

    def process(self, record: ObjectRecord, split: str) -> dict:
        row = {"object_id": record.object_id, "split": split, "status": "failed", "error": "",
               "key": fmt.sample_key(record.object_id), "members": b""}
        self.recycler.recycle_if_due()  # between objects: Ray restarts this actor and retries the task
        given_up = self.guard.begin(record.object_id, log=self.renderer.log_path)
        if given_up:
            row["error"] = given_up
            return row
        stage = "load"
        try:
            loaded = load_stage(record)
            stage = "render"
            if record.object_id in self.config.fault_injection:
                _inject_fault(self.config.fault_injection[record.object_id])
            rendered = render_stage(loaded, self.renderer, self.config, record.object_id)
            stage = "composite"
            images = composite_stage(rendered, self.backgrounds, self.config, record.object_id)
            stage = "voxelize"
            geometry = geometry_stage(loaded, self.config, record.object_id)
            stage = "encode"
            members = encode_stage(record, split, loaded, rendered, images, geometry, self.config)
            row.update(status="ok", members=_pack(members))
        except Exception as error:  # one bad object must never stop the run
            last = traceback.extract_tb(error.__traceback__)[-1]
            row["error"] = f"{stage}: {type(error).__name__}: {error} ({Path(last.filename).name}:{last.lineno})"
        finally:
            self.guard.end(record.object_id)
            self.recycler.object_done()
        return row

    def __call__(self, batch: dict) -> dict:
        from voxforge.pipeline.fetch_stage import release_staged

        records = [ObjectRecord.from_row(json.loads(r)) for r in batch["record"]]
        fetch_errors = batch.get("fetch_error", [""] * len(records))  # from the download stage, if any
        rows = []
        for record, split, fetch_error in zip(records, batch["split"], fetch_errors):
            if fetch_error:  # recorded with its reason; nothing to render
                rows.append({"object_id": record.object_id, "split": str(split), "status": "failed",
                             "error": str(fetch_error), "key": fmt.sample_key(record.object_id), "members": b""})
            else:
                rows.append(self.process(record, str(split)))
            if record.fetch:  # the sample is made (or failed): free the download slot, evict the mesh
                release_staged(self.config.out, self.run_token, record.object_id)
        return {name: [row[name] for row in rows] for name in rows[0]}


def _pack(members: dict[str, bytes]) -> bytes:
    """Members as one bytes value so Arrow carries a flat column (our own data, between our workers)."""
    return pickle.dumps(members, protocol=pickle.HIGHEST_PROTOCOL)


def unpack_members(packed: bytes) -> dict[str, bytes]:
    return pickle.loads(packed)
