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
