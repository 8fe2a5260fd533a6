"""One view's :class:`~voxforge.renderers.base.LightRig` as Blender lights, plus optional material jitter.

The rig's numbers mean the same as for pyrender: the key light is a sun of ``key_intensity`` W/m^2
(a white diffuse surface facing it shows ``intensity / pi``, like pyrender's directional light), the
fill an area light giving ``fill_intensity`` W/m^2 at the object from the mirrored side, the ambient
term a uniform environment of that radiance. What Blender adds (sun softness, area-light size, a
slight environment tint, material jitter) is drawn from a generator seeded by the rig's own values, so
the rig stored with every sample still fixes the image: same seed, same images.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass

import numpy as np

from voxforge.renderers.base import LightRig
from voxforge.renderers.blender.geometry import blender_matrix
from voxforge.renderers.cameras import rotation_with_z

FILL_DISTANCE = 3.0  # object-frame units from the origin (the object's diagonal is 1)
SUN_ANGLE_DEG = (0.5, 8.0)  # angular diameter: sharp to soft shadows
AREA_SIZE = (0.5, 2.0)
ENVIRONMENT_TINT = (0.9, 1.0)
JITTER_HUE = 0.03  # +- around no change (0.5 on Blender's hue input)
JITTER_SATURATION = 0.15
JITTER_VALUE = 0.15
JITTER_ROUGHNESS = 0.15


@dataclass(frozen=True)
class BlenderLights:
    key_direction: np.ndarray  # world, from the object towards the light
    key_strength: float
    key_color: tuple[float, float, float]
    key_angle_rad: float
    fill_position: np.ndarray
    fill_power_w: float
    fill_size: float
    environment_color: tuple[float, float, float]
    environment_strength: float
    rng_seed: int  # for material jitter


def rig_seed(rig: LightRig) -> int:
    """A stable 63-bit seed from the rig's values (repr of floats is exact and platform-independent)."""
    text = json.dumps(rig.as_dict(), sort_keys=True)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def blender_lights(rig: LightRig, world_to_camera: np.ndarray) -> BlenderLights:
    camera_to_world_rotation = np.asarray(world_to_camera)[:, :3].T
    key_camera = rig.key_direction_camera()
    key = camera_to_world_rotation @ key_camera
    fill = camera_to_world_rotation @ (key_camera * np.array([-1.0, -0.3, 1.0]))  # as pyrender's fill
    fill /= np.linalg.norm(fill)
    rng = np.random.default_rng(rig_seed(rig))
    tint = rng.uniform(*ENVIRONMENT_TINT, size=3)
    return BlenderLights(
        key_direction=key / np.linalg.norm(key),
        key_strength=float(rig.key_intensity),
        key_color=tuple(float(c) for c in rig.key_color),
        key_angle_rad=math.radians(rng.uniform(*SUN_ANGLE_DEG)),
        fill_position=fill * FILL_DISTANCE,
        # a small area light of power P gives an irradiance of P / (pi d^2) on its axis at distance d
        fill_power_w=float(rig.fill_intensity * math.pi * FILL_DISTANCE**2),
        fill_size=float(rng.uniform(*AREA_SIZE)),
        environment_color=tuple(float(c) for c in tint / tint.max()),
        environment_strength=float(rig.ambient),
        rng_seed=int(rng.integers(0, 2**63 - 1)),
    )


def _matrix(rotation: np.ndarray, position: np.ndarray):
    matrix = np.eye(4)
    matrix[:3, :3], matrix[:3, 3] = rotation, position
    return blender_matrix(matrix)


class LightingRig:
    """The sun, area light and world of a scene, re-aimed for every view."""

    def __init__(self, bpy, scene) -> None:
        sun = bpy.data.lights.new("voxforge_key", "SUN")
        area = bpy.data.lights.new("voxforge_fill", "AREA")
        area.shape = "DISK"
        self.sun = bpy.data.objects.new("voxforge_key", sun)
        self.area = bpy.data.objects.new("voxforge_fill", area)
        for obj in (self.sun, self.area):
            scene.collection.objects.link(obj)
        world = bpy.data.worlds.new("voxforge_world")
        scene.world = world
        self.background = next(n for n in world.node_tree.nodes if n.type == "BACKGROUND")

    def apply(self, lights: BlenderLights) -> None:
        sun = self.sun.data
        sun.energy, sun.color, sun.angle = lights.key_strength, lights.key_color, lights.key_angle_rad
        self.sun.matrix_world = _matrix(rotation_with_z(lights.key_direction), np.zeros(3))
        area = self.area.data
        area.energy, area.size = lights.fill_power_w, lights.fill_size
        self.area.matrix_world = _matrix(rotation_with_z(lights.fill_position), lights.fill_position)
        self.background.inputs["Color"].default_value = (*lights.environment_color, 1.0)
        self.background.inputs["Strength"].default_value = lights.environment_strength


class MaterialJitter:
    """Per-view random hue / saturation / value and roughness around each material's own values.

    Every Principled BSDF gets a Hue/Saturation/Value node in front of its base colour (textured or
    not); each view sets it and the roughness from the originals, so changes never accumulate.
    """

    def __init__(self, bpy) -> None:
        self.entries = []
        for material in bpy.data.materials:
            tree = material.node_tree
            if tree is None:
                continue
            for node in list(tree.nodes):
                if node.type != "BSDF_PRINCIPLED":
                    continue
                base = node.inputs["Base Color"]
                hsv = tree.nodes.new("ShaderNodeHueSaturation")
                if base.is_linked:
                    tree.links.new(base.links[0].from_socket, hsv.inputs["Color"])
                else:
                    hsv.inputs["Color"].default_value = tuple(base.default_value)
                tree.links.new(hsv.outputs["Color"], base)
                roughness = node.inputs["Roughness"]
                self.entries.append((material, hsv, roughness, float(roughness.default_value),
                                     tuple(material.diffuse_color)))

    def apply(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        for material, hsv, roughness, original_roughness, original_diffuse in self.entries:
            hue = 0.5 + rng.uniform(-JITTER_HUE, JITTER_HUE)
            saturation = 1.0 + rng.uniform(-JITTER_SATURATION, JITTER_SATURATION)
            value = 1.0 + rng.uniform(-JITTER_VALUE, JITTER_VALUE)
            hsv.inputs["Hue"].default_value = hue
            hsv.inputs["Saturation"].default_value = saturation
            hsv.inputs["Value"].default_value = value
            if not roughness.is_linked:
                roughness.default_value = float(np.clip(original_roughness + rng.uniform(-JITTER_ROUGHNESS,
                                                                                         JITTER_ROUGHNESS), 0, 1))
            material.diffuse_color = (*(np.clip(np.asarray(original_diffuse[:3]) * value, 0, 1)), original_diffuse[3])
