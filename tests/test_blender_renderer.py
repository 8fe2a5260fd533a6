"""The Blender renderer against the shared conventions: pyrender's masks, the projection property,
textures, determinism, and files whose scripts must never run."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import trimesh
from conftest import projection_hits

from voxforge.pipeline.isolation import log_tail
from voxforge.pipeline.meshes import flatten, validate_and_normalize
from voxforge.pipeline.recycling import RECYCLE_EXIT_CODE, WorkerRecycler
from voxforge.pipeline.sources import ObjectRecord
from voxforge.pipeline.sources.local import LocalSource
from voxforge.renderers import get_renderer, sample_lighting
from voxforge.renderers.base import attach_source_file
from voxforge.renderers.blender.camera import blender_camera, project_like_blender
from voxforge.renderers.blender.importers import load_with_blender
from voxforge.renderers.blender.lighting import blender_lights
from voxforge.renderers.cameras import CameraRanges, camera_position, intrinsics, look_at, project, sample_cameras
from voxforge.voxelize import sample_surface

# never ``import bpy`` here: Blender's context belongs to the thread that imports it (the renderer's own)
HAVE_BPY = importlib.util.find_spec("bpy") is not None
needs_bpy = pytest.mark.skipif(not HAVE_BPY, reason="bpy (the blender extra) is not installed")

SHAPENET_AIRPLANE = "shapenetcore_v2/02691156/4de5861211ad5b95e7ef9fff09638f8e/models/model_normalized.obj"
SHAPENET_CHAIR = "shapenetcore_v2/03001627/341fcdd8a40a2612456cbf78e1e89022/models/model_normalized.obj"
SHAPENET_BENCH = "shapenetcore_v2/02828884/50c0de8fb13d6421dbbc9440457e303e/models/model_normalized.obj"
HELMET = "meshes/damaged_helmet_gltf/DamagedHelmet.gltf"
ARMCHAIR = "meshes/kaolin/armchair.obj"
# one per reader: OBJ+MTL, glTF, PLY, STL, OFF (no Blender importer: built from trimesh)
GEOMETRY_MESHES = [SHAPENET_AIRPLANE, SHAPENET_CHAIR, HELMET, "meshes/trimesh/bunny.ply",
                   "meshes/trimesh/featuretype.STL", "meshes/modelnet/ModelNet40/airplane/airplane_0006.off"]


def load_object(path: Path) -> tuple[trimesh.Scene, np.ndarray, np.ndarray]:
    """What the pipeline's load stage hands a renderer: the normalized scene, its file and matrix."""
    record = ObjectRecord(object_id=path.name, category="x", source="local", uri=str(path))
    scene, normalization = validate_and_normalize(LocalSource.load_record(record))
    attach_source_file(scene, str(path), normalization.matrix())
    vertices, faces = flatten(scene)
    return scene, vertices, faces


