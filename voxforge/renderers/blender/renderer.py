"""The Blender renderer: one bpy per worker process, Cycles / Workbench / EEVEE, headless.

Per object the scene is emptied (objects, meshes, materials, images... then an orphan purge), the
object is imported from its original file (or built from the trimesh scene), placed in the object
frame, and rendered once per camera. Each view is written as an uncompressed multi-layer EXR
(premultiplied linear colour, coverage, depth) and read back; colour goes through the ``Standard``
view transform (the sRGB curve; Blender's default AgX would darken the renders) and is returned as
straight alpha, as the renderer interface promises. Nothing needs an X server: Cycles runs on the
CPU (or CUDA/OptiX), Workbench and EEVEE on Blender's headless EGL context (Mesa llvmpipe on a CPU).

``supersample`` sets the anti-aliasing effort as for pyrender. Cycles renders ``supersample`` times
larger with every sample through its (sub)pixel centre, 4 samples each, and box-averages the result
back down, exactly as the pyrender renderer does: both estimate a pixel's coverage from the same
``supersample**2`` points, so their masks agree on parts thinner than a pixel too (Cycles' own
anti-aliasing, 16 random positions per pixel, disagreed with a 2x2 grid on such parts: mask IoU 0.91-0.93
on edge-on wings). The light is still integrated with ``4 * supersample**2`` samples per output pixel
(16 by default). EEVEE takes as many temporal samples, Workbench goes from no anti-aliasing (1) through
FXAA (2, the default: the fastest that meets 40 views/s per core here) to 5 and 8 samples. With
``supersample=1`` nothing is anti-aliased: every sample goes through the pixel centre, as pyrender's.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import trimesh

from voxforge.renderers.base import LightRig, RenderResult, Renderer, downsample, source_file_of
from voxforge.renderers.blender import runtime
from voxforge.renderers.blender.camera import blender_camera
from voxforge.renderers.blender.exr import read_exr
from voxforge.renderers.blender.geometry import (
    blender_matrix, build_from_trimesh, clean_for_shading, give_plain_materials, linear_to_srgb, srgb_to_linear,
    trimesh_triangles,
)
from voxforge.renderers.blender.importers import (
    BlenderImportError, drop_missing_images, frame_mismatch, import_file, importer_for, place_in_object_frame,
    unsafe_material_libraries,
)
from voxforge.renderers.blender.lighting import LightingRig, MaterialJitter, blender_lights
from voxforge.renderers.cameras import CameraSet, finer_grid_intrinsics
from voxforge.renderers.shading import prepare_for_shading

BLENDER_ONLY_SUFFIXES = (".fbx", ".blend")  # files only Blender reads: their textures are only checked here

log = logging.getLogger(__name__)

WORKBENCH_AA = {1: "OFF", 2: "FXAA", 3: "5", 4: "8"}
GPU_BACKENDS = ("OPTIX", "CUDA", "HIP", "ONEAPI", "METAL")
NO_HIT_DEPTH = 1e9
MIN_FILTER_WIDTH = 0.01  # pixels: Cycles' smallest pixel filter  # Blender writes 1e10 where a ray hits nothing


def _scratch_dir() -> Path:
    """Per-renderer folder for the per-view EXR files: in memory (/dev/shm) where there is one."""
    shm = Path("/dev/shm")
    parent = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix="voxforge-blender-", dir=parent))


class BlenderRenderer(Renderer):
    """Blender kept loaded in this process; the scene is emptied and rebuilt for every object.

    ``threads``: render threads (1: one worker per core is the parallelism; 0: all cores).
    ``device``: Cycles device, ``auto`` (first GPU backend found, else the CPU), ``cpu`` or a backend
    name (``optix``, ``cuda``...). ``material_jitter``: per-view random hue/saturation/value and
    roughness around each material's own (off by default: the images keep the file's colours).
    """

    name = "blender"
    engine = "CYCLES"
    # a worker is replaced after this many objects or above this much memory (Blender slowly grows)
    recycle_after_objects = 200
    memory_limit_bytes = 4 * 2**30  # a worker holds about 0.8 GiB (bench/bench_blender_soak.py)

    def __init__(self, size: int, supersample: int = 2, *, threads: int = 1, device: str | None = None,
                 material_jitter: bool = False, samples: int = 4, denoise: bool = False) -> None:
        super().__init__(size, supersample)
        self.bpy = runtime.load_bpy()
        self.threads = threads
        self.samples, self.denoise = int(samples), bool(denoise)  # Cycles: per rendered pixel; OpenImageDenoise
        self.material_jitter = material_jitter
        self.scratch = _scratch_dir()
        runtime.call(self._set_up, device)

    def _set_up(self, device: str | None) -> None:
        with runtime.blender_output():
            runtime.clear_object_data()
            self.device = self._choose_cycles_device(device or os.environ.get("VOXFORGE_BLENDER_DEVICE", "auto"))
            self._configure_scene()

    # -- set-up: the scene's settings are the process's, so every render applies its own ---------------
    def _configure_scene(self) -> None:
        bpy = self.bpy
        scene = bpy.context.scene
        for other in [s for s in bpy.data.scenes if s != scene]:
            bpy.data.scenes.remove(other)
        render = scene.render
        render.engine = self.engine
        render.resolution_x = render.resolution_y = self.size * self.render_factor
        render.resolution_percentage = 100
        render.pixel_aspect_x = render.pixel_aspect_y = 1.0
        render.film_transparent = True
        render.use_compositing = False
        render.use_sequencer = False
        render.dither_intensity = 0.0
        render.threads_mode = "FIXED" if self.threads else "AUTO"
        if self.threads:
            render.threads = self.threads
        settings = render.image_settings
        settings.media_type = "MULTI_LAYER_IMAGE"
        settings.exr_codec = "NONE"
        settings.color_depth = "32"
        scene.view_layers[0].use_pass_z = True
        scene.view_settings.view_transform = "Standard"
        scene.view_settings.look = "None"
        scene.view_settings.exposure = 0.0
        scene.view_settings.gamma = 1.0
        self._configure_engine(scene)

    @property
    def render_factor(self) -> int:
        """How much larger than the output Blender renders (Cycles supersamples on a grid, as pyrender)."""
        return self.supersample if self.engine == "CYCLES" else 1

    def _configure_engine(self, scene) -> None:
        samples = 4 * self.supersample**2
        cycles = scene.cycles
        cycles.samples = self.samples  # per rendered pixel, so samples * supersample**2 per output pixel
        cycles.use_adaptive_sampling = False
        cycles.use_denoising = self.denoise
        if self.denoise:
            cycles.denoiser = "OPENIMAGEDENOISE"
        # every sample through the (sub)pixel centre, where pyrender's samples are (Cycles' box filter
        # ignores its width, a Gaussian of the smallest width does not)
        cycles.pixel_filter_type = "GAUSSIAN"
        cycles.filter_width = MIN_FILTER_WIDTH
        cycles.seed = 0
        cycles.max_bounces, cycles.diffuse_bounces, cycles.glossy_bounces = 6, 2, 2
        cycles.transparent_max_bounces = 8
        cycles.caustics_reflective = cycles.caustics_refractive = False
        scene.render.use_persistent_data = True  # keep the BVH between the views of one object
        cycles.device = "CPU" if self.device == "CPU" else "GPU"
        scene.eevee.taa_render_samples = samples
        scene.render.filter_size = 1.0 if self.supersample > 1 else 0.0  # EEVEE's and Workbench's filter
        scene.display.render_aa = WORKBENCH_AA[self.supersample]
        shading = scene.display.shading
        shading.light = "STUDIO"
        shading.studio_light = "Default"
        shading.show_shadows = False
        shading.show_cavity = False
        shading.show_specular_highlight = True

    def _choose_cycles_device(self, requested: str) -> str:
        """``CPU``, or the GPU backend (with its devices enabled in the preferences) Cycles will use."""
        requested = requested.upper()
        if requested == "CPU" or self.engine != "CYCLES":
            return "CPU"
        addon = self.bpy.context.preferences.addons.get("cycles")
        backends = GPU_BACKENDS if requested == "AUTO" else (requested,)
        for backend in backends if addon else ():
            preferences = addon.preferences
            try:
                preferences.compute_device_type = backend
            except TypeError:  # this Blender build lacks the backend
                continue
            preferences.refresh_devices()
            devices = [d for d in preferences.devices if d.type == backend]
            if devices:
                for candidate in preferences.devices:
                    candidate.use = candidate.type == backend
                return f"{backend} ({', '.join(d.name for d in devices)})"
        if requested != "AUTO":
            raise RuntimeError(f"Cycles device {requested} is not available on this machine")
        return "CPU"

    # -- one object ---------------------------------------------------------------------------------
    def render(self, scene: trimesh.Scene, cameras: CameraSet, lights: list[LightRig]) -> RenderResult:
        return runtime.call(self._render, scene, cameras, lights)

    def _render(self, scene: trimesh.Scene, cameras: CameraSet, lights: list[LightRig]) -> RenderResult:
        runtime.bound_log()
        with runtime.blender_output():
            runtime.clear_object_data()
            self._configure_scene()  # another renderer in this process may have changed the settings
        warnings = self._load_object(scene)
        bpy = self.bpy
        with runtime.blender_output():
            self._prepare_materials()
            jitter = MaterialJitter(bpy) if self.material_jitter else None
            rig = LightingRig(bpy, bpy.context.scene)
            camera = self._new_camera()
        views, size = len(cameras), self.size
        color = np.empty((views, size, size, 3), np.uint8)
        alpha = np.empty((views, size, size), np.uint8)
        depth = np.empty((views, size, size), np.float32)
        output = self.scratch / "view.exr"
        for view in range(views):
            settings = blender_lights(lights[view], cameras.world_to_camera[view])
            with runtime.blender_output():
                self._aim_camera(camera, cameras.K[view], cameras.world_to_camera[view])
                rig.apply(settings)
                if jitter is not None:
                    jitter.apply(settings.rng_seed)
                self._studio_light(lights[view])
                bpy.context.scene.render.filepath = str(output)
                bpy.ops.render.render(write_still=True)
            color[view], alpha[view], depth[view] = self._read_view(output)
        return RenderResult(color=color, alpha=alpha, depth=depth, warnings=warnings)

    def _load_object(self, scene: trimesh.Scene) -> list[str]:
        """Import the object's file (or the plain equivalent the pipeline decoded it into) and place it in the
        object frame; returns warnings for the sample.

        Policy when Blender's reading differs from the pipeline's triangles (bounds or centroid): the
        pipeline's triangles are rendered, so images, voxels and points show the same geometry, and the
        sample records a warning saying so (with both readings' bounds)."""
        bpy = self.bpy
        source = source_file_of(scene)
        warnings: list[str] = []
        outside = unsafe_material_libraries(Path(source.path)) if source is not None and source.data is None else []
        if outside:
            warnings.append(f"material librar{'ies' if len(outside) > 1 else 'y'} {', '.join(map(repr, outside))} "
                            "outside the object's folder: Blender did not import the file; rendered voxforge's "
                            "reading of it")
        if source is not None and importer_for(source.path) is not None and not outside:
            path = Path(source.path)
            if source.data is not None:  # e.g. glTF decoded by the specification: Blender reads the same bytes
                path = self.scratch / "object.glb"
                path.write_bytes(source.data)
            imported, unsafe = import_file(bpy, path)
            with runtime.blender_output():
                missing = drop_missing_images(bpy)
                place_in_object_frame(bpy, imported, source.source_to_object, importer_for(path).to_blender)
                mismatch = frame_mismatch(bpy, trimesh_triangles(scene))
            if Path(source.path).suffix.lower() in BLENDER_ONLY_SUFFIXES:  # the pipeline's reader saw no textures
                warnings += unsafe + [f"texture image '{name}' could not be loaded: rendered with the material's "
                                      "base colour" for name in missing]
            if mismatch is None:
                with runtime.blender_output():
                    clean_for_shading(bpy)
                    give_plain_materials(bpy)
                return warnings
            log.warning("Blender read %s differently from the pipeline (%s); rendering the pipeline's "
                        "triangles instead", Path(source.path).name, mismatch)
            warnings.append(f"Blender read '{Path(source.path).name}' differently from voxforge ({mismatch}); "
                            "rendered voxforge's triangles")
            with runtime.blender_output():
                runtime.clear_object_data()
        with runtime.blender_output():
            objects = build_from_trimesh(bpy, prepare_for_shading(scene)[0], bpy.context.scene.collection)
        if not objects:
            raise BlenderImportError("the scene has no triangle meshes to render")
        return warnings

    def _prepare_materials(self) -> None:
        """Opaque materials, and what Workbench shows (a material's viewport colour or its active image).

        Alpha stays the object's coverage, as with pyrender: a window with ``d 0.5`` in its MTL is
        still part of the silhouette, so the masks agree and surface points land on them.
        """
        has_texture = has_attribute = False
        for material in self.bpy.data.materials:
            tree = material.node_tree
            if tree is None:
                continue
            principled = next((n for n in tree.nodes if n.type == "BSDF_PRINCIPLED"), None)
            if principled is None:
                continue
            opacity = principled.inputs["Alpha"]
            for link in list(opacity.links):
                tree.links.remove(link)
            opacity.default_value = 1.0
            base = principled.inputs["Base Color"]
            if not base.is_linked:
                material.diffuse_color = (*base.default_value[:3], 1.0)
                continue
            source = base.links[0].from_node
            if source.type == "TEX_IMAGE":
                tree.nodes.active = source
                has_texture = True
            elif source.type in ("ATTRIBUTE", "VERTEX_COLOR"):
                has_attribute = True
        shading = self.bpy.context.scene.display.shading
        shading.color_type = "TEXTURE" if has_texture else "VERTEX" if has_attribute else "MATERIAL"

    def _new_camera(self):
        bpy = self.bpy
        data = bpy.data.cameras.new("voxforge_camera")
        data.sensor_fit = "HORIZONTAL"
        data.clip_start, data.clip_end = 0.01, 100.0
        camera = bpy.data.objects.new("voxforge_camera", data)
        bpy.context.scene.collection.objects.link(camera)
        bpy.context.scene.camera = camera
        return camera

    def _aim_camera(self, camera, K: np.ndarray, world_to_camera: np.ndarray) -> None:
        factor = self.render_factor
        settings = blender_camera(finer_grid_intrinsics(K, factor), world_to_camera, self.size * factor,
                                  self.size * factor)
        data = camera.data
        data.sensor_width = settings.sensor_width_mm
        data.lens = settings.lens_mm
        data.shift_x, data.shift_y = settings.shift_x, settings.shift_y
        camera.matrix_world = blender_matrix(settings.matrix_world)

    def _studio_light(self, rig: LightRig) -> None:
        """Workbench has no scene lights: its studio light turns with the key light's azimuth."""
        self.bpy.context.scene.display.shading.studiolight_rotate_z = float(np.radians(rig.key_azimuth_deg))

    def _read_view(self, path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Straight sRGB colour, coverage and camera-space depth of one written view."""
        channels = read_exr(path)
        factor = self.render_factor
        coverage = np.clip(channels["ViewLayer.Combined.A"], 0.0, 1.0)
        premultiplied = np.stack([channels[f"ViewLayer.Combined.{c}"] for c in "RGB"], axis=-1)
        z = channels["ViewLayer.Depth.Z"]
        hit = (coverage > 0) & (z < NO_HIT_DEPTH)
        if factor > 1:  # box-average the finer grid back down (linear light), as pyrender's supersampling
            hits = downsample(hit, factor)
            z = np.where(hits > 0, downsample(np.where(hit, z, 0.0), factor) / np.maximum(hits, 1e-6), 0.0)
            hit = hits > 0
            coverage, premultiplied = downsample(coverage, factor), downsample(premultiplied, factor)
        straight = np.where(coverage[..., None] > 0, premultiplied / np.maximum(coverage[..., None], 1e-6), 0.0)
        color = np.rint(linear_to_srgb(straight) * 255.0).astype(np.uint8)
        alpha = np.rint(coverage * 255.0).astype(np.uint8)
        depth = np.where((alpha > 0) & hit, z, 0.0).astype(np.float32)
        return color, alpha, depth

    @property
    def log_path(self) -> str:
        return str(runtime.log_path())

    def close(self) -> None:
        if self.scratch is not None:
            runtime.call(self._clear)
            shutil.rmtree(self.scratch, ignore_errors=True)
            self.scratch = None

    @staticmethod
    def _clear() -> None:
        with runtime.blender_output():
            runtime.clear_object_data()


class BlenderWorkbenchRenderer(BlenderRenderer):
    """Workbench: flat studio lighting and material/texture colours, tens of views per second."""

    name = "blender-workbench"
    engine = "BLENDER_WORKBENCH"


class BlenderEeveeRenderer(BlenderRenderer):
    """EEVEE: rasterized PBR; sensible on a GPU host (seconds per view on llvmpipe)."""

    name = "blender-eevee"
    engine = "BLENDER_EEVEE"


__all__ = ["BlenderRenderer", "BlenderWorkbenchRenderer", "BlenderEeveeRenderer", "srgb_to_linear"]
