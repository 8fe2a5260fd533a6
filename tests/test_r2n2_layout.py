"""The original 3D-R2N2 layout read as voxforge samples: cameras and voxels agree with the real masks."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import projection_hits

from voxforge.loaders import open_dataset
from voxforge.loaders.r2n2 import R2N2Dataset, r2n2_world_to_camera


def _centres(sample) -> np.ndarray:
    return sample["voxel_origin"] + (np.argwhere(sample["voxels"]) + 0.5) * sample["voxel_size"]


def test_real_r2n2_objects_read_as_samples(shared_data):
    dataset = open_dataset(shared_data / "r2n2")
    assert isinstance(dataset, R2N2Dataset)
    samples = list(dataset)
    assert len(samples) == 7
    for sample in samples:
        assert sample["images"].shape == (24, 137, 137, 3) and sample["masks"].shape == (24, 137, 137)
        assert sample["K"].shape == (24, 3, 3) and sample["world_to_camera"].shape == (24, 3, 4)
        assert sample["voxels"].shape == (32, 32, 32) and sample["voxels"].any()
    assert {s["category"] for s in samples} >= {"airplane", "chair", "car", "lamp"}


def test_voxel_centres_land_on_the_real_masks_in_all_views(shared_data):
    """Within 2 px (about half a voxel at this distance), every view of every real object."""
    for sample in open_dataset(shared_data / "r2n2"):
        centres = _centres(sample)
        for view in range(24):
            hits = projection_hits(centres, sample["K"][view], sample["world_to_camera"][view],
                                   sample["alphas"][view] > 0, tolerance_px=2)
            assert hits.mean() >= 0.98, (sample["id"], view, hits.mean())


@pytest.mark.parametrize("wrong", [
    lambda az, el, d: (az + 90.0, el, d), lambda az, el, d: (-az, el, d),
    lambda az, el, d: (az, -el, d), lambda az, el, d: (az, el, 0.7 * d),
], ids=["azimuth+90", "azimuth-mirrored", "elevation-mirrored", "closer"])
def test_a_wrong_convention_would_be_caught(shared_data, wrong):
    """The same check with a plausible wrong convention scores far lower: the check tells them apart."""
    scores = []
    for sample in open_dataset(shared_data / "r2n2"):
        metadata = np.asarray(sample["meta"]["metadata"])
        for view in range(24):
            pose = r2n2_world_to_camera(*wrong(metadata[view, 0], metadata[view, 1], metadata[view, 3]))
            scores.append(projection_hits(_centres(sample), sample["K"][view], pose, sample["alphas"][view] > 0,
                                          tolerance_px=2).mean())
    assert np.mean(scores) < 0.9


@pytest.mark.slow
def test_export_reads_back_with_the_same_cameras_voxels_and_images(tmp_path, ray_local):
    from conftest import small_config

    from voxforge.pipeline.cli import main
    from voxforge.pipeline.run import run

    run(small_config(tmp_path / "data", limit=3))
    assert main(["export", str(tmp_path / "data"), "--layout", "r2n2", "--out", str(tmp_path / "r2n2")]) == 0
    originals = {s["id"]: s for s in open_dataset(tmp_path / "data")}
    exported = list(open_dataset(tmp_path / "r2n2"))
    assert len(exported) == 3
    for sample in exported:
        original = next(o for o in originals.values() if o["category"] == sample["category"])
        assert np.allclose(sample["world_to_camera"], original["world_to_camera"], atol=1e-6)
        assert np.allclose(sample["azimuth"], original["azimuth"], atol=1e-6)
        assert np.allclose(sample["K"], original["K"])
        assert np.array_equal(sample["voxels"], original["voxels"])
        assert np.array_equal(sample["alphas"], original["alphas"])
        assert np.abs(sample["images"].astype(int) - original["images"]).max() <= 2
        assert sample["split"] == original["split"]


def test_exported_names_are_safe_path_components():
    from voxforge.loaders.r2n2 import _safe_name

    for name in ["../../etc/passwd", "kaolin/armchair.obj", "a b", "", "chair/000001"]:
        safe = _safe_name(name)
        assert safe and "/" not in safe and ".." not in safe and safe not in (".", "..")
    assert _safe_name("1a2b3c") == "1a2b3c"