def cameras_for(vertices: np.ndarray, views: int, size: int, seed: int):
    radius = float(np.linalg.norm(vertices, axis=1).max())
    return sample_cameras(views, size, np.random.default_rng(seed), CameraRanges(), object_radius=radius)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_camera_conversion_reproduces_k_and_pose():
    """Blender's pinhole with the converted lens, shift and pose lands points where K puts them."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        K = intrinsics(127, rng.uniform(1.5, 3.0))
        K[:2, 2] += rng.uniform(-6, 6, size=2)  # off-centre principal point
        pose = look_at(camera_position(rng.uniform(0, 360), rng.uniform(-60, 60), rng.uniform(1, 3)))
        camera = blender_camera(K, pose, 127, 127)
        for point in rng.uniform(-0.4, 0.4, size=(5, 3)):
            assert np.allclose(project_like_blender(point, camera), project(point[None], K, pose)[0][0], atol=1e-9)
    with pytest.raises(ValueError, match="square pixels"):
        blender_camera(np.diag([100.0, 90.0, 1.0]), pose, 127, 127)


def test_light_rig_is_a_pure_function_of_the_recorded_rig():
    rigs = sample_lighting(3, np.random.default_rng(5))
    pose = look_at(camera_position(30, 25, 1.5))
    first, again = blender_lights(rigs[0], pose), blender_lights(rigs[0], pose)
    assert all(np.array_equal(getattr(first, f), getattr(again, f)) for f in first.__dataclass_fields__)
    others = [blender_lights(rig, pose) for rig in rigs[1:]]
    assert len({round(o.fill_size, 9) for o in [first, *others]}) == 3  # varies with the rig
    assert np.isclose(np.linalg.norm(first.key_direction), 1.0) and first.key_strength == rigs[0].key_intensity
    # the key light comes from the camera's side of the object, as in pyrender
    assert np.dot(first.key_direction, camera_position(30, 25, 1.5)) > 0


def _no_aa_renderer(name: str):
    if not HAVE_BPY:
        pytest.skip("bpy (the blender extra) is not installed")
    renderer = get_renderer(name)(127, supersample=1)
    yield renderer
    renderer.close()


@pytest.fixture(scope="module")
def workbench():
    yield from _no_aa_renderer("blender-workbench")


@pytest.fixture(scope="module")
def cycles():
    yield from _no_aa_renderer("blender")


def test_crash_reason_keeps_the_backends_words_not_the_dump(tmp_path):
    log = tmp_path / "blender.log"
    log.write_text("Read blend: /data/x.blend\nError: Cannot read file 'x.png'\n"
                   "*** SIGSEGV received at time=1 on cpu 0 ***\nFatal Python error: Segmentation fault\n\n"
                   "Stack (most recent call first):\n  File \"worker.py\", line 1 in main\n\n"
                   "Extension modules: " + ", ".join(f"module{i}" for i in range(300)) + " (total: 300)\n")
    tail = log_tail(str(log))
    assert tail == "Read blend: /data/x.blend | Error: Cannot read file 'x.png' | Fatal Python error: Segmentation fault"
    assert log_tail(str(tmp_path / "missing.log")) == "" and log_tail(None) == ""


def test_a_worker_due_for_recycling_exits_and_says_why(tmp_path):
    journal = tmp_path / "recycled.jsonl"
    code = ("import json\nfrom voxforge.pipeline.recycling import WorkerRecycler\n"
            f"r = WorkerRecycler(after_objects=2, journal=lambda e: open({str(journal)!r}, 'a').write(json.dumps(e)))\n"
            "r.object_done(); r.recycle_if_due(); print('kept after 1')\n"
            "r.object_done(); r.recycle_if_due(); print('not reached')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == RECYCLE_EXIT_CODE and "kept after 1" in done.stdout and "not reached" not in done.stdout
    assert "processed 2 objects" in json.loads(journal.read_text())["reason"]
    assert WorkerRecycler(memory_limit_bytes=1).reason().startswith("it holds")  # any process is above 1 byte


@pytest.mark.blender
@needs_bpy
def test_the_runs_cycles_samples_and_denoising_reach_cycles(shared_data):
    """--cycles-samples 1 --denoise: the renderer the workers build gets both, and OpenImageDenoise removes
    most of 1-sample Cycles' pixel noise (mean |luma - its 3x3 median| inside the bunny; measured 9.5 -> 2.4)."""
    from scipy import ndimage

    from voxforge.pipeline.config import RunConfig
    from voxforge.renderers.agreement import luma

    scene, vertices, _ = load_object(shared_data / "meshes/trimesh/bunny.ply")
    cameras, lights = cameras_for(vertices, 2, 64, seed=0), sample_lighting(2, np.random.default_rng(0))

    def noise(denoise: bool) -> float:
        config = RunConfig(renderer="blender", cycles_samples=1, denoise=denoise)
        renderer = get_renderer(config.renderer)(64, supersample=1, **config.renderer_options())
        try:
            assert (renderer.samples, renderer.denoise) == (1, denoise)
            result = renderer.render(scene, cameras, lights)
        finally:
            renderer.close()
        residuals = []
        for color, alpha in zip(result.color, result.alpha):
            y = luma(color).astype(float)
            inside = ndimage.binary_erosion(alpha == 255, iterations=2)
            residuals.append(np.abs(y - ndimage.median_filter(y, 3))[inside].mean())
        return float(np.mean(residuals))

    assert noise(True) < 0.5 * noise(False)


