"""The whole pipeline through Ray: output contract, alignment, failures, crash/hang isolation, resume."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import mask_coverage, projection_hits, small_config

from voxforge.loaders import open_dataset
from voxforge.loaders.shards import shard_paths
from voxforge.pipeline.run import RunError, run
from voxforge.pipeline.sources import SourceError, UnknownCategoryError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def procedural_dataset(tmp_path_factory, ray_local):
    out = tmp_path_factory.mktemp("procedural")
    summary = run(small_config(out, limit=6))
    assert summary.ok == 6 and summary.failed == 0
    return out


def test_samples_follow_the_documented_contract(procedural_dataset):
    dataset = open_dataset(procedural_dataset)
    samples = list(dataset)
    assert len(samples) == len(dataset) == 6
    assert {s["category"] for s in samples} == {"chair", "table", "car", "airplane", "lamp", "mug"}
    for s in samples:
        assert s["images"].shape == (6, 127, 127, 3) and s["images"].dtype == np.uint8
        assert s["masks"].shape == (6, 127, 127) and s["masks"].dtype == bool
        assert s["K"].shape == (6, 3, 3) and s["world_to_camera"].shape == (6, 3, 4)
        assert s["azimuth"].shape == s["elevation"].shape == s["distance"].shape == (6,)
        assert s["voxels"].shape == (32, 32, 32) and s["voxels"].dtype == bool and s["voxels"].any()
        assert s["points"].shape == s["normals"].shape == (4096, 3) and s["points"].dtype == np.float32
        assert s["voxel_origin"].shape == (3,) and s["voxel_size"] > 0
        # the object frame: centred, unit diagonal
        assert np.linalg.norm(s["points"].max(0) - s["points"].min(0)) <= 1.0 + 1e-5
        assert np.abs((s["points"].max(0) + s["points"].min(0)) / 2).max() < 0.05
        # each view's mean object luma, from the renderer's own pixels: what pipeline inspect checks
        from voxforge.renderers.agreement import luma

        assert len(s["meta"]["object_luma"]) == 6
        for view, value in enumerate(s["meta"]["object_luma"]):
            straight = luma(s["images"][view][s["masks"][view]]).mean()  # white background: inner pixels match
            assert 30 < value < 255 and abs(value - straight) < 12, (s["id"], view, value, straight)
    rows = [json.loads(line) for line in (procedural_dataset / "manifest.jsonl").read_text().splitlines()]
    assert all(len(row["object_luma"]) == 6 for row in rows)
    info = json.loads((procedural_dataset / "dataset.json").read_text())
    assert info["format_version"] and info["counts"]["objects"] == 6 and info["config"]["views"] == 6
    assert "ray" in info["software"]


def test_points_and_voxels_project_onto_the_masks(procedural_dataset):
    """The property users rely on: the stored cameras put the stored geometry on the rendered object."""
    for sample in open_dataset(procedural_dataset):
        occupied = sample["voxel_origin"] + (np.argwhere(sample["voxels"]) + 0.5) * sample["voxel_size"]
        for view in range(len(sample["images"])):
            K, pose, mask = sample["K"][view], sample["world_to_camera"][view], sample["masks"][view]
            points_on_mask = projection_hits(sample["points"], K, pose, mask).mean()
            voxels_on_mask = projection_hits(occupied, K, pose, mask, tolerance_px=2).mean()
            assert points_on_mask >= 0.99, (sample["id"], view, points_on_mask)
            assert voxels_on_mask >= 0.99, (sample["id"], view, voxels_on_mask)
            assert mask_coverage(sample["points"], K, pose, mask) >= 0.9


def test_masks_match_what_is_visible_in_the_images(procedural_dataset):
    """White background: pixels outside the mask are background, pixels inside mostly are not."""
    for sample in open_dataset(procedural_dataset):
        alpha0 = sample["alphas"] == 0
        assert (sample["images"][alpha0] == 255).all()
        inside = sample["images"][sample["alphas"] == 255]
        assert (inside != 255).any(axis=1).mean() > 0.9


def test_manifest_and_splits(procedural_dataset):
    rows = [json.loads(line) for line in (procedural_dataset / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all(r["status"] == "ok" and r["shard"] for r in rows)
    for row in rows:
        assert (procedural_dataset / row["shard"]).is_file()
        assert row["split"] in ("train", "val", "test")


def test_same_seed_gives_identical_samples(tmp_path, ray_local, procedural_dataset):
    run(small_config(tmp_path, limit=2))
    first = {s["id"]: s for s in open_dataset(procedural_dataset)}
    for sample in open_dataset(tmp_path):
        reference = first[sample["id"]]
        for key in ("images", "masks", "world_to_camera", "voxels", "points"):
            assert np.array_equal(sample[key], reference[key]), key


def test_rerun_resumes_without_duplicates(tmp_path, ray_local):
    first = run(small_config(tmp_path, limit=3))
    second = run(small_config(tmp_path, limit=6))
    assert first.ok == 3 and second.skipped == 3 and second.ok == 3
    ids = [s["id"] for s in open_dataset(tmp_path)]
    assert len(ids) == len(set(ids)) == 6
    assert run(small_config(tmp_path, limit=6)).ok == 0
    # a dataset without shard manifests (format 1.0, or .voxforge deleted): rebuilt from the shards themselves
    shutil.rmtree(tmp_path / ".voxforge")
    again = run(small_config(tmp_path, limit=6))
    assert again.skipped == 6 and again.ok == 0
    assert len(list((tmp_path / ".voxforge" / "shards").rglob("*.json"))) == len(list(tmp_path.glob("*/shard-*.tar")))


def test_changed_settings_are_refused_on_resume(tmp_path, ray_local):
    run(small_config(tmp_path, limit=1))
    with pytest.raises(RunError, match="views"):
        run(small_config(tmp_path, limit=1, views=3))


def test_local_shapenet_chairs_with_voc_backgrounds(tmp_path, ray_local, shared_data):
    config = small_config(tmp_path, source="local", path=str(shared_data / "shapenetcore_v2"),
                          categories=["chair"], limit=None,
                          backgrounds=str(shared_data / "voc" / "VOC2007" / "JPEGImages"))
    summary = run(config)
    assert summary.ok == 2 and summary.failed == 0
    for sample in open_dataset(tmp_path):
        assert sample["category"] == "chair" and sample["synset_id"] == "03001627"
        assert sample["meta"]["source_sha256"] and sample["meta"]["license"]
        background = sample["images"][~sample["masks"]]
        assert background.std() > 10  # photos, not a flat colour
        for view in range(len(sample["images"])):
            hits = projection_hits(sample["points"], sample["K"][view], sample["world_to_camera"][view],
                                   sample["masks"][view])
            assert hits.mean() >= 0.99


def test_bad_files_are_recorded_and_the_run_goes_on(tmp_path, ray_local, shared_data):
    folder = tmp_path / "meshes"
    (folder / "good").mkdir(parents=True)
    (folder / "bad").mkdir()
    for name in ("Duck.glb", "polygonfaces.obj", "empty_nodes.glb"):
        (folder / "good" / name).write_bytes((shared_data / "meshes" / "trimesh" / name).read_bytes())
    (folder / "bad" / "corrupt.glb").write_bytes(b"glTF\x02\x00\x00\x00garbage")
    (folder / "bad" / "nan.obj").write_text("v 0 0 0\nv nan 0 0\nv 0 1 0\nf 1 2 3\n")
    (folder / "bad" / "empty.stl").write_bytes(b"")
    summary = run(small_config(tmp_path / "out", source="local", path=str(folder), limit=None))
    failed = dict(summary.failures)
    assert summary.ok == 2, failed
    assert set(failed) == {"good/empty_nodes.glb", "bad/corrupt.glb", "bad/nan.obj", "bad/empty.stl"}
    assert "no triangles" in failed["good/empty_nodes.glb"] and "NaN" in failed["bad/nan.obj"]
    rows = [json.loads(line) for line in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    assert Counter(r["status"] for r in rows) == {"ok": 2, "failed": 4}
    assert all(r["error"] for r in rows if r["status"] == "failed")


def test_crashing_and_hanging_objects_are_isolated(tmp_path, ray_local):
    """All six objects in one shard task: the worker dies on one, hangs on another, is stopped (SIGSTOP:
    its own watchdog thread stops too) on a third; the shard is made again without them and holds the
    good samples."""
    config = small_config(tmp_path, limit=6, timeout=8, max_attempts=1, shard_size=6, min_shards=1,
                          split_ratios=(1.0, 0.0, 0.0),
                          fault_injection={"chair/000000": "crash", "table/000000": "hang", "car/000000": "error",
                                           "lamp/000000": "stop"})
    summary = run(config)
    failed = dict(summary.failures)
    assert summary.ok == 2 and set(failed) == {"chair/000000", "table/000000", "car/000000", "lamp/000000"}
    assert "died" in failed["chair/000000"]
    assert failed["table/000000"].startswith("render: timed out")  # the stage that overran is named
    assert failed["lamp/000000"].startswith("render: timed out") and "ended from outside" in failed["lamp/000000"]
    assert "injected renderer error" in failed["car/000000"]
    assert [p.name for p in shard_paths(tmp_path / "train")] == ["shard-000000.tar"]
    assert sorted(s["id"] for s in open_dataset(tmp_path)) == ["airplane/000000", "mug/000000"]
    shard = json.loads((tmp_path / ".voxforge" / "shards" / "train" / "shard-000000.json").read_text())
    assert len(shard["rows"]) == 6 and shard["ok"] == 2


def test_errors_before_any_work(tmp_path, ray_local):
    with pytest.raises(UnknownCategoryError):
        run(small_config(tmp_path, categories=["spaceship"]))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SourceError, match="no objects"):
        run(small_config(tmp_path / "out", source="local", path=str(empty)))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(RunError, match="cannot write"):
        run(small_config(blocker / "out"))


def test_killed_run_resumes_to_the_same_bytes_as_an_uninterrupted_run(tmp_path, ray_local):
    """SIGKILL the driver's whole process group mid-run, run the same command again: the shards are
    byte-identical to those of a run that was never interrupted."""
    out = tmp_path / "out"
    command = [sys.executable, "-m", "voxforge.pipeline.cli", "run", "procedural", "--limit", "36", "--views", "4",
               "--points", "512", "--shard-size", "3", "--workers", "2", "--out", str(out), "--no-progress"]
    process = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len([p for s in ("train", "val", "test") for p in shard_paths(out / s)]) < 3:
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    written = [s["id"] for s in open_dataset(out)] if (out / "dataset.json").exists() else []
    assert 0 < len(written) < 36
    assert len(written) == len(set(written))
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    ids = [s["id"] for s in open_dataset(out)]
    assert len(ids) == len(set(ids)) == 36
    assert not list(Path(out).rglob("*.partial"))

    reference = tmp_path / "uninterrupted"
    run(small_config(reference, limit=36, views=4, points=512, shard_size=3))
    shards = sorted(str(p.relative_to(out)) for p in out.glob("*/shard-*.tar"))
    assert shards == sorted(str(p.relative_to(reference)) for p in reference.glob("*/shard-*.tar"))
    assert all((out / name).read_bytes() == (reference / name).read_bytes() for name in shards)
    assert (out / "manifest.jsonl").read_text() == (reference / "manifest.jsonl").read_text()


def test_missing_gl_is_one_clear_error_and_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.setenv("PYOPENGL_PLATFORM", "no-such-platform")
    with pytest.raises(RunError, match="cannot start on this machine.*Mesa's EGL"):
        run(small_config(tmp_path / "out", limit=1))
    assert not (tmp_path / "out").exists()  # checked before the output is made


def test_a_missing_renderer_extra_names_the_extra_only(tmp_path, monkeypatch):
    import voxforge.renderers as renderers

    def missing(name):
        raise ImportError("the Blender renderer needs the bpy module (No module named 'bpy'); install it with: "
                          "pip install -e '.[blender]'")

    monkeypatch.setattr(renderers, "get_renderer", missing)
    with pytest.raises(RunError) as error:
        run(small_config(tmp_path / "out", limit=1, renderer="blender"))
    assert "pip install -e '.[blender]'" in str(error.value) and "EGL" not in str(error.value)
    assert not (tmp_path / "out").exists()
