"""The per-object stages, run in sequence for each object by :func:`make_sample`.

load + normalize -> render V views -> composite backgrounds -> voxelize -> sample points -> check that the
points land on the masks -> encode.
The stages are plain functions; :class:`voxforge.pipeline.worker.ShardWorker` (the Ray actor) calls
:func:`make_sample` for each object of its shard task with the renderer it keeps, so a mesh never
travels between processes. Any error in one object becomes a :class:`SampleError` with its reason.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from voxforge.loaders import format as fmt
from voxforge.meshio import import_bytes_of, warnings_of
from voxforge.meshio.names import portable_name
from voxforge.pipeline.alignment import check_alignment
from voxforge.pipeline.config import RunConfig
from voxforge.pipeline.meshes import flatten, validate_and_normalize
from voxforge.pipeline.sources import ObjectRecord, load_record, local_mesh_file
from voxforge.pipeline.splits import object_seed
from voxforge.renderers import sample_lighting
from voxforge.renderers.agreement import object_luma
from voxforge.renderers.base import attach_source_file
from voxforge.renderers.backgrounds import BackgroundPool, composite
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


FLOAT32_SAFE_OFFSET = 1000.0  # |centre| / diagonal above which float32 coordinates err by > 1e-4 of the size


def load_stage(record: ObjectRecord) -> dict:
    """Mesh in the object frame (the scene for rendering, one triangle soup for geometry), and the warnings
    of reading it (see :mod:`voxforge.meshio`)."""
    scene, normalization = validate_and_normalize(load_record(record))
    vertices, faces = flatten(scene)
    mesh_file = local_mesh_file(record)  # a download source's copy in the cache, else the record's uri
    source_hash = file_sha256(mesh_file) if os.path.isfile(mesh_file) else ""
    # renderers that read the file themselves (Blender) place it with this matrix; not a file whose
    # coordinates float32 cannot hold to 1e-4 of its size (Blender's vertices are float32): those render
    # the pipeline's re-centred triangles (see meshes.recenter_geometry)
    far = np.abs(normalization.center).max() * normalization.scale > FLOAT32_SAFE_OFFSET
    if source_hash and not far:
        attach_source_file(scene, mesh_file, normalization.matrix(), data=import_bytes_of(scene))
    return {"scene": scene, "vertices": vertices, "faces": faces, "normalization": normalization,
            "source_sha256": source_hash, "warnings": warnings_of(scene)}


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
    # points first: a mesh without surface area (a line, a point set) fails here, saying so
    points, normals = sample_surface(vertices, faces, config.points, seed=object_seed(config.seed, object_id, "points"),
                                     even=config.even_points)
    triangles = vertices[faces]
    bounds = centered_bounds(triangles) if config.voxel_extent is None else \
        (np.full(3, -config.voxel_extent / 2.0), float(config.voxel_extent))
    grid = voxelize(triangles, resolution=config.resolution, fill=config.fill, bounds=bounds,
                    surface=config.voxel_surface, samples=config.voxel_samples, wireframe=config.wireframe)
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
        "source_uri": record.uri if record.source != "local" else portable_name(os.path.basename(record.uri)),
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
        # what reading the file or rendering it could not fully honour (a missing texture, ...)
        "warnings": list(dict.fromkeys(loaded.get("warnings", []) + rendered["render"].warnings)),
        "voxels": {"resolution": grid.resolution, "origin": grid.origin.tolist(), "voxel_size": grid.voxel_size,
                   "fill": config.fill, "surface": config.voxel_surface, "wireframe": config.wireframe,
                   "occupied": int(grid.occupancy.sum())},
        "points": {"count": int(len(geometry["points"])), "evenly_spaced": config.even_points,
                   "fps_prefix": config.fps_prefix},
        # the renderer's own object pixels, before backgrounds: pipeline inspect flags dark or empty views
        "object_luma": [None if np.isnan(value) else round(float(value), 1)
                        for value in object_luma(rendered["render"].color, rendered["render"].alpha)],
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
    elif kind == "stop":  # a frozen worker: its own watchdog thread is stopped with it
        os.kill(os.getpid(), signal.SIGSTOP)


class SampleError(RuntimeError):
    """An object could not be made into a sample; the message is the reason recorded for it."""


def make_sample(record: ObjectRecord, split: str, renderer, backgrounds: BackgroundPool, config: RunConfig,
                on_stage: Callable[[str], None] | None = None) -> dict[str, bytes]:
    """Every stage for one object: its shard members; raises :class:`SampleError` naming the stage that failed.

    ``on_stage`` is told each stage's name as it starts (the worker's deadline names the stage an object
    overran in)."""
    stage = "load"

    def enter(name: str) -> None:
        nonlocal stage
        stage = name
        if on_stage is not None:
            on_stage(name)

    try:
        enter("load")
        loaded = load_stage(record)
        enter("render")
        if record.object_id in config.fault_injection:
            _inject_fault(config.fault_injection[record.object_id])
        rendered = render_stage(loaded, renderer, config, record.object_id)
        enter("composite")
        images = composite_stage(rendered, backgrounds, config, record.object_id)
        enter("voxelize")
        geometry = geometry_stage(loaded, config, record.object_id)
        enter("check")
        cameras = rendered["cameras"]
        check_alignment(geometry["points"], cameras.K, cameras.world_to_camera, rendered["render"].alpha)
        enter("encode")
        return encode_stage(record, split, loaded, rendered, images, geometry, config)
    except MemoryError as error:  # the worker's cap (--object-memory-gb), or the machine's
        raise SampleError(f"{stage}: needed more memory than the worker may use (--object-memory-gb "
                          f"{config.object_memory_gb:g})") from error
    except Exception as error:  # one bad object must never stop the run
        last = traceback.extract_tb(error.__traceback__)[-1]
        raise SampleError(f"{stage}: {type(error).__name__}: {error} ({Path(last.filename).name}:{last.lineno})") from error