@pytest.mark.blender
@needs_bpy
@pytest.mark.parametrize("engine", ["cycles", "workbench"])
def test_silhouette_and_depth_follow_k_and_the_pose(engine, request):
    """A small off-centre sphere lands where K (with a shifted principal point) puts it; depth is camera z."""
    renderer = request.getfixturevalue(engine)
    centre = np.array([0.2, -0.1, 0.15])
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.06)
    sphere.apply_translation(centre)
    cameras = sample_cameras(3, 127, np.random.default_rng(3))
    cameras.K[:, 0, 2] += 5.3
    cameras.K[:, 1, 2] -= 3.7
    result = renderer.render(trimesh.Scene(sphere), cameras, sample_lighting(3, np.random.default_rng(3)))
    assert result.color.shape == (3, 127, 127, 3) and result.alpha.dtype == np.uint8
    rows, columns = np.mgrid[:127, :127]
    for view in range(3):
        weights = result.alpha[view].astype(float)
        centroid = np.array([(columns * weights).sum(), (rows * weights).sum()]) / weights.sum()
        expected, depth = project(centre[None], cameras.K[view], cameras.world_to_camera[view])
        assert np.abs(centroid - expected[0]).max() < 0.25
        hit = result.depth[view][result.alpha[view] == 255]
        assert len(hit) and np.all(np.abs(hit - depth[0]) < 0.07)
        assert (result.depth[view][result.alpha[view] == 0] == 0).all()


@pytest.mark.blender
@needs_bpy
@pytest.mark.parametrize("engine", ["cycles", "workbench"])
def test_masks_agree_with_pyrender_on_shared_meshes(engine, request, shared_data, pyrender_no_aa):
    """Same object, same cameras: per-view mask IoU >= 0.97 (anti-aliasing off on both sides, so both
    sample the pixel centres and the comparison is about geometry, not edge sampling noise)."""
    renderer = request.getfixturevalue(engine)
    for index, name in enumerate(GEOMETRY_MESHES):
        scene, vertices, _ = load_object(shared_data / name)
        cameras = cameras_for(vertices, 3, 127, seed=index)
        lights = sample_lighting(3, np.random.default_rng(index))
        reference = pyrender_no_aa.render(scene, cameras, lights)
        result = renderer.render(scene, cameras, lights)
        for view in range(3):
            score = iou(result.alpha[view] >= 128, reference.alpha[view] >= 128)
            assert score >= 0.97, f"{name} view {view}: IoU {score:.3f}"


@pytest.mark.blender
@needs_bpy
def test_masks_agree_with_pyrender_at_default_anti_aliasing(shared_data):
    """Both renderers anti-aliased as shipped (Cycles 2x2 supersampled at 4 spp each, pyrender 2x2):
    IoU >= 0.97 per view, also where parts are thinner than a pixel (the airplane's wings seen edge-on,
    the chair's thin legs), because both estimate coverage from the same sub-pixel grid."""
    blender, pyrender = get_renderer("blender")(127), get_renderer("pyrender")(127)
    try:
        for index, name in enumerate([SHAPENET_AIRPLANE, SHAPENET_CHAIR, SHAPENET_BENCH, HELMET,
                                      "meshes/trimesh/bunny.ply"]):
            scene, vertices, _ = load_object(shared_data / name)
            cameras = cameras_for(vertices, 3, 127, seed=index)
            lights = sample_lighting(3, np.random.default_rng(index))
            result, reference = blender.render(scene, cameras, lights), pyrender.render(scene, cameras, lights)
            for view in range(3):
                score = iou(result.alpha[view] >= 128, reference.alpha[view] >= 128)
                assert score >= 0.97, f"{name} view {view}: IoU {score:.3f}"
    finally:
        blender.close()
        pyrender.close()


@pytest.mark.blender
@needs_bpy
def test_surface_points_project_onto_blender_masks(shared_data):
    """The dataset's projection property holds for Blender renders at the default anti-aliasing."""
    renderer = get_renderer("blender-workbench")(127)
    try:
        for index, name in enumerate([SHAPENET_CHAIR, ARMCHAIR]):
            scene, vertices, faces = load_object(shared_data / name)
            points, _ = sample_surface(vertices, faces, 4000, seed=index)
            cameras = cameras_for(vertices, 3, 127, seed=index)
            result = renderer.render(scene, cameras, sample_lighting(3, np.random.default_rng(index)))
            for view in range(3):
                hits = projection_hits(points, cameras.K[view], cameras.world_to_camera[view],
                                       result.alpha[view] >= 128)
                assert hits.mean() >= 0.99, f"{name} view {view}: {hits.mean():.3f}"
    finally:
        renderer.close()


