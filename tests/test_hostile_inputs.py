"""Inputs that used to enter the dataset wrong or take a node down: far-from-origin meshes, samples whose
images and geometry disagree, and memory bombs (declared sizes far beyond the file, texture images that
decode to gigabytes)."""

from __future__ import annotations

import io
import json
import struct
import zlib

import numpy as np
import pytest
import trimesh
from PIL import Image

from voxforge.loaders import format as fmt
from voxforge.pipeline.alignment import check_alignment
from voxforge.pipeline.config import RunConfig
from voxforge.pipeline.sources import ObjectRecord
from voxforge.pipeline.stages import load_stage, make_sample
from voxforge.renderers import sample_lighting
from voxforge.renderers.backgrounds import BackgroundPool
from voxforge.renderers.cameras import CameraRanges, sample_cameras

CHAIR = "shapenetcore_v2/03001627/341fcdd8a40a2612456cbf78e1e89022/models/model_normalized.obj"


def shifted_copies(shared_data, tmp_path, shifts) -> list[str]:
    mesh = trimesh.load(shared_data / CHAIR, force="mesh", process=False)
    paths = []
    for shift in shifts:
        moved = mesh.copy()
        moved.vertices = np.asarray(mesh.vertices, np.float64) + shift
        path = tmp_path / f"chair_{shift:g}.obj"
        path.write_text(trimesh.exchange.obj.export_obj(moved, include_texture=False, digits=17))
        paths.append(str(path))
    return paths


def render_masks(path: str, renderer) -> tuple[np.ndarray, dict]:
    loaded = load_stage(ObjectRecord(object_id="chair", category="chair", source="local", uri=path))
    cameras = sample_cameras(4, 127, np.random.default_rng(0), CameraRanges(), object_radius=0.5)
    result = renderer.render(loaded["scene"], cameras, sample_lighting(4, np.random.default_rng(0)))
    return result.alpha >= 128, loaded


@pytest.mark.parametrize("shift", [1e6, 1e12])
def test_far_from_the_origin_renders_the_same_masks(shared_data, tmp_path, pyrender_no_aa, shift):
    near, far = shifted_copies(shared_data, tmp_path, [0.0, shift])
    reference, _ = render_masks(near, pyrender_no_aa)
    masks, loaded = render_masks(far, pyrender_no_aa)
    for view in range(4):
        iou = (masks[view] & reference[view]).sum() / (masks[view] | reference[view]).sum()
        assert iou >= 0.99, (view, iou)
    assert loaded["normalization"].center[0] == pytest.approx(shift, rel=1e-9)


def test_a_sample_whose_masks_miss_its_points_is_failed(shared_data, tmp_path, pyrender_no_aa):
    (path,) = shifted_copies(shared_data, tmp_path, [0.0])
    record = ObjectRecord(object_id="chair", category="chair", source="local", uri=path)
    members = make_sample(record, "train", pyrender_no_aa, BackgroundPool(None), RunConfig(views=3, size=127))
    meta = json.loads(members["json"])
    points = np.load(io.BytesIO(members[fmt.POINTS]))
    K, world_to_camera = np.array(meta["cameras"]["K"]), np.array(meta["cameras"]["world_to_camera"])
    alpha = np.stack([np.array(Image.open(io.BytesIO(members[fmt.mask_member(v)]))) for v in range(3)])
    check_alignment(points, K, world_to_camera, alpha)  # the sample as made agrees with itself
    with pytest.raises(ValueError, match="view 0: only .* of the object's surface points land on its mask"):
        check_alignment(points + [0.3, 0.0, 0.0], K, world_to_camera, alpha)  # geometry moved off the images
    with pytest.raises(ValueError, match="view 1 rendered nothing"):
        check_alignment(points, K, world_to_camera, np.concatenate([alpha[:1], np.zeros_like(alpha[1:])]))


