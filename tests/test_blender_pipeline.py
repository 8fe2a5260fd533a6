"""``pipeline run ... --renderer blender`` end to end through Ray: procedural objects with workers
recycled between objects, a local folder of real meshes (textures, FBX, .blend), and Blender failures,
crashes and hangs recorded with Blender's own words while the run goes on."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from conftest import projection_hits, small_config
from test_blender_renderer import HAVE_BPY, MAKE_FILES

from voxforge.loaders import open_dataset
from voxforge.pipeline.run import run

pytestmark = [pytest.mark.slow, pytest.mark.blender,
              pytest.mark.skipif(not HAVE_BPY, reason="bpy (the blender extra) is not installed")]


def assert_points_on_masks(dataset) -> int:
    samples = 0
    for sample in open_dataset(dataset):
        samples += 1
        for view in range(len(sample["images"])):
            hits = projection_hits(sample["points"], sample["K"][view], sample["world_to_camera"][view],
                                   sample["masks"][view])
            assert hits.mean() >= 0.99, (sample["id"], view, hits.mean())
    return samples


def test_procedural_with_cycles_and_recycled_workers(tmp_path, ray_local):
    """--renderer blender --limit 4, each worker replaced after every object: nothing lost or failed."""
    config = small_config(tmp_path, renderer="blender", limit=4, views=4, size=64, points=2048,
                          recycle_after=1, max_attempts=1)
    summary = run(config)
    assert summary.ok == 4 and summary.failed == 0
    assert assert_points_on_masks(tmp_path) == 4
    for sample in open_dataset(tmp_path):
        assert sample["meta"]["renderer"] == "blender"
        inside = sample["images"][sample["alphas"] == 255]
        assert inside.std() > 5  # shaded colours, not a flat silhouette
    replaced = (tmp_path / ".voxforge" / "recycled_workers.jsonl").read_text().splitlines()
    assert len(replaced) >= 2 and all("processed 1 objects" in json.loads(line)["reason"] for line in replaced)


def test_local_meshes_blender_files_and_failures(tmp_path, ray_local, shared_data):
    folder = tmp_path / "meshes"  # copies: trimesh refuses files reached through links out of the folder
    shutil.copytree(shared_data / "meshes" / "damaged_helmet_gltf", folder / "helmet")
    shutil.copytree(shared_data / "meshes" / "kaolin" / "textures", folder / "chair" / "textures")
    for name in ("armchair.obj", "armchair.mtl"):
        shutil.copy(shared_data / "meshes" / "kaolin" / name, folder / "chair" / name)
    # OFF has no Blender importer: built from trimesh's triangles
    shutil.copy(shared_data / "meshes/modelnet/ModelNet10/bathtub/train/bathtub_0001.off", folder / "chair")
    (folder / "blender").mkdir()
    (folder / "broken").mkdir()
    made = tmp_path / "made"
    made.mkdir()
    done = subprocess.run([sys.executable, "-c", MAKE_FILES, str(made)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    for marker in made.glob("marker_*"):  # left by the positive control (scripts allowed): start clean
        marker.unlink()
    shutil.copy(made / "shapes.fbx", folder / "blender" / "shapes.fbx")
    shutil.copy(made / "scripted.blend", folder / "blender" / "scripted.blend")
    shutil.copy(made / "scripted.blend", folder / "blender" / "crashes.blend")
    shutil.copy(made / "shapes.fbx", folder / "blender" / "hangs.fbx")
    (folder / "broken" / "garbage.fbx").write_bytes(b"Kaydara FBX Binary  \x00garbage")
    config = small_config(tmp_path / "out", source="local", path=str(folder), limit=None, renderer="blender-workbench",
                          views=3, points=2048, timeout=12, max_attempts=1,
                          fault_injection={"blender/crashes.blend": "crash", "blender/hangs.fbx": "hang"})
    summary = run(config)
    failed = dict(summary.failures)
    assert summary.ok == 5 and set(failed) == {"blender/crashes.blend", "blender/hangs.fbx", "broken/garbage.fbx"}
    assert "died" in failed["blender/crashes.blend"] and "last renderer output" in failed["blender/crashes.blend"]
    assert "timed out" in failed["blender/hangs.fbx"]
    assert "Blender could not import garbage.fbx" in failed["broken/garbage.fbx"]  # Blender's own reason follows
    assert assert_points_on_masks(tmp_path / "out") == 5
    assert not list(made.glob("marker_*"))  # the .blend file's scripts never ran in any worker
    textured = {s["id"]: s for s in open_dataset(tmp_path / "out")}["helmet/DamagedHelmet.gltf"]
    assert textured["images"][textured["alphas"] == 255].std() > 20