def texture_samples(scene: trimesh.Scene, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Surface points and the texture's colour there (from trimesh's own UVs and image)."""
    rng = np.random.default_rng(seed)
    points, colors = [], []
    for mesh in scene.dump():
        material = getattr(mesh.visual, "material", None)
        image = getattr(material, "image", None) or getattr(material, "baseColorTexture", None)
        if image is None or getattr(mesh.visual, "uv", None) is None:
            continue
        texels = np.asarray(image.convert("RGB"), np.float64)
        surface, face_index = trimesh.sample.sample_surface(mesh, count, seed=int(rng.integers(1 << 31)))
        weights = trimesh.triangles.points_to_barycentric(mesh.triangles[face_index], surface)
        uv = np.einsum("ij,ijk->ik", weights, mesh.visual.uv[mesh.faces[face_index]]) % 1.0
        rows = np.clip(((1 - uv[:, 1]) * texels.shape[0]).astype(int), 0, texels.shape[0] - 1)
        columns = np.clip((uv[:, 0] * texels.shape[1]).astype(int), 0, texels.shape[1] - 1)
        points.append(surface)
        colors.append(texels[rows, columns])
    return np.concatenate(points), np.concatenate(colors)


@pytest.mark.blender
@needs_bpy
@pytest.mark.parametrize("name", [HELMET, ARMCHAIR])
def test_textured_objects_render_with_their_textures(name, cycles, shared_data):
    """At visible surface points the rendered colour follows the texture's colour there: light and dark
    texels stay light and dark (a plain-coloured render would show no such relation)."""
    scene, vertices, _ = load_object(shared_data / name)
    points, texels = texture_samples(scene, 4000, seed=0)
    cameras = cameras_for(vertices, 2, 127, seed=1)
    result = cycles.render(scene, cameras, sample_lighting(2, np.random.default_rng(1)))
    for view in range(2):
        pixels, depth = project(points, cameras.K[view], cameras.world_to_camera[view])
        pixels = np.rint(pixels).astype(int)
        rendered_depth = result.depth[view][pixels[:, 1], pixels[:, 0]]
        visible = (result.alpha[view][pixels[:, 1], pixels[:, 0]] == 255) & (np.abs(rendered_depth - depth) < 0.01)
        assert visible.sum() > 500
        rendered = result.color[view][pixels[visible, 1], pixels[visible, 0]].astype(float).mean(axis=1)
        texture = texels[visible].mean(axis=1)
        correlation = np.corrcoef(rendered, texture)[0, 1]
        assert texture.std() > 10 and correlation > 0.5, (name, view, correlation)


@pytest.mark.blender
@needs_bpy
def test_shapenet_textures_come_through_blenders_obj_reader(cycles, shared_data):
    """ShapeNet's MTL files point at ../images/: Blender's OBJ importer finds them (trimesh does not)."""
    scene, vertices, _ = load_object(shared_data / SHAPENET_BENCH)
    cameras = cameras_for(vertices, 1, 127, seed=1)
    cycles.render(scene, cameras, sample_lighting(1, np.random.default_rng(1)))
    bpy = cycles.bpy
    images = [image for image in bpy.data.images if image.source == "FILE"]
    assert len(images) >= 3 and all(image.size[0] > 0 for image in images)  # size: the pixels were read
    assert all(Path(bpy.path.abspath(image.filepath)).parent.name == "images" for image in images)
    textured = [m for m in bpy.data.materials if m.node_tree and any(n.type == "TEX_IMAGE" and n.image in images
                                                                    for n in m.node_tree.nodes)]
    assert len(textured) >= 3


@pytest.mark.blender
@needs_bpy
@pytest.mark.parametrize("engine", ["blender", "blender-workbench"])
def test_same_seed_same_images_and_jitter_is_seeded(engine, shared_data):
    renderer = get_renderer(engine)(64, material_jitter=True)
    plain = get_renderer(engine)(64)
    try:
        scene, vertices, _ = load_object(shared_data / SHAPENET_BENCH)
        other, _, _ = load_object(shared_data / "meshes/trimesh/bunny.ply")
        cameras = cameras_for(vertices, 2, 64, seed=7)
        lights = sample_lighting(2, np.random.default_rng(7))
        first = renderer.render(scene, cameras, lights)
        renderer.render(other, cameras, lights)  # another object in between must leave nothing behind
        second = renderer.render(scene, cameras, lights)
        for array in ("color", "alpha", "depth"):
            assert np.array_equal(getattr(first, array), getattr(second, array)), array
        unjittered = plain.render(scene, cameras, lights)
        assert np.array_equal(unjittered.alpha, first.alpha)
        if engine == "blender":  # Workbench shows the texture itself: jitter reaches untextured colours only
            assert not np.array_equal(unjittered.color, first.color)  # jitter changes colours, never shape
    finally:
        renderer.close()
        plain.close()


MAKE_FILES = textwrap.dedent("""
    import sys, pathlib
    import bpy
    folder = pathlib.Path(sys.argv[1])
    marker = folder / "marker"
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.mesh.primitive_cube_add(size=1.0)
    cube = bpy.context.active_object
    driver = cube.driver_add("location", 0).driver
    driver.type = "SCRIPTED"
    driver.expression = f"__import__('pathlib').Path('{marker}_driver').touch() or 0.25"
    text = bpy.data.texts.new("autorun.py")
    text.write(f"import pathlib\\npathlib.Path('{marker}_text').touch()\\n")
    text.use_module = True
    bpy.ops.wm.save_as_mainfile(filepath=str(folder / "scripted.blend"))
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.mesh.primitive_cone_add(radius1=0.5, depth=1.2, location=(0.3, 0.0, 0.2))
    bpy.ops.mesh.primitive_cube_add(size=0.4, location=(-0.5, 0.2, 0.0))
    bpy.ops.export_scene.fbx(filepath=str(folder / "shapes.fbx"))
    # positive control: with auto-execution allowed, this file's scripts do run
    bpy.context.preferences.filepaths.use_scripts_auto_execute = True
    bpy.ops.wm.open_mainfile(filepath=str(folder / "scripted.blend"), load_ui=False, use_scripts=True)
    bpy.context.evaluated_depsgraph_get().update()
    print("ran:", sorted(p.name for p in folder.glob("marker_*")))