@pytest.mark.slow
def test_an_object_needing_more_memory_than_the_cap_fails_alone(shared_data, tmp_path, ray_local):
    """A 300-byte glTF whose POSITION accessor declares 1.9 GB of zeros (below the reader's own 2 GiB
    bound), among good objects, with workers capped at 2.5 GB: it fails with the cap in its reason."""
    from conftest import small_config
    from test_faithful_geometry import FLOAT, Gltf

    from voxforge.pipeline.run import run

    folder = tmp_path / "in" / "things"
    folder.mkdir(parents=True)
    for name in ("Duck.glb", "BoxTextured.glb"):
        (folder / name).write_bytes((shared_data / "meshes" / "trimesh" / name).read_bytes())
    gltf = Gltf()
    gltf.json["accessors"].append({"componentType": FLOAT, "type": "VEC3", "count": 170_000_000})
    gltf.node(mesh=gltf.mesh({"attributes": {"POSITION": 0}}))
    gltf.write(folder / "zeros.glb")
    summary = run(small_config(tmp_path / "out", source="local", path=str(tmp_path / "in"), limit=None,
                               object_memory_gb=2.5, max_triangles=0))  # no triangle limit: the cap is tested
    failed = dict(summary.failures)
    assert summary.ok == 2 and set(failed) == {"things/zeros.glb"}
    assert "needed more memory than the worker may use (--object-memory-gb 2.5)" in failed["things/zeros.glb"]


