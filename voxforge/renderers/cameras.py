"""Camera sampling and the one camera convention every renderer and loader shares.

Frame: the normalized object frame (bounding box centred at the origin, unit diagonal, +Y up as in
ShapeNet). Cameras follow OpenCV: ``world_to_camera`` is a 3x4 ``[R|t]`` mapping object-frame points
into camera coordinates with x right, y down, z forward; ``K`` is 3x3 in pixels with pixel centres at
integer coordinates (the top-left pixel's centre is (0, 0)). A point ``p`` lands on pixel
``K @ (R @ p + t)`` after dividing by its third component.

Azimuth is measured in degrees about +Y, from +Z towards +X; elevation is the angle above the XZ
plane. The camera always looks at the origin with +Y as the up direction of the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# 3D-R2N2's renders: focal length 2.1875 in normalized image units (half the image width = 1), which
# is a field of view of about 49 degrees.
R2N2_FOCAL_NORMALIZED = 2.1875
R2N2_DISTANCE_SCALE = 1.75


@dataclass(frozen=True)
class CameraRanges:
    """Bounds of the random camera rig (defaults framed like the 3D-R2N2 renders)."""

    azimuth_deg: tuple[float, float] = (0.0, 360.0)
    elevation_deg: tuple[float, float] = (25.0, 30.0)
    distance: tuple[float, float] = (0.65 * R2N2_DISTANCE_SCALE, 0.95 * R2N2_DISTANCE_SCALE)
    focal_normalized: float = R2N2_FOCAL_NORMALIZED
    # "random": every angle uniform in its range; "orbit": view k at azimuth a0 + k (a1 - a0) / views
    # (fixed turntable views, e.g. SoftRas / PTN: 24 views 15 degrees apart)
    layout: str = "random"
    keep_in_frame: bool = True  # raise distances where the object would leave the image (off: exact distances)


@dataclass
class CameraSet:
    """V cameras of one object, as numbers and as matrices (arrays have V as first axis)."""

    azimuth: np.ndarray  # (V,) degrees
    elevation: np.ndarray  # (V,) degrees
    distance: np.ndarray  # (V,) object-frame units
    focal_normalized: np.ndarray  # (V,)
    K: np.ndarray  # (V, 3, 3)
    world_to_camera: np.ndarray  # (V, 3, 4)

    def __len__(self) -> int:
        return len(self.azimuth)


def intrinsics(size: int, focal_normalized: float) -> np.ndarray:
    """Pinhole K for a square image of ``size`` pixels (principal point at the image centre)."""
    focal_px = focal_normalized * size / 2.0
    centre = (size - 1) / 2.0
    return np.array([[focal_px, 0.0, centre], [0.0, focal_px, centre], [0.0, 0.0, 1.0]])


def finer_grid_intrinsics(K: np.ndarray, factor: int) -> np.ndarray:
    """``K`` for the same camera on a pixel grid ``factor`` times finer (supersampling): with pixel centres
    at integers on both grids, the box average of each ``factor`` x ``factor`` block lands on the coarse
    pixel's centre."""
    finer = np.array(K, dtype=float)
    finer[:2, :2] *= factor
    finer[:2, 2] = (finer[:2, 2] + 0.5) * factor - 0.5
    return finer


def camera_position(azimuth_deg: float, elevation_deg: float, distance: float) -> np.ndarray:
    """Camera centre on the sphere around the origin (see the module docstring for the angles)."""
    az, el = np.radians(azimuth_deg), np.radians(elevation_deg)
    return distance * np.array([np.cos(el) * np.sin(az), np.sin(el), np.cos(el) * np.cos(az)])


def look_at(eye: np.ndarray, target: np.ndarray | None = None, up=(0.0, 1.0, 0.0)) -> np.ndarray:
    """OpenCV ``world_to_camera`` (3x4) for a camera at ``eye`` looking at ``target``."""
    target = np.zeros(3) if target is None else np.asarray(target, float)
    forward = target - np.asarray(eye, float)
    forward /= np.linalg.norm(forward)
    up = np.asarray(up, float)
    if abs(np.dot(forward, up)) > 0.999:  # looking straight up/down: any horizontal right works
        up = np.array([0.0, 0.0, -1.0])
    right = np.cross(forward, up)
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    rotation = np.stack([right, down, forward])
    return np.concatenate([rotation, (-rotation @ eye)[:, None]], axis=1)


def min_distance_in_frame(radius: float, focal_normalized: float, size: int, margin_px: float = 1.5) -> float:
    """Smallest distance at which a sphere of ``radius`` around the origin stays inside the image."""
    half_extent = (size / 2.0 - margin_px) / (focal_normalized * size / 2.0)  # tan(half fov) with margin
    half_fov = np.arctan(max(half_extent, 1e-3))
    return float(radius / np.sin(half_fov))


def sample_cameras(
    views: int, size: int, rng: np.random.Generator, ranges: CameraRanges = CameraRanges(), object_radius: float = 0.5
) -> CameraSet:
    """Random (or orbit) cameras; with ``keep_in_frame`` each distance is raised where needed so the
    whole object stays in frame."""
    if ranges.layout not in ("random", "orbit"):
        raise ValueError(f"camera layout must be random or orbit, got {ranges.layout!r}")
    if ranges.layout == "orbit":
        start, end = ranges.azimuth_deg
        azimuth = np.mod(start + np.arange(views) * (end - start) / views, 360.0)
    else:
        azimuth = rng.uniform(*ranges.azimuth_deg, size=views)
    elevation = rng.uniform(*ranges.elevation_deg, size=views)
    distance = rng.uniform(*ranges.distance, size=views)
    if ranges.keep_in_frame:
        distance = np.maximum(distance, min_distance_in_frame(object_radius, ranges.focal_normalized, size))
    focal = np.full(views, ranges.focal_normalized)
    K = np.stack([intrinsics(size, f) for f in focal])
    world_to_camera = np.stack([look_at(camera_position(a, e, d)) for a, e, d in zip(azimuth, elevation, distance)])
    return CameraSet(azimuth, elevation, distance, focal, K, world_to_camera)


def project(points: np.ndarray, K: np.ndarray, world_to_camera: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (N, 2) as (column, row) and depths (N,) of object-frame points in one view."""
    camera = points @ world_to_camera[:, :3].T + world_to_camera[:, 3]
    depth = camera[:, 2]
    pixels = camera @ K.T
    return pixels[:, :2] / depth[:, None], depth


def rotation_with_z(direction: np.ndarray) -> np.ndarray:
    """A rotation whose +z axis is ``direction`` (pyrender's and Blender's lights shine along their -z)."""
    z = direction / np.linalg.norm(direction)
    helper = np.array([0.0, 1.0, 0.0]) if abs(z[1]) < 0.9 else np.array([1.0, 0.0, 0.0])
    x = np.cross(helper, z)
    x /= np.linalg.norm(x)
    return np.stack([x, np.cross(z, x), z], axis=1)


def camera_to_world_opengl(world_to_camera: np.ndarray) -> np.ndarray:
    """4x4 camera pose in OpenGL axes (x right, y up, z backward), as pyrender and Blender want it."""
    pose = np.eye(4)
    rotation, translation = world_to_camera[:, :3], world_to_camera[:, 3]
    pose[:3, :3] = rotation.T
    pose[:3, 3] = -rotation.T @ translation
    return pose @ np.diag([1.0, -1.0, -1.0, 1.0])
