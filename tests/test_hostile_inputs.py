"""Inputs that used to enter the dataset wrong: far-from-origin meshes, and samples whose images and
geometry disagree."""

from __future__ import annotations

import io
import json

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
