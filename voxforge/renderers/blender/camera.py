"""The shared OpenCV camera (K, world_to_camera) as Blender camera settings: pure numbers, no bpy.

Blender's camera looks down its local -Z with +Y up (the OpenGL axes, see
:func:`voxforge.renderers.cameras.camera_to_world_opengl`). Its field of view comes from ``lens`` over
``sensor_width`` (sensor fit ``HORIZONTAL``, square pixels), and the principal point from ``shift_x`` /
``shift_y``, in units of the larger image side: a positive shift moves the view right / up, so the
optical axis lands left of / below the image centre. Blender samples
pixel ``(i, j)`` at ``(i + 0.5, j + 0.5)`` from the image edge; voxforge's pixel centres sit at
integers, hence the half-pixel offsets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from voxforge.renderers.cameras import camera_to_world_opengl

SENSOR_WIDTH_MM = 36.0  # any value works; lens is expressed relative to it


@dataclass(frozen=True)
class BlenderCamera:
    matrix_world: np.ndarray  # 4x4 camera-to-world, Blender/OpenGL axes
    lens_mm: float
    sensor_width_mm: float
    shift_x: float
    shift_y: float
    width: int
    height: int


def blender_camera(K: np.ndarray, world_to_camera: np.ndarray, width: int, height: int) -> BlenderCamera:
    """Blender settings that reproduce ``K`` and ``world_to_camera`` exactly (square pixels only)."""
    fx, fy = float(K[0, 0]), float(K[1, 1])
    if not np.isclose(fx, fy, rtol=1e-9):
        raise ValueError(f"the Blender renderer needs square pixels (fx == fy), got fx={fx:g}, fy={fy:g}")
    if abs(K[0, 1]) > 1e-12:
        raise ValueError("the Blender renderer cannot reproduce a skewed K")
    largest = max(width, height)  # Blender's shift and horizontal sensor fit refer to the larger side
    if width < height:
        raise ValueError("the Blender renderer supports images at least as wide as they are high")
    principal_x, principal_y = float(K[0, 2]) + 0.5, float(K[1, 2]) + 0.5  # from the top-left edge
    return BlenderCamera(
        matrix_world=camera_to_world_opengl(world_to_camera),
        lens_mm=fx * SENSOR_WIDTH_MM / width,
        sensor_width_mm=SENSOR_WIDTH_MM,
        shift_x=(width / 2.0 - principal_x) / largest,
        shift_y=(principal_y - height / 2.0) / largest,
        width=width,
        height=height,
    )


def project_like_blender(point: np.ndarray, camera: BlenderCamera) -> np.ndarray:
    """Where Blender's pinhole puts ``point`` (pixel coordinates with centres at integers).

    The inverse reading of :func:`blender_camera`, written from Blender's documented camera model;
    the tests use it to check the conversion without starting Blender.
    """
    world_to_camera = np.linalg.inv(camera.matrix_world)
    x, y, z = (world_to_camera @ np.append(point, 1.0))[:3]  # OpenGL camera axes: looks down -z
    largest = max(camera.width, camera.height)
    focal_px = camera.lens_mm / camera.sensor_width_mm * camera.width
    column = camera.width / 2.0 - camera.shift_x * largest + focal_px * x / -z
    row_up = camera.height / 2.0 - camera.shift_y * largest + focal_px * y / -z  # from the bottom edge, +y up
    return np.array([column - 0.5, camera.height - row_up - 0.5])