""")


@pytest.fixture(scope="module")
def blender_files(tmp_path_factory):
    if not HAVE_BPY:
        pytest.skip("bpy (the blender extra) is not installed")
    folder = tmp_path_factory.mktemp("blender_files")
    done = subprocess.run([sys.executable, "-c", MAKE_FILES, str(folder)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ran: ['marker_driver', 'marker_text']" in done.stdout  # the scripts are real and would run
    for marker in folder.glob("marker_*"):
        marker.unlink()
    return folder


@pytest.mark.blender
@needs_bpy
def test_blend_file_scripts_and_drivers_never_run(blender_files, workbench, pyrender_no_aa):
    path = blender_files / "scripted.blend"
    raw = load_with_blender(path)  # the local source's reader for .blend
    assert np.allclose(raw.bounds, [[-0.5, -0.5, -0.5], [0.5, 0.5, 0.5]])  # the driver would move it +0.25 in x
    scene, vertices, _ = load_object(path)
    cameras = cameras_for(vertices, 2, 127, seed=0)
    lights = sample_lighting(2, np.random.default_rng(0))
    result = workbench.render(scene, cameras, lights)
    assert not list(blender_files.glob("marker_*")), "a script stored in the .blend file ran"
    reference = pyrender_no_aa.render(scene, cameras, lights)
    for view in range(2):
        assert iou(result.alpha[view] >= 128, reference.alpha[view] >= 128) >= 0.97


@pytest.mark.blender
@needs_bpy
def test_fbx_is_read_through_blender_and_lands_in_the_object_frame(blender_files, cycles, pyrender_no_aa):
    scene, vertices, _ = load_object(blender_files / "shapes.fbx")
    assert len(vertices) >= 8 and np.isclose(np.ptp(vertices, axis=0).dot(np.ptp(vertices, axis=0)), 1.0)
    cameras = cameras_for(vertices, 2, 127, seed=2)
    lights = sample_lighting(2, np.random.default_rng(2))
    result, reference = cycles.render(scene, cameras, lights), pyrender_no_aa.render(scene, cameras, lights)
    for view in range(2):
        assert iou(result.alpha[view] >= 128, reference.alpha[view] >= 128) >= 0.97


@pytest.mark.blender
@needs_bpy
@pytest.mark.skipif(importlib.util.find_spec("collada") is None, reason="pycollada is not installed")
def test_collada_is_read_by_trimesh_and_keeps_its_colours(tmp_path, workbench, pyrender_no_aa):
    """Blender 5.0 has no COLLADA importer: .dae comes through trimesh (pycollada) with its materials."""
    red = trimesh.creation.box(extents=[0.6, 0.3, 0.4])
    red.visual.face_colors = [220, 30, 30, 255]
    blue = trimesh.creation.icosphere(subdivisions=2, radius=0.25)
    blue.apply_translation([0.0, 0.35, 0.0])
    blue.visual.face_colors = [30, 30, 220, 255]
    path = tmp_path / "parts.dae"
    path.write_bytes(trimesh.exchange.dae.export_collada([red, blue]))
    scene, vertices, _ = load_object(path)
    cameras = cameras_for(vertices, 2, 127, seed=3)
    lights = sample_lighting(2, np.random.default_rng(3))
    result, reference = workbench.render(scene, cameras, lights), pyrender_no_aa.render(scene, cameras, lights)
    for view in range(2):
        assert iou(result.alpha[view] >= 128, reference.alpha[view] >= 128) >= 0.97
        colors = result.color[view][result.alpha[view] == 255].astype(int)
        assert (colors[:, 0] > colors[:, 2] + 40).mean() > 0.2 and (colors[:, 2] > colors[:, 0] + 40).mean() > 0.1


@pytest.mark.blender
@needs_bpy
def test_textures_from_outside_the_mesh_folder_are_not_read(tmp_path, shared_data, workbench):
    """An untrusted MTL naming /some/other/place.jpg must not put that file into the dataset."""
    outside = tmp_path / "elsewhere" / "secret.jpg"
    outside.parent.mkdir()
    outside.write_bytes((shared_data / "meshes/kaolin/textures/armchair_legs.jpg").read_bytes())
    folder = tmp_path / "collection" / "objects"
    folder.mkdir(parents=True)
    (folder / "box.obj").write_text("mtllib box.mtl\nv 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\n"
                                    "vt 0 0\nvt 1 0\nvt 1 1\nvt 0 1\nusemtl m\nf 1/1 2/2 3/3 4/4\n")
    (folder / "box.mtl").write_text(f"newmtl m\nKd 0.8 0.8 0.8\nmap_Kd {outside}\n")
    scene, vertices, _ = load_object(folder / "box.obj")
    workbench.render(scene, cameras_for(vertices, 1, 127, seed=0), sample_lighting(1, np.random.default_rng(0)))
    assert not [image for image in workbench.bpy.data.images if "secret" in image.filepath]


@pytest.mark.blender
@needs_bpy
def test_unreadable_file_fails_with_blenders_own_words(tmp_path, workbench):
    broken = tmp_path / "broken.glb"
    broken.write_bytes(b"glTF\x02\x00\x00\x00garbage")
    scene = trimesh.Scene(trimesh.creation.box())
    attach_source_file(scene, str(broken), np.eye(4))
    with pytest.raises(RuntimeError, match="Bad GLB"):
        workbench.render(scene, sample_cameras(1, 127, np.random.default_rng(0)), sample_lighting(1, np.random.default_rng(0)))


@pytest.mark.blender
@needs_bpy
def test_a_file_read_differently_is_rendered_from_the_pipelines_triangles(shared_data, workbench, pyrender_no_aa,
                                                                           caplog):
    scene, vertices, _ = load_object(shared_data / SHAPENET_CHAIR)
    attach_source_file(scene, str(shared_data / SHAPENET_CHAIR), np.diag([0.5, 0.5, 0.5, 1.0]))  # wrong matrix
    cameras = cameras_for(vertices, 2, 127, seed=4)
    lights = sample_lighting(2, np.random.default_rng(4))
    result = workbench.render(scene, cameras, lights)
    assert "rendering the pipeline's triangles instead" in caplog.text
    reference = pyrender_no_aa.render(scene, cameras, lights)
    for view in range(2):
        assert iou(result.alpha[view] >= 128, reference.alpha[view] >= 128) >= 0.97
