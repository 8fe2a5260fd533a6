"""Fast rasterizing renderer: pyrender on a headless EGL (or OSMesa) context."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import trimesh

from voxforge.renderers.base import LightRig, RenderResult, Renderer, downsample, unpremultiply
from voxforge.renderers.cameras import CameraSet, camera_to_world_opengl, finer_grid_intrinsics, rotation_with_z
from voxforge.renderers.gl import choose_platform
from voxforge.renderers.shading import (
    PLAIN_COLOR, linear_vertex_colors, prepare_for_shading, srgb_to_linear, two_sided_fragment_shader,
)

if not hasattr(np, "infty"):  # pyrender 0.1.45 still spells it np.infty, removed in numpy 2
    np.infty = np.inf


def _disable_msaa(renderer_module) -> None:
    """Make pyrender's 4x multisampled framebuffer single-sampled.

    On Mesa's llvmpipe 4x MSAA costs 4-5x the frame time, while rendering 2x2 larger and averaging
    (supersampling) gives the same 4 samples per pixel for about half the cost. pyrender has no
    setting for this, so its one call that picks the sample count is wrapped.
    """
    original = renderer_module.glRenderbufferStorageMultisample
    if getattr(original, "voxforge_single_sample", False):
        return

    def single_sample(target, samples, internal_format, width, height):
        return original(target, 0, internal_format, width, height)

    single_sample.voxforge_single_sample = True
    renderer_module.glRenderbufferStorageMultisample = single_sample


class PyrenderRenderer(Renderer):
    """One offscreen GL context per worker process, reused for every object it renders.

    An EGL context is current in one thread only, and Ray may call an actor from other threads than
    the one that built it, so every GL call goes through one dedicated thread.
    """

    name = "pyrender"

    def __init__(self, size: int, supersample: int = 2) -> None:
        super().__init__(size, supersample)
        self._gl_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="voxforge-gl")
        self._gl_thread.submit(self._create_context).result()

    def _create_context(self) -> None:
        choose_platform()
        import pyrender
        import pyrender.renderer

        _disable_msaa(pyrender.renderer)
        self._pyrender = pyrender
        render_size = self.size * self.supersample
        self._offscreen = pyrender.OffscreenRenderer(render_size, render_size)
        self._offscreen._renderer._program_cache = _two_sided_program_cache(pyrender)
        self._flags = pyrender.RenderFlags.RGBA | pyrender.RenderFlags.SKIP_CULL_FACES

    def _build_scene(self, scene: trimesh.Scene):
        """One pyrender mesh holding every part as a primitive, in the scene graph's order (pyrender draws
        separate meshes in a set's order, which changed the image from run to run where parts overlap), and
        warnings for the sample: parts whose look pyrender could not use are drawn plain, and say so."""
        pyrender = self._pyrender
        scene, _ = prepare_for_shading(scene)  # object frame, no coincident faces (voxforge.renderers.shading)
        render_scene = pyrender.Scene(bg_color=[0.0, 0.0, 0.0, 0.0])
        primitives, warnings = [], []
        for node_name in scene.graph.nodes_geometry:
            _, geometry_name = scene.graph[node_name]  # the transform is the identity after preparation
            geometry = scene.geometry[geometry_name]
            try:
                mesh = pyrender.Mesh.from_trimesh(geometry, smooth=False)
            except Exception as error:  # exotic visuals (broken texture, odd UVs): keep the geometry, drop the look
                warnings.append(f"part '{node_name}' rendered in plain grey: pyrender could not use its colours or "
                                f"texture ({type(error).__name__}: {error})")
                geometry = trimesh.Trimesh(geometry.vertices, geometry.faces, process=False)
                mesh = pyrender.Mesh.from_trimesh(geometry, smooth=False)
            plain = isinstance(geometry.visual, trimesh.visual.ColorVisuals)  # no material from the file
            for primitive in mesh.primitives:
                if primitive.color_0 is not None:  # face and vertex colours are sRGB: pyrender wants linear
                    primitive.color_0 = linear_vertex_colors(primitive.color_0)
                if plain:  # pyrender's own defaults (metallic 0.2, grey 0.3) as Blender's plain material
                    primitive.material.metallicFactor = 0.0
                    primitive.material.roughnessFactor = 0.5
                    if primitive.color_0 is None:
                        primitive.material.baseColorFactor = np.append(srgb_to_linear(np.array(PLAIN_COLOR[:3]) / 255), 1.0)
            primitives.extend(mesh.primitives)
        if primitives:
            render_scene.add(pyrender.Mesh(primitives=primitives))
        return render_scene, warnings

    def render(self, scene: trimesh.Scene, cameras: CameraSet, lights: list[LightRig]) -> RenderResult:
        return self._gl_thread.submit(self._render, scene, cameras, lights).result()

    def _render(self, scene: trimesh.Scene, cameras: CameraSet, lights: list[LightRig]) -> RenderResult:
        pyrender = self._pyrender
        render_scene, warnings = self._build_scene(scene)
        views, size = len(cameras), self.size
        camera_node = render_scene.add(pyrender.IntrinsicsCamera(1.0, 1.0, 0.0, 0.0, znear=0.01, zfar=100.0))
        key_node = render_scene.add(pyrender.DirectionalLight())
        fill_node = render_scene.add(pyrender.DirectionalLight())
        color = np.empty((views, size, size, 3), np.uint8)
        alpha = np.empty((views, size, size), np.uint8)
        depth = np.empty((views, size, size), np.float32)
        for view in range(views):
            factor = self.supersample
            K = finer_grid_intrinsics(cameras.K[view], factor)  # rendered finer, averaged back down
            # pyrender's principal point counts from pixel edges and from the bottom row
            camera_node.camera = pyrender.IntrinsicsCamera(
                K[0, 0], K[1, 1], K[0, 2] + 0.5, size * factor - K[1, 2] - 0.5, znear=0.01, zfar=100.0,
            )
            pose = camera_to_world_opengl(cameras.world_to_camera[view])
            render_scene.set_pose(camera_node, pose)
            rig = lights[view]
            camera_rotation = cameras.world_to_camera[view][:, :3].T
            key_direction = camera_rotation @ rig.key_direction_camera()
            fill_direction = camera_rotation @ (rig.key_direction_camera() * np.array([-1.0, -0.3, 1.0]))
            key_node.light.intensity, key_node.light.color = rig.key_intensity, np.array(rig.key_color)
            fill_node.light.intensity = rig.fill_intensity
            render_scene.set_pose(key_node, _pose(rotation_with_z(key_direction)))
            render_scene.set_pose(fill_node, _pose(rotation_with_z(fill_direction)))
            render_scene.ambient_light = np.full(3, rig.ambient)
            rgba, view_depth = self._offscreen.render(render_scene, flags=self._flags)
            coverage = downsample(rgba[..., 3], factor)
            premultiplied = downsample(rgba[..., :3], factor)
            hits = downsample(view_depth > 0, factor)
            alpha[view] = np.rint(coverage).astype(np.uint8)
            color[view] = unpremultiply(np.rint(premultiplied).astype(np.uint8), alpha[view])
            depth[view] = np.where(hits > 0, downsample(view_depth, factor) / np.maximum(hits, 1e-6), 0.0)
        render_scene.clear()
        return RenderResult(color=color, alpha=alpha, depth=depth, warnings=warnings)

    def close(self) -> None:
        if self._offscreen is not None:
            self._gl_thread.submit(self._offscreen.delete).result()
            self._offscreen = None
        self._gl_thread.shutdown()


_SHADER_DIR: str | None = None


def _two_sided_program_cache(pyrender):
    """pyrender's shader cache reading its own shaders, except ``mesh.frag`` made two-sided.

    The shaders are copied at run time from the installed pyrender into a folder of this process and the
    one normal line of ``mesh.frag`` is patched (:func:`voxforge.renderers.shading.two_sided_fragment_shader`):
    pyrender has no setting for it (``doubleSided`` only turns culling off, which the renderer does anyway).
    """
    global _SHADER_DIR
    import atexit
    import os
    import shutil
    import tempfile

    from pyrender.shader_program import ShaderProgramCache

    if _SHADER_DIR is None:
        original = os.path.join(os.path.dirname(pyrender.__file__), "shaders")
        folder = tempfile.mkdtemp(prefix="voxforge-shaders-")
        atexit.register(shutil.rmtree, folder, True)
        for name in os.listdir(original):
            shutil.copy(os.path.join(original, name), folder)
        path = os.path.join(folder, "mesh.frag")
        with open(path) as handle:
            patched = two_sided_fragment_shader(handle.read())
        with open(path, "w") as handle:
            handle.write(patched)
        _SHADER_DIR = folder
    return ShaderProgramCache(shader_dir=_SHADER_DIR)


def _pose(rotation: np.ndarray) -> np.ndarray:
    pose = np.eye(4)
    pose[:3, :3] = rotation
    return pose
