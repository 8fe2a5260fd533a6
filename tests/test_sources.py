"""Sources: the procedural generator and local folders (ShapeNet layouts, awkward real files)."""

from __future__ import annotations

import numpy as np
import pytest

from voxforge.pipeline.meshes import MeshError, flatten, validate_and_normalize
from voxforge.pipeline.sources import SourceError, UnknownCategoryError, create_source, load_record
from voxforge.pipeline.sources.procedural import GENERATORS, generate


def test_procedural_objects_are_deterministic_and_varied():
    a = flatten(generate("chair", 3, seed=0))[0]
    b = flatten(generate("chair", 3, seed=0))[0]
    c = flatten(generate("chair", 4, seed=0))[0]
    assert np.array_equal(a, b)
    assert a.shape != c.shape or not np.allclose(a, c)
    assert set(GENERATORS) >= {"chair", "table", "car", "airplane", "lamp", "mug"}


@pytest.mark.parametrize("category", sorted(GENERATORS))
def test_every_procedural_category_normalizes_to_the_object_frame(category):
    scene, normalization = validate_and_normalize(generate(category, 0))
    vertices, faces = flatten(scene)
    used = vertices[np.unique(faces)]
    low, high = used.min(axis=0), used.max(axis=0)
    assert np.allclose((low + high) / 2, 0, atol=1e-9)
    assert np.isclose(np.linalg.norm(high - low), 1.0)
    assert normalization.scale > 0 and len(faces) >= 60


def test_procedural_selection_is_balanced_and_limited():
    source = create_source("procedural", seed=0)
    records = source.select(["chair", "mug"], limit=5)
    assert [r.category for r in records] == ["chair", "mug", "chair", "mug", "chair"]
    assert len({r.object_id for r in records}) == 5
    assert isinstance(load_record(records[0]).geometry, dict)


def test_unknown_category_fails_with_suggestions():
    with pytest.raises(UnknownCategoryError, match="did you mean chair"):
        create_source("procedural").select(["chiar"], None)


def test_unknown_source_and_missing_path():
    with pytest.raises(SourceError, match="unknown source"):
        create_source("nope")
    with pytest.raises(SourceError, match="--path"):
        create_source("local")


def test_local_recognizes_shapenet_v2_layout(shared_data):
    source = create_source("local", path=str(shared_data / "shapenetcore_v2"))
    assert {"airplane", "chair", "bench", "bottle"} <= set(source.categories())
    chairs = source.select(["chair"], None)
    assert len(chairs) == 2 and all(r.synset_id == "03001627" for r in chairs)
    assert all(r.uri.endswith("model_normalized.obj") for r in chairs)
    assert {r.object_id for r in chairs} == {f"03001627/{r.model_id}" for r in chairs}
    # synset ids and the 3D-R2N2/Pix2Vox names work too
    assert source.select(["03001627"], None) == chairs
    assert source.select(["aeroplane"], None) == source.select(["airplane"], None)


def test_local_folder_categories_and_mapping_file(shared_data, tmp_path):
    source = create_source("local", path=str(shared_data / "meshes"))
    assert {"trimesh", "kaolin", "modelnet"} <= set(source.categories())
    ids = {r.object_id for r in source.select(None, None)}
    assert "trimesh/Duck.glb" in ids and "kaolin/armchair.obj" in ids and "kaolin/armchair.gltf" in ids
    mapping = tmp_path / "map.csv"
    mapping.write_text("trimesh/Duck.glb,duck\nmodelnet/ModelNet10/bathtub,bathtub\n")
    mapped = create_source("local", path=str(shared_data / "meshes"), category_map=str(mapping))
    assert [r.object_id for r in mapped.select(["duck"], None)] == ["trimesh/Duck.glb"]
    assert len(mapped.select(["bathtub"], None)) == 2


@pytest.mark.parametrize("name", ["chair_model.obj", "polygonfaces.obj", "negative_indices.obj",
                                  "simple_pole.glb", "boolean.glb", "soup.stl", "comments.off", "bunny.ply"])
def test_awkward_real_files_load_and_normalize(shared_data, name):
    """Missing MTL, n-gons, negative indices, many-node GLB scenes, STL soup, OFF comments."""
    from voxforge.pipeline.sources.local import LocalSource

    source = LocalSource(shared_data / "meshes" / "trimesh")
    record = next(r for r in source.select(None, None) if r.object_id == name)
    scene, _ = validate_and_normalize(load_record(record))
    vertices, faces = flatten(scene)
    assert len(faces) > 0 and np.isfinite(vertices).all()


def test_empty_glb_is_a_clear_error(shared_data):
    from voxforge.pipeline.sources.local import LocalSource

    record = next(r for r in LocalSource(shared_data / "meshes" / "trimesh").select(None, None)
                  if r.object_id == "empty_nodes.glb")
    with pytest.raises(MeshError, match="no triangles"):
        validate_and_normalize(load_record(record))