def bomb_png(side: int) -> bytes:
    """A 1-bit greyscale PNG of ``side`` x ``side`` pixels: a few hundred KB that renderers decode to
    ``4 * side**2`` bytes (3.6 GB at 30000)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + b"\xff" * ((side + 7) // 8)
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", data) + chunk(b"IEND", b""))


BOX_OBJ = """mtllib box.mtl
v -1 -1 -1\nv 1 -1 -1\nv 1 1 -1\nv -1 1 -1\nv -1 -1 1\nv 1 -1 1\nv 1 1 1\nv -1 1 1
vt 0 0\nvt 1 0\nvt 1 1\nvt 0 1
usemtl red
f 1/1 4/4 3/3 2/2\nf 5/1 6/2 7/3 8/4\nf 1/1 2/2 6/3 5/4\nf 2/1 3/2 7/3 6/4\nf 3/1 4/2 8/3 7/4\nf 4/1 1/2 5/3 8/4
"""


def texture_bombs(folder, png: bytes) -> dict[str, str]:
    """An OBJ whose material's map_Kd is ``png``, and a GLB cube with ``png`` embedded as its base colour
    texture; name -> path."""
    from test_faithful_geometry import FLOAT, Gltf

    (folder / "bomb.png").write_bytes(png)
    (folder / "box.mtl").write_text("newmtl red\nKd 0.8 0.1 0.1\nmap_Kd bomb.png\n")
    (folder / "box.obj").write_text(BOX_OBJ)
    gltf = Gltf()
    mesh = gltf.cube()
    corners = np.array([[x, y] for x in (0.0, 1.0) for y in (0.0, 1.0) for _ in (0, 1)], np.float32)
    gltf.json["meshes"][mesh]["primitives"][0]["attributes"]["TEXCOORD_0"] = gltf.accessor(corners, FLOAT, "VEC2")
    gltf.json["meshes"][mesh]["primitives"][0]["material"] = 0
    gltf.json.update(images=[{"bufferView": gltf.view(png), "mimeType": "image/png"}], textures=[{"source": 0}],
                     materials=[{"pbrMetallicRoughness": {"baseColorTexture": {"index": 0},
                                                          "baseColorFactor": [0.1, 0.8, 0.1, 1.0]}}])
    gltf.node(mesh=mesh)
    return {"box.obj": str(folder / "box.obj"), "cube.glb": gltf.write(folder / "cube.glb")}


PIXEL_LIMIT = "is 900,000,000 pixels, above the limit of 67,108,864 pixels (--max-texture-pixels)"


def test_texture_bombs_are_left_out_from_their_header(tmp_path):
    """Both readers refuse the 30000x30000 texture before decoding it: the object loads with its base
    colour and a warning that names the image and the limit."""
    paths = texture_bombs(tmp_path, bomb_png(30000))
    for name, path in paths.items():
        loaded = load_stage(ObjectRecord(object_id=name, category="x", source="local", uri=path))
        assert any("'bomb.png' " + PIXEL_LIMIT in w or PIXEL_LIMIT in w for w in loaded["warnings"]), loaded["warnings"]
        materials = [g.visual.material for g in loaded["scene"].geometry.values() if hasattr(g.visual, "material")]
        assert all(getattr(m, "image", None) is None and getattr(m, "baseColorTexture", None) is None
                   for m in materials)


@pytest.mark.parametrize("limit, refused", [(0, False), (300_000_000, False), (200_000_000, True)])
def test_the_texture_limit_is_the_only_bound(limit, refused):
    """--max-texture-pixels 0 (no limit) or above Pillow's own refusal (2 x Image.MAX_IMAGE_PIXELS, 179M by
    default) lets a 15000x15000 texture through, as asked; a limit below it refuses it, naming the limit."""
    from PIL import Image

    from voxforge.meshio import Limits, set_limits
    from voxforge.meshio.images import texture_problem

    before = Limits.max_triangles, Limits.max_texture_pixels
    png = bomb_png(15000)  # 225,000,000 pixels
    try:
        set_limits(Limits.max_triangles, limit)
        problem = texture_problem(png, "big.png")
        if refused:
            assert problem and "is 15000x15000 pixels, above the limit of 200,000,000 pixels" in problem
        else:
            assert problem is None
            with Image.open(io.BytesIO(png)) as image:  # Pillow's own check (at open) passes too
                assert image.size == (15000, 15000)
    finally:
        set_limits(*before)
    assert Image.MAX_IMAGE_PIXELS == max(before[1], 89_478_485)


@pytest.mark.blender
def test_blender_never_decodes_a_texture_bomb(tmp_path):
    """Blender reads an OBJ's textures itself, on first use: the bomb is dropped before that, the box is
    rendered in its material's red, and this process's memory does not grow by the 3.6 GB decode."""
    from conftest import PeakMemory

    from voxforge.renderers import get_renderer

    path = texture_bombs(tmp_path, bomb_png(30000))["box.obj"]
    loaded = load_stage(ObjectRecord(object_id="box", category="x", source="local", uri=path))
    renderer = get_renderer("blender-workbench")(64)
    cameras = sample_cameras(2, 64, np.random.default_rng(0), CameraRanges(), object_radius=0.9)
    try:
        with PeakMemory() as memory:
            result = renderer.render(loaded["scene"], cameras, sample_lighting(2, np.random.default_rng(0)))
    finally:
        renderer.close()
    assert memory.peak - memory.baseline < 1.0e9, (memory.baseline, memory.peak)
    red, green, blue = result.color[result.alpha == 255].astype(float).mean(axis=0)
    assert red > 2 * green and red > 2 * blue


@pytest.mark.slow
def test_memory_bombs_among_good_objects_leave_the_run_small(shared_data, tmp_path, ray_local):
    """A GLB declaring 300M vertices of zeros, an OBJ and a GLB whose textures decode to 3.6 GB each, among
    two good objects, default limits: the declared-size bomb fails with the limit in its reason, the
    texture bombs are made without their texture (warning in the manifest), and the whole run (driver,
    Ray, workers) stays within 3 GB of its resident memory before the run (1.8 GB measured)."""
    from conftest import PeakMemory, small_config
    from test_faithful_geometry import FLOAT, Gltf

    from voxforge.pipeline.run import run

    folder = tmp_path / "in" / "things"
    folder.mkdir(parents=True)
    for name in ("Duck.glb", "BoxTextured.glb"):
        (folder / name).write_bytes((shared_data / "meshes" / "trimesh" / name).read_bytes())
    texture_bombs(folder, bomb_png(30000))
    gltf = Gltf()
    gltf.json["accessors"].append({"componentType": FLOAT, "type": "VEC3", "count": 300_000_000})
    gltf.node(mesh=gltf.mesh({"attributes": {"POSITION": 0}}))
    gltf.write(folder / "zeros.glb")
    with PeakMemory() as memory:
        summary = run(small_config(tmp_path / "out", source="local", path=str(tmp_path / "in"), limit=None))
    failed = dict(summary.failures)
    assert summary.ok == 4 and set(failed) == {"things/zeros.glb"}, failed
    assert "above the limit" in failed["things/zeros.glb"]
    rows = [json.loads(line) for line in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    warned = {r["id"] for r in rows if any(PIXEL_LIMIT in w for w in r.get("warnings", []))}
    assert warned == {"things/box.obj", "things/cube.glb"}
    print(f"whole run: {memory.baseline / 1e9:.2f} GB before, peak {memory.peak / 1e9:.2f} GB")
    assert memory.peak - memory.baseline < 3.0e9, (memory.baseline, memory.peak)  # a bomb alone decodes to 3.6 GB


def write_obj(path, vertices, faces) -> str:
    """An OBJ with every coordinate written exactly (``repr``: 1e-30 stays 1e-30)."""
    path.write_text("".join(f"v {x!r} {y!r} {z!r}\n" for x, y, z in np.asarray(vertices, float))
                    + "".join(f"f {a + 1} {b + 1} {c + 1}\n" for a, b, c in faces))
    return str(path)


def test_any_scale_normalizes_and_degenerate_meshes_say_why(tmp_path, pyrender_no_aa):
    """Size alone never fails an object (1e-30 and 1e30 give the unit box's voxels); a shape below float64
    precision, or one without surface area, fails with that cause."""
    box = trimesh.creation.box()
    config = RunConfig(views=2, size=127, points=512)

    def outcome(name, vertices, faces=box.faces) -> dict | str:
        record = ObjectRecord(object_id=name, category="x", source="local",
                              uri=write_obj(tmp_path / f"{name}.obj", vertices, faces))
        try:
            members = make_sample(record, "train", pyrender_no_aa, BackgroundPool(None), config)
        except Exception as error:  # noqa: BLE001 (the reason is what is checked)
            return str(error)
        return members[fmt.VOXELS]

    unit = outcome("unit", box.vertices)
    assert outcome("tiny", box.vertices * 1e-30) == unit and outcome("huge", box.vertices * 1e30) == unit
    assert "below float64 precision" in outcome("noise", box.vertices * 1e-14 + 1.0)
    line = np.array([[0.0, 0, 0], [1, 1, 1], [2, 2, 2], [3, 3, 3]])
    assert "no surface area" in outcome("line", line, [[0, 1, 2], [1, 2, 3]])
    assert "all vertices coincide" in outcome("point", np.ones((3, 3)), [[0, 1, 2]])


def test_node_trees_too_deep_or_cyclic_are_named(tmp_path):
    from test_faithful_geometry import Gltf

    from voxforge.meshio import MeshFileError, load_mesh_file

    chain = Gltf()
    parent = chain.node(mesh=chain.cube())
    for _ in range(10_000):
        child = chain.node(root=False, translation=[0.001, 0.0, 0.0])
        chain.json["nodes"][parent]["children"] = [child]
        parent = child
    with pytest.raises(MeshFileError, match="the node tree is more than 256 levels deep"):
        load_mesh_file(chain.write(tmp_path / "chain.glb"))
    loop = Gltf()
    first = loop.node(mesh=loop.cube())
    second = loop.node(root=False, children=[first])
    loop.json["nodes"][first]["children"] = [second]
    with pytest.raises(MeshFileError, match=r"cyclic \(node 0 is its own ancestor\)"):
        load_mesh_file(loop.write(tmp_path / "loop.glb"))


def test_the_alignment_checks_mask_tolerance_is_scipys_dilation():
    from scipy import ndimage

    from voxforge.pipeline.alignment import _dilated

    mask = np.random.default_rng(3).random((40, 57)) > 0.85
    assert np.array_equal(_dilated(mask), ndimage.binary_dilation(mask))
    assert np.array_equal(_dilated(_dilated(mask)), ndimage.binary_dilation(mask, iterations=2))


@pytest.mark.blender
@pytest.mark.parametrize("library", ["../../outside/blue.mtl", "/dev/zero"])
def test_blender_never_reads_a_material_library_outside_the_object(tmp_path, library):
    """An OBJ naming a material library outside its folder (or a device that never ends) is not imported
    by Blender: the pipeline's reading, which refuses the reference too, is rendered (no blue), with a
    warning."""
    from voxforge.renderers import get_renderer

    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "blue.mtl").write_text("newmtl red\nKd 0.0 0.0 1.0\n")
    folder = tmp_path / "object" / "models"
    folder.mkdir(parents=True)
    (folder / "box.obj").write_text(BOX_OBJ.replace("mtllib box.mtl", f"mtllib {library}"))
    loaded = load_stage(ObjectRecord(object_id="box", category="x", source="local", uri=str(folder / "box.obj")))
    renderer = get_renderer("blender-workbench")(64)
    cameras = sample_cameras(2, 64, np.random.default_rng(0), CameraRanges(), object_radius=0.9)
    try:
        result = renderer.render(loaded["scene"], cameras, sample_lighting(2, np.random.default_rng(0)))
    finally:
        renderer.close()
    assert any("outside the object's folder" in w for w in result.warnings), result.warnings
    red, green, blue = result.color[result.alpha == 255].astype(float).mean(axis=0)
    assert blue < red + 10 and blue < green + 10  # grey, not the outside file's blue


LINKED_BLEND = """
import sys
import bpy
library, main = sys.argv[1], sys.argv[2]
bpy.ops.wm.read_factory_settings(use_empty=True)
bpy.ops.mesh.primitive_cube_add(size=1.0)
bpy.context.active_object.name = "Linked"
bpy.ops.wm.save_as_mainfile(filepath=library)
bpy.ops.wm.read_factory_settings(use_empty=True)
bpy.ops.mesh.primitive_uv_sphere_add(radius=0.5)
with bpy.data.libraries.load(library, link=True, relative=True) as (source, target):
    target.objects = ["Linked"]
for obj in target.objects:
    bpy.context.scene.collection.objects.link(obj)
bpy.ops.wm.save_as_mainfile(filepath=main, relative_remap=True)
"""


@pytest.mark.blender
@pytest.mark.parametrize("library_place", ["outside/lib.blend", "object/lib.blend"])
def test_a_blend_file_linking_data_from_outside_its_folder_is_refused(tmp_path, library_place):
    """A .blend whose objects link a cube from another .blend: read with the linked cube when that file
    is in the object's folder, refused (and nothing of it rendered) when it is elsewhere on the machine."""
    import subprocess
    import sys

    from voxforge.renderers.blender.importers import BlenderImportError

    (tmp_path / "outside").mkdir()
    models = tmp_path / "object" / "models"
    models.mkdir(parents=True)
    subprocess.run([sys.executable, "-c", LINKED_BLEND, str(tmp_path / library_place), str(models / "main.blend")],
                   check=True, capture_output=True, timeout=300)
    record = ObjectRecord(object_id="main", category="x", source="local", uri=str(models / "main.blend"))
    if library_place.startswith("outside"):
        with pytest.raises(BlenderImportError, match=r"would make Blender read files outside the object's folder: .*lib\.blend \(library\)"):
            load_stage(record)
    else:
        loaded = load_stage(record)
        assert len(loaded["faces"]) == 960 + 12  # the sphere and the linked cube
