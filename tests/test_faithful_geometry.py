"""The mesh that is rendered, voxelized and sampled is the mesh the file describes.

The five inputs in ../shared/data/cases (their README says what each really holds) with the right
values asserted, and small glTF files written here for each feature of the specification the reader
decodes (quantized, normalized and sparse data, Draco, meshopt, texture transforms, scenes, node
transforms, instancing, morph targets), each with its expected geometry spelled out.
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import trimesh

from voxforge.meshio import MeshFileError, import_bytes_of, load_mesh_file, warnings_of
from voxforge.meshio.polygons import faces_of
from voxforge.pipeline.config import RunConfig
from voxforge.pipeline.sources import ObjectRecord
from voxforge.pipeline.stages import SampleError, geometry_stage, load_stage, make_sample

FLOAT, UINT16, UINT32, INT16, UINT8 = 5126, 5123, 5125, 5122, 5121
CUBE = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)], np.float32)
CUBE_FACES = np.array(trimesh.creation.box().faces, np.uint32)  # same corner order as CUBE


def triangles(scene: trimesh.Scene) -> np.ndarray:
    """(F, 3, 3) triangles of the scene in file coordinates (node transforms applied)."""
    parts = [m.triangles for m in scene.dump() if isinstance(m, trimesh.Trimesh)]
    return np.concatenate(parts) if parts else np.zeros((0, 3, 3))


def boxes(scene: trimesh.Scene) -> list[tuple[list, list]]:
    """Each placed mesh's bounding box (min, max), sorted (the order of a scene's dump is not fixed)."""
    return sorted((m.vertices.min(axis=0).round(4).tolist(), m.vertices.max(axis=0).round(4).tolist())
                  for m in scene.dump() if isinstance(m, trimesh.Trimesh))


class Gltf:
    """A glTF 2.0 file under construction: one binary buffer, accessors appended."""

    def __init__(self) -> None:
        self.binary = bytearray()
        self.json: dict = {"asset": {"version": "2.0"}, "buffers": [], "bufferViews": [], "accessors": [],
                           "meshes": [], "nodes": [], "scenes": [{"nodes": []}], "scene": 0}

    def view(self, data: bytes, **extra) -> int:
        self.binary += b"\0" * (-len(self.binary) % 4)
        self.json["bufferViews"].append({"buffer": 0, "byteOffset": len(self.binary), "byteLength": len(data), **extra})
        self.binary += data
        return len(self.json["bufferViews"]) - 1

    def accessor(self, values: np.ndarray | None, component: int, kind: str, count: int | None = None, **extra) -> int:
        spec = {"componentType": component, "type": kind, **extra}
        if values is not None:
            spec["bufferView"] = self.view(np.ascontiguousarray(values).tobytes())
            spec["count"] = len(values)
        else:
            spec["count"] = count
        self.json["accessors"].append(spec)
        return len(self.json["accessors"]) - 1

    def mesh(self, primitive: dict, **extra) -> int:
        self.json["meshes"].append({"primitives": [primitive], **extra})
        return len(self.json["meshes"]) - 1

    def node(self, root: bool = True, **spec) -> int:
        self.json["nodes"].append(spec)
        index = len(self.json["nodes"]) - 1
        if root:
            self.json["scenes"][0]["nodes"].append(index)
        return index

    def cube(self, positions: np.ndarray | None = None) -> int:
        """A mesh of the unit cube (float positions and uint32 indices)."""
        position = self.accessor(CUBE if positions is None else positions, FLOAT, "VEC3",
                                 min=[-0.5] * 3, max=[0.5] * 3)
        return self.mesh({"attributes": {"POSITION": position}, "indices": self.accessor(CUBE_FACES.reshape(-1), UINT32, "SCALAR")})

    def write(self, path) -> str:
        self.json["buffers"] = [{"byteLength": len(self.binary)}]
        text = json.dumps(self.json).encode()
        text += b" " * (-len(text) % 4)
        binary = bytes(self.binary) + b"\0" * (-len(self.binary) % 4)
        path.write_bytes(struct.pack("<III", 0x46546C67, 2, 28 + len(text) + len(binary))
                         + struct.pack("<II", len(text), 0x4E4F534A) + text
                         + struct.pack("<II", len(binary), 0x004E4942) + binary)
        return str(path)


# -- the handed cases ---------------------------------------------------------------------------------

@pytest.fixture
def cases(shared_data):
    return shared_data / "cases"


def test_draco_cube_has_its_eight_corners(cases):
    found = triangles(load_mesh_file(cases / "draco-glb/box/Box_Draco.glb"))
    assert len(found) == 12
    corners = np.unique(found.reshape(-1, 3).round(6), axis=0)
    assert corners.shape == (8, 3) and np.allclose(np.abs(corners), 0.5)


def test_sparse_accessor_lifts_the_three_spikes(cases):
    found = triangles(load_mesh_file(cases / "sparse-accessor/sparse/SimpleSparseAccessor.gltf")).reshape(-1, 3)
    extent = found.max(axis=0) - found.min(axis=0)
    assert extent[0] == pytest.approx(6.0) and extent[1] == pytest.approx(4.0)
    assert sorted({round(y, 6) for y in found[:, 1]}) == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_concave_ngon_obj_keeps_its_notch_in_voxels_and_points(cases):
    record = ObjectRecord(object_id="ushape", category="x", source="local",
                          uri=str(cases / "concave-ngon-obj/ushape/ushape.obj"))
    loaded = load_stage(record)
    area = trimesh.Trimesh(loaded["vertices"], loaded["faces"]).area / loaded["normalization"].scale ** 2
    assert area == pytest.approx(30.0)
    geometry = geometry_stage(loaded, RunConfig(resolution=32, points=4096), "ushape")
    normalization = loaded["normalization"]

    def in_notch(source_points: np.ndarray, margin: float) -> np.ndarray:
        x, z = source_points[:, 0], source_points[:, 2]
        return (x > 1 + margin) & (x < 2 - margin) & (z > 1 + margin) & (z < 3 - margin)

    points = geometry["points"] / normalization.scale + normalization.center
    assert not in_notch(points, 1e-6).any()
    grid = geometry["voxels"]
    centres = (np.argwhere(grid.occupancy) + 0.5) * grid.voxel_size + grid.origin
    centres = centres / normalization.scale + normalization.center
    voxel = grid.voxel_size / normalization.scale
    assert grid.occupancy.sum() > 0 and not in_notch(centres, voxel).any()


def test_off_with_hexagons_and_quads_is_the_l_shaped_prism(cases):
    scene = load_mesh_file(cases / "off-mixed-polygons/geomview/lshape_ngons.off")
    mesh = trimesh.Trimesh(*trimesh.util.append_faces([m.vertices for m in scene.dump()], [m.faces for m in scene.dump()]))
    assert len(mesh.faces) == 2 * 4 + 6 * 2  # two hexagons, six quads
    assert mesh.area == pytest.approx(40.0)  # two L caps of 6, walls of perimeter 14 x height 2
    mesh.merge_vertices()
    assert mesh.is_watertight and mesh.volume == pytest.approx(12.0)


def test_missing_texture_is_a_warning_and_the_base_colour(cases, pyrender_no_aa):
    record = ObjectRecord(object_id="fuze", category="x", source="local", uri=str(cases / "missing-texture/fuze/fuze.obj"))
    config = RunConfig(views=2, size=127, points=256, resolution=16)
    from voxforge.renderers.backgrounds import BackgroundPool

    members = make_sample(record, "train", pyrender_no_aa, BackgroundPool(None), config)
    meta = json.loads(members["json"])
    assert meta["warnings"] == ["texture image 'fuze uv.jpg' is missing: rendered with the material's base colour"]


# -- failures name their cause ------------------------------------------------------------------------

@pytest.mark.parametrize("text,reason", [
    ("OFF\n4 1 0\n0 0 0\n1 0 0\n1 1 0\n0 1 0\n4 0 1 2\n", "OFF face 0 has 4 corners but lists 3 vertex numbers"),
    ("OFF\n3 1 0\n0 0 0\n1 0 0\n1 1 0\n3 0 1 7\n", "OFF face 0 refers to vertex 7; the file has 3 vertices"),
    ("OFF\n3 2 0\n0 0 0\n1 0 0\n1 1 0\n3 0 1 2\n", "OFF file declares 3 vertices and 2 faces but has 4 lines"),
    ("OFF\n3 1 0\n0 0 0\n1 0 x\n1 1 0\n3 0 1 2\n", "an OFF vertex line is not three numbers"),
    ("COFF\n3 1 0\n0 0 0 1 0 0 1\n1 0 0 1 0 0 1\n1 1 0 1 0 0 1\n3 0 1 2 255 0 0\n", None),
])
def test_off_reasons(tmp_path, text, reason):
    path = tmp_path / "m.off"
    path.write_text(text)
    if reason is None:
        assert len(triangles(load_mesh_file(path))) == 1
        return
    with pytest.raises(MeshFileError, match=reason):
        load_mesh_file(path)


def test_obj_reasons_and_negative_indices(tmp_path):
    path = tmp_path / "m.obj"
    path.write_text("v 0 0 0\nv 2 0 0\nv 2 2 0\nv 1 0.5 0\nf -4 -3 -2 -1\n")  # a concave quad (a dart), relative
    found = triangles(load_mesh_file(path))
    assert trimesh.triangles.area(found).sum() == pytest.approx(2.0 - 1.5 * 0 - 1.0 + 0.5)  # dart: 1.5
    path.write_text("v 0 0 0\nv 2 0 0\nv 2 2 0\nv 1 0.5 0\nf 1 2 3 9\n")
    with pytest.raises(MeshFileError, match="refers to a vertex that does not exist"):
        load_mesh_file(path)


def test_polygons_keep_their_winding_and_fill_only_their_inside():
    # a comb: a 10-gon with two notches, wound counter-clockwise about +z
    outline = np.array([[0, 0], [5, 0], [5, 3], [4, 3], [4, 1], [3, 1], [3, 3], [2, 3], [2, 1], [0, 1]], float)
    vertices = np.c_[outline, np.zeros(len(outline))]
    faces = faces_of([np.arange(len(outline))], vertices)
    mesh = trimesh.Trimesh(vertices, faces, process=False)
    assert mesh.area == pytest.approx(5 * 1 + 1 * 2 + 1 * 2)
    assert (mesh.face_normals[:, 2] > 0.99).all()
    flipped = trimesh.Trimesh(vertices, faces_of([np.arange(len(outline))[::-1].copy()], vertices), process=False)
    assert (flipped.face_normals[:, 2] < -0.99).all()


# -- glTF features, written here ----------------------------------------------------------------------

def test_node_matrix_trs_and_instancing(tmp_path):
    gltf = Gltf()
    cube = gltf.cube()
    gltf.node(mesh=cube, translation=[10, 0, 0])
    gltf.node(mesh=cube, matrix=[2, 0, 0, 0, 0, 2, 0, 0, 0, 0, 2, 0, 0, 5, 0, 1])  # column-major: scale 2, y + 5
    child = gltf.node(root=False, mesh=cube, scale=[1, 1, 3])
    gltf.node(children=[child], rotation=[0, 0, 0.7071068, 0.7071068], translation=[0, 0, -7])  # 90 deg about z
    assert boxes(load_mesh_file(gltf.write(tmp_path / "nodes.glb"))) == sorted([([9.5, -0.5, -0.5], [10.5, 0.5, 0.5]), ([-1.0, 4.0, -1.0], [1.0, 6.0, 1.0]),
                             ([-0.5, -0.5, -8.5], [0.5, 0.5, -5.5])])


def test_quantized_and_normalized_positions(tmp_path):
    gltf = Gltf()
    quantized = (CUBE * 2 * 1000).astype(np.int16)  # +-1000, scaled back by the node (KHR_mesh_quantization)
    position = gltf.accessor(quantized, INT16, "VEC3")
    mesh = gltf.mesh({"attributes": {"POSITION": position}, "indices": gltf.accessor(CUBE_FACES.reshape(-1), UINT32, "SCALAR")})
    gltf.node(mesh=mesh, scale=[0.0005, 0.0005, 0.0005])
    normalized = (CUBE * 2 * 32767).astype(np.int16)  # +-32767 normalized: +-1
    position = gltf.accessor(normalized, INT16, "VEC3", normalized=True)
    mesh = gltf.mesh({"attributes": {"POSITION": position}, "indices": gltf.accessor(CUBE_FACES.reshape(-1), UINT32, "SCALAR")})
    gltf.node(mesh=mesh, translation=[5, 0, 0])
    gltf.json["extensionsUsed"] = gltf.json["extensionsRequired"] = ["KHR_mesh_quantization"]
    assert boxes(load_mesh_file(gltf.write(tmp_path / "quantized.glb"))) == [
        ([-0.5, -0.5, -0.5], [0.5, 0.5, 0.5]), ([4.0, -1.0, -1.0], [6.0, 1.0, 1.0])]


def test_sparse_values_on_an_accessor_without_data_and_morph_weights(tmp_path):
    gltf = Gltf()
    indices = gltf.view(np.array([1, 2], np.uint16).tobytes())
    values = gltf.view(np.array([[1, 0, 0], [0, 1, 0]], np.float32).tobytes())
    position = gltf.accessor(None, FLOAT, "VEC3", count=3, sparse={
        "count": 2, "indices": {"bufferView": indices, "componentType": UINT16}, "values": {"bufferView": values}})
    offset = gltf.accessor(np.array([[0, 0, 2]] * 3, np.float32), FLOAT, "VEC3")
    mesh = gltf.mesh({"attributes": {"POSITION": position}, "targets": [{"POSITION": offset}]}, weights=[0.5])
    gltf.node(mesh=mesh)
    found = triangles(load_mesh_file(gltf.write(tmp_path / "sparse.glb")))
    assert np.allclose(found[0], [[0, 0, 1], [1, 0, 1], [0, 1, 1]])  # zeros, two substituted, lifted by 0.5 x 2
    gltf.node(mesh=mesh, weights=[2.0], translation=[10, 0, 0])  # a node's own weights override the mesh's
    assert boxes(load_mesh_file(gltf.write(tmp_path / "weights.glb"))) == [
        ([0.0, 0.0, 1.0], [1.0, 1.0, 1.0]), ([10.0, 0.0, 4.0], [11.0, 1.0, 4.0])]


def test_draco_and_meshopt_compressed_geometry(tmp_path):
    import DracoPy
    import meshoptimizer

    gltf = Gltf()
    moved = CUBE + np.float32([3, 0, 0])
    draco = gltf.view(DracoPy.encode(moved, CUBE_FACES, quantization_bits=16))
    position, index = gltf.accessor(None, FLOAT, "VEC3", count=8), gltf.accessor(None, UINT32, "SCALAR", count=36)
    mesh = gltf.mesh({"attributes": {"POSITION": position}, "indices": index, "extensions": {
        "KHR_draco_mesh_compression": {"bufferView": draco, "attributes": {"POSITION": 0}}}})
    gltf.node(mesh=mesh)
    # meshopt: positions padded to 16 bytes a vertex, indices as a triangle stream
    padded = np.c_[CUBE - np.float32([3, 0, 0]), np.zeros(8, np.float32)].astype(np.float32)
    vertex_data = bytes(meshoptimizer.encode_vertex_buffer(padded, 8, 16))
    index_data = bytes(meshoptimizer.encode_index_buffer(CUBE_FACES.reshape(-1), 36, 4))
    fallback = {"buffer": 0, "byteLength": 0}
    views = []
    for data, count, stride, mode in ((vertex_data, 8, 16, "ATTRIBUTES"), (index_data, 36, 4, "TRIANGLES")):
        start = len(gltf.binary) + (-len(gltf.binary) % 4)
        gltf.view(data)
        gltf.json["bufferViews"][-1] = {**fallback, "byteLength": count * stride, "byteStride": stride if mode == "ATTRIBUTES" else None,
                                        "extensions": {"EXT_meshopt_compression": {
                                            "buffer": 0, "byteOffset": start, "byteLength": len(data), "byteStride": stride,
                                            "count": count, "mode": mode}}}
        if mode != "ATTRIBUTES":
            del gltf.json["bufferViews"][-1]["byteStride"]
        views.append(len(gltf.json["bufferViews"]) - 1)
    gltf.json["accessors"].append({"bufferView": views[0], "componentType": FLOAT, "type": "VEC3", "count": 8})
    gltf.json["accessors"].append({"bufferView": views[1], "componentType": UINT32, "type": "SCALAR", "count": 36})
    count = len(gltf.json["accessors"])
    mesh = gltf.mesh({"attributes": {"POSITION": count - 2}, "indices": count - 1})
    gltf.node(mesh=mesh)
    gltf.json["extensionsUsed"] = gltf.json["extensionsRequired"] = ["KHR_draco_mesh_compression", "EXT_meshopt_compression"]
    scene = load_mesh_file(gltf.write(tmp_path / "compressed.glb"))
    assert boxes(scene) == [([-3.5, -0.5, -0.5], [-2.5, 0.5, 0.5]), ([2.5, -0.5, -0.5], [3.5, 0.5, 0.5])]
    found = triangles(scene)
    assert len(found) == 24 and trimesh.triangles.area(found).sum() == pytest.approx(12.0, rel=1e-3)


def test_texture_transform_default_scene_and_gpu_instancing(tmp_path):
    from PIL import Image

    gltf = Gltf()
    image = tmp_path / "red.png"
    Image.new("RGB", (4, 4), (255, 0, 0)).save(image)
    uv = np.array([[0, 0], [1, 0], [0, 1]], np.float32)
    quantized_uv = (uv * 255).astype(np.uint8)
    position = gltf.accessor(np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], np.float32), FLOAT, "VEC3")
    coordinates = gltf.accessor(quantized_uv, UINT8, "VEC2", normalized=True)
    gltf.json.update(images=[{"uri": "red.png"}], textures=[{"source": 0}], materials=[{"pbrMetallicRoughness": {
        "baseColorTexture": {"index": 0, "extensions": {"KHR_texture_transform": {
            "offset": [0.5, 0.25], "scale": [0.5, 0.5], "rotation": 0.0}}}}}])
    mesh = gltf.mesh({"attributes": {"POSITION": position, "TEXCOORD_0": coordinates}, "material": 0})
    translations = gltf.accessor(np.array([[0, 0, 0], [0, 0, 4], [0, 0, 8]], np.float32), FLOAT, "VEC3")
    gltf.node(root=False, mesh=mesh, extensions={"EXT_mesh_gpu_instancing": {"attributes": {"TRANSLATION": translations}}})
    gltf.json["scenes"] = [{"nodes": []}, {"nodes": [0]}]
    gltf.json["scene"] = 1
    scene = load_mesh_file(gltf.write(tmp_path / "instanced.glb"))
    found = triangles(scene)
    assert sorted(found[:, 0, 2].tolist()) == [0, 4, 8]
    mesh = next(m for m in scene.dump() if isinstance(m, trimesh.Trimesh))
    transformed = uv * 0.5 + [0.5, 0.25]  # glTF's v runs down the image, trimesh's up
    assert np.allclose(mesh.visual.uv, np.c_[transformed[:, 0], 1 - transformed[:, 1]])
    assert warnings_of(scene) == []
    assert import_bytes_of(scene)[:4] == b"glTF"  # what Blender imports: the same plain file, image inside


def test_what_cannot_be_honoured_fails_or_warns(tmp_path, monkeypatch):
    gltf = Gltf()
    gltf.node(mesh=gltf.cube())
    gltf.json["extensionsRequired"] = ["EXT_some_future_thing"]
    with pytest.raises(MeshFileError, match="requires glTF extension.*EXT_some_future_thing"):
        load_mesh_file(gltf.write(tmp_path / "future.glb"))
    gltf.json["extensionsRequired"] = []
    gltf.json["accessors"].append({"componentType": FLOAT, "type": "VEC3", "count": 300_000_000})  # 3.6 GB of zeros
    gltf.mesh({"attributes": {"POSITION": len(gltf.json["accessors"]) - 1}})
    gltf.node(mesh=1)
    with pytest.raises(MeshFileError, match="declares 100,000,012 triangles, above the limit of 10,000,000"):
        load_mesh_file(gltf.write(tmp_path / "bomb.glb"))  # refused from the JSON: nothing read yet
    from voxforge.meshio import Limits

    monkeypatch.setattr(Limits, "max_triangles", 0)  # no triangle limit: the decoded-bytes bound still holds
    with pytest.raises(MeshFileError, match="declared counts far beyond"):
        load_mesh_file(tmp_path / "bomb.glb")
    gltf = Gltf()
    gltf.node(mesh=gltf.cube())
    gltf.json.update(images=[{"uri": "gone.png"}, {"uri": "../outside.png"}, {"uri": "k.ktx2", "mimeType": "image/ktx2"}],
                     textures=[{"source": 0}, {"source": 1}, {"source": 2}],
                     materials=[{"pbrMetallicRoughness": {"baseColorTexture": {"index": 0}, "baseColorFactor": [0, 1, 0, 1]}}])
    gltf.json["meshes"][0]["primitives"][0]["material"] = 0
    (tmp_path / "k.ktx2").write_bytes(b"\xabKTX 20\xbb\r\n\x1a\n" + b"\0" * 64)
    scene = load_mesh_file(gltf.write(tmp_path / "textures.glb"))
    said = warnings_of(scene)
    assert "texture image 'gone.png' is missing: rendered with the material's base colour" in said
    assert any("points outside the file's folder" in w for w in said)
    assert any("k.ktx2' cannot be decoded here (image/ktx2)" in w for w in said)
    mesh = next(m for m in scene.dump() if isinstance(m, trimesh.Trimesh))
    assert np.allclose(mesh.visual.material.baseColorFactor[:3], [0, 255, 0])


@pytest.mark.parametrize("suffix", ["obj", "off", "ply", "stl"])
def test_declared_triangle_counts_are_bounded_before_reading(tmp_path, monkeypatch, suffix):
    from voxforge.meshio import Limits

    mesh = trimesh.creation.icosphere(subdivisions=2)  # 320 triangles
    path = tmp_path / f"sphere.{suffix}"
    mesh.export(path)
    assert len(triangles(load_mesh_file(path))) == 320
    monkeypatch.setattr(Limits, "max_triangles", 319)
    with pytest.raises(MeshFileError, match=f"the {suffix.upper()} file declares 320 triangles, above the limit of 319"):
        load_mesh_file(path)


def test_a_failed_read_is_a_sample_error_naming_the_cause(tmp_path, pyrender_no_aa):
    from voxforge.renderers.backgrounds import BackgroundPool

    path = tmp_path / "bad.off"
    path.write_text("OFF\n3 1 0\n0 0 0\n1 0 0\n1 1 0\n6 0 1 2\n")
    record = ObjectRecord(object_id="bad", category="x", source="local", uri=str(path))
    with pytest.raises(SampleError, match="load: MeshFileError: OFF face 0 has 6 corners but lists 3"):
        make_sample(record, "train", pyrender_no_aa, BackgroundPool(None), RunConfig(views=1, size=127))


# -- end to end: the handed cases through a pipeline run, and through Blender ---------------------------

@pytest.mark.slow
def test_the_cases_run_right_and_warnings_reach_the_manifest_and_inspect(tmp_path, ray_local, cases):
    from conftest import projection_hits, small_config

    from voxforge.loaders import open_dataset
    from voxforge.pipeline.inspection import summarize
    from voxforge.pipeline.run import run

    summary = run(small_config(tmp_path, source="local", path=str(cases), limit=None, views=3, size=64, points=1024))
    assert summary.ok == 5 and summary.failed == 0, summary.failures
    rows = {r["id"]: r for r in map(json.loads, (tmp_path / "manifest.jsonl").read_text().splitlines())}
    assert rows["missing-texture/fuze/fuze.obj"]["warnings"] == [
        "texture image 'fuze uv.jpg' is missing: rendered with the material's base colour"]
    assert all(not r["warnings"] for key, r in rows.items() if "fuze" not in key)
    for sample in open_dataset(tmp_path):
        for view in range(3):  # images, points (and so voxels) show one geometry
            hits = projection_hits(sample["points"], sample["K"][view], sample["world_to_camera"][view],
                                   sample["masks"][view])
            assert hits.mean() >= 0.99
    said = summarize(tmp_path)
    assert "with warnings: 1" in said and "missing-texture/fuze/fuze.obj: texture image 'fuze uv.jpg'" in said


@pytest.mark.blender
@pytest.mark.parametrize("name", ["draco-glb/box/Box_Draco.glb", "sparse-accessor/sparse/SimpleSparseAccessor.gltf",
                                  "concave-ngon-obj/ushape/ushape.obj", "missing-texture/fuze/fuze.obj"])
def test_blender_renders_the_same_object_without_placeholder_colours(cases, name, pyrender_no_aa):
    import importlib.util

    if importlib.util.find_spec("bpy") is None:
        pytest.skip("bpy (the blender extra) is not installed")
    from voxforge.renderers import get_renderer, sample_lighting
    from voxforge.renderers.cameras import CameraRanges, sample_cameras

    loaded = load_stage(ObjectRecord(object_id=name, category="x", source="local", uri=str(cases / name)))
    radius = float(np.linalg.norm(loaded["vertices"], axis=1).max())
    cameras = sample_cameras(3, 127, np.random.default_rng(1), CameraRanges(), object_radius=radius)
    lights = sample_lighting(3, np.random.default_rng(1))
    blender = get_renderer("blender-workbench")(127, supersample=1)
    try:
        result = blender.render(loaded["scene"], cameras, lights)
    finally:
        blender.close()
    reference = pyrender_no_aa.render(loaded["scene"], cameras, lights)
    assert result.warnings == []  # Blender read what the pipeline read
    for view in range(3):
        mask, expected = result.alpha[view] >= 128, reference.alpha[view] >= 128
        assert (mask & expected).sum() / (mask | expected).sum() >= 0.95
        colour = result.color[view][mask].astype(int)
        magenta = (colour[:, 0] > 200) & (colour[:, 1] < 80) & (colour[:, 2] > 200)
        assert magenta.mean() < 0.01


def test_names_in_other_encodings_and_letter_cases_are_found(tmp_path):
    import os

    from PIL import Image

    folder = os.fsencode(tmp_path)
    Image.new("RGB", (4, 4), (0, 0, 255)).save(os.fsdecode(folder + b"/t\xe9xture.png"))  # latin-1 bytes on disk
    Image.new("RGB", (4, 4), (0, 255, 0)).save(tmp_path / "GREEN.PNG")
    (tmp_path / "nested").mkdir()
    with open(folder + b"/caf\xe9.mtl", "wb") as handle:
        handle.write(b"newmtl blue\nKd 1 1 1\nmap_Kd t\xe9xture.png\nnewmtl green\nKd 1 1 1\nmap_Kd -s 1 1 1 c:\\maps\\green.png\n")
    obj = folder + b"/caf\xe9.obj"
    with open(obj, "wb") as handle:  # a cp1252 file naming its companions in cp1252
        handle.write(b"mtllib caf\xe9.mtl\nv 0 0 0\nv 1 0 0\nv 0 1 0\nv 5 0 0\nv 6 0 0\nv 5 1 0\nvt 0 0\nvt 1 0\nvt 0 1\n"
                     b"usemtl blue\nf 1/1 2/2 3/3\nusemtl green\nf 4/1 5/2 6/3\n")
    scene = load_mesh_file(os.fsdecode(obj))
    assert warnings_of(scene) == []
    colours = sorted(m.visual.material.image.convert("RGB").getpixel((0, 0)) for m in scene.dump())
    assert colours == [(0, 0, 255), (0, 255, 0)]
    with open(obj, "wb") as handle:
        handle.write(b"mtllib ../../elsewhere.mtl\nv 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    assert warnings_of(load_mesh_file(os.fsdecode(obj))) == [
        "material library '../../elsewhere.mtl' is missing: rendered without its materials"]


@pytest.mark.parametrize("binary", [False, True])
def test_ply_polygons_are_ear_clipped_and_keep_their_colours(tmp_path, binary):
    ushape = [[0, 0, 0], [3, 0, 0], [3, 0, 3], [2, 0, 3], [2, 0, 1], [1, 0, 1], [1, 0, 3], [0, 0, 3]]
    faces = [(list(range(8)), (255, 0, 0)), ([0, 1, 2], (0, 255, 0)), ([0, 1, 2, 3], (0, 0, 255))]
    header = ["ply", f"format {'binary_little_endian' if binary else 'ascii'} 1.0", "element vertex 8",
              "property float x", "property float y", "property float z", "element face 3",
              "property list uchar int vertex_indices", "property uchar red", "property uchar green",
              "property uchar blue", "end_header"]
    path = tmp_path / "u.ply"
    if binary:
        body = b"".join(struct.pack("<3f", *v) for v in ushape)
        body += b"".join(struct.pack(f"<B{len(f)}i3B", len(f), *f, *c) for f, c in faces)
        path.write_bytes(("\n".join(header) + "\n").encode() + body)
    else:
        lines = [" ".join(map(str, v)) for v in ushape] + [" ".join(map(str, [len(f), *f, *c])) for f, c in faces]
        path.write_text("\n".join(header + lines) + "\n")
    (mesh,) = load_mesh_file(path).dump()
    assert len(mesh.faces) == 6 + 1 + 2
    assert mesh.area == pytest.approx(7.0 + 4.5 + 6.0)  # the U cap (its notch open), the triangle, the quad
    colours = [tuple(c[:3]) for c in mesh.visual.face_colors.tolist()]
    assert colours == [(255, 0, 0)] * 6 + [(0, 255, 0)] + [(0, 0, 255)] * 2
    if binary:  # cut short: the reason, not trimesh's "unexpected length"
        path.write_bytes(path.read_bytes()[:-5])
        with pytest.raises(MeshFileError, match="binary PLY cut short"):
            load_mesh_file(path)


def test_a_file_named_in_latin1_becomes_a_sample(tmp_path, pyrender_no_aa):
    import os

    from voxforge.pipeline.sources.local import LocalSource
    from voxforge.renderers.backgrounds import BackgroundPool

    folder = os.fsencode(tmp_path) + b"/caf\xe9s"
    os.mkdir(folder)
    with open(folder + b"/ma\xefs.obj", "wb") as handle:
        handle.write(b"v 0 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\nf 1 3 2\nf 1 2 4\nf 1 4 3\nf 2 3 4\n")
    (record,) = LocalSource(tmp_path).select(None, None)
    assert record.object_id == "caf%E9s/ma%EFs.obj" and record.category == "caf%E9s"
    members = make_sample(record, "train", pyrender_no_aa, BackgroundPool(None), RunConfig(views=1, size=127))
    meta = json.loads(members["json"])
    assert meta["id"] == "caf%E9s/ma%EFs.obj" and meta["source_uri"] == "ma%EFs.obj"
    assert meta["voxels"]["occupied"] > 0
