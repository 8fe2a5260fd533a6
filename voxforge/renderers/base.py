"""The renderer interface: what every backend (pyrender, Blender) takes and returns.

A renderer is a view on a scene that knows nothing about datasets: it gets a trimesh scene already in
the normalized object frame, cameras from :mod:`voxforge.renderers.cameras` and one light rig per view,
and returns straight (not premultiplied) colour, alpha and depth.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field

import numpy as np
import trimesh

from voxforge.renderers.cameras import CameraSet


@dataclass(frozen=True)
class LightRig:
    """One view's lighting; the key light's direction is given relative to the camera."""

    key_azimuth_deg: float  # around the camera's up axis, 0 = from the camera
    key_elevation_deg: float  # above the camera's horizontal plane
    key_intensity: float
    key_color: tuple[float, float, float]
    fill_intensity: float
    ambient: float

    def as_dict(self) -> dict:
        return asdict(self)

    def key_direction_camera(self) -> np.ndarray:
        """Unit vector (OpenCV camera axes) pointing from the object towards the key light."""
        az, el = np.radians(self.key_azimuth_deg), np.radians(self.key_elevation_deg)
        return np.array([np.sin(az) * np.cos(el), -np.sin(el), -np.cos(az) * np.cos(el)])


def sample_lighting(views: int, rng: np.random.Generator) -> list[LightRig]:
    """Random but sane light rigs: a key light from the camera's side, a weaker fill, some ambient."""
    rigs = []
    for _ in range(views):
        tint = rng.uniform(0.85, 1.0, size=3)
        rigs.append(
            LightRig(
                key_azimuth_deg=float(rng.uniform(-60, 60)),
                key_elevation_deg=float(rng.uniform(10, 60)),
                key_intensity=float(rng.uniform(2.0, 4.0)),
                key_color=tuple(float(c) for c in tint / tint.max()),
                fill_intensity=float(rng.uniform(0.5, 1.5)),
                ambient=float(rng.uniform(0.15, 0.4)),
            )
        )
    return rigs


SOURCE_FILE_KEY = "voxforge_source_file"


@dataclass(frozen=True)
class SourceFile:
    """The file a scene was read from, and the 4x4 matrix that moved it into the object frame.

    Renderers that read files themselves (Blender: materials, textures, formats trimesh cannot read)
    import ``path`` and apply ``source_to_object``; the others render the scene's triangles.
    """

    path: str
    source_to_object: np.ndarray
    # the bytes to import in place of ``path`` (same format as its suffix says), when the pipeline decoded
    # the file into a plain equivalent (glTF: see voxforge.meshio.gltf) so every renderer reads the same
    data: bytes | None = None


def attach_source_file(scene: trimesh.Scene, path: str, source_to_object: np.ndarray, data: bytes | None = None) -> None:
    scene.metadata[SOURCE_FILE_KEY] = SourceFile(str(path), np.asarray(source_to_object, float), data)


def source_file_of(scene: trimesh.Scene) -> SourceFile | None:
    found = scene.metadata.get(SOURCE_FILE_KEY)
    return found if isinstance(found, SourceFile) else None


@dataclass
class RenderResult:
    """V views: straight-alpha colour, alpha and camera-space depth (0 where nothing was hit)."""

    color: np.ndarray  # (V, H, W, 3) uint8, not premultiplied
    alpha: np.ndarray  # (V, H, W) uint8
    depth: np.ndarray  # (V, H, W) float32
    warnings: list[str] = field(default_factory=list)  # what the renderer could not honour (recorded with the sample)


class Renderer(ABC):
    """Renders V views of one object; one instance lives in one worker process and is reused."""

    name: str = "base"
    # the pipeline replaces a worker after this many objects or above this resident memory (0 = never)
    recycle_after_objects: int = 0
    memory_limit_bytes: int = 0

    def __init__(self, size: int, supersample: int = 2) -> None:
        self.size = size
        self.supersample = supersample  # anti-aliasing: samples per pixel along each axis

    @abstractmethod
    def render(self, scene: trimesh.Scene, cameras: CameraSet, lights: list[LightRig]) -> RenderResult:
        """Render every camera of ``cameras`` with the matching light rig."""

    @property
    def log_path(self) -> str | None:
        """A file holding the backend's own output, kept in the reason when an object crashes or hangs."""
        return None

    def close(self) -> None:
        """Free the backend's resources (GL context, Blender data)."""


def unpremultiply(premultiplied: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Straight colour from premultiplied colour, so compositing later leaves no dark fringe."""
    a = alpha.astype(np.float32)[..., None]
    straight = np.where(a > 0, premultiplied.astype(np.float32) * 255.0 / np.maximum(a, 1.0), 0.0)
    return np.clip(np.rint(straight), 0, 255).astype(np.uint8)


def downsample(values: np.ndarray, factor: int) -> np.ndarray:
    """Box-filter average of ``factor`` x ``factor`` blocks over the first two axes (float32).

    Summing strided slices is several times faster than a reshape-and-mean over the block axes.
    """
    if factor == 1:
        return values.astype(np.float32)
    total = np.zeros((values.shape[0] // factor, values.shape[1] // factor, *values.shape[2:]), np.float32)
    for row in range(factor):
        for column in range(factor):
            total += values[row::factor, column::factor]
    return total / (factor * factor)
