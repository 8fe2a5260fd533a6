"""PyTorch loading: shard splitting across ranks and workers, shuffling, 3D-R2N2 style batches."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import projection_hits, small_config

torch = pytest.importorskip("torch")

from voxforge.loaders.torch import (  # noqa: E402
    ShardDataset, ViewBatcher, flip_camera, plain_background_of, recomposite,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, ray_local):
    from voxforge.pipeline.run import run

    out = tmp_path_factory.mktemp("loader")
    run(small_config(out, limit=8, shard_size=1, split_ratios=(1.0, 0.0, 0.0)))
    return out


def _ids(reader) -> list[str]:
    return [sample["id"] for sample in reader]


def test_every_sample_once_across_ranks_and_workers(dataset, monkeypatch):
    seen = []
    for rank in range(2):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        loader = torch.utils.data.DataLoader(ShardDataset(dataset, split="train"), batch_size=None, num_workers=2)
        seen += [sample["id"] for sample in loader]
    assert len(seen) == len(set(seen)) == 8


def test_shuffling_is_seeded_per_epoch(dataset):
    reader = ShardDataset(dataset, shuffle_buffer=4, seed=1)
    first = _ids(reader)
    assert first == _ids(reader)  # same epoch, same order
    reader.set_epoch(1)
    second = _ids(reader)
    assert sorted(first) == sorted(second) and first != second


def test_batches_have_one_view_count_and_matching_cameras(dataset):
    samples = list(ShardDataset(dataset))[:4]
    batcher = ViewBatcher(views=(1, 5), seed=0)
    counts = set()
    for _ in range(10):
        batch = batcher(samples)
        count = batch["images"].shape[1]
        counts.add(count)
        assert batch["images"].shape == (4, count, 3, 127, 127) and batch["images"].dtype == torch.float32
        assert batch["K"].shape == (4, count, 3, 3) and batch["world_to_camera"].shape == (4, count, 3, 4)
        assert batch["voxels"].shape == (4, 32, 32, 32) and batch["voxels"].dtype == torch.bool
        for b in range(4):  # the chosen cameras still put the object's points on the chosen masks
            for v in range(count):
                hits = projection_hits(samples[b]["points"], batch["K"][b, v].double().numpy(),
                                       batch["world_to_camera"][b, v].double().numpy(), batch["masks"][b, v].numpy())
                assert hits.mean() >= 0.99
    assert len(counts) > 1


def test_flipped_views_keep_the_projection_property(dataset):
    sample = next(iter(ShardDataset(dataset)))
    for view in range(len(sample["images"])):
        K, pose = flip_camera(sample["K"][view], sample["world_to_camera"][view], 127)
        mask = sample["masks"][view][:, ::-1]
        assert projection_hits(sample["points"], K, pose, mask).mean() >= 0.99


def test_recompositing_a_plain_background_is_exact(dataset):
    old = plain_background_of(dataset)
    sample = next(iter(ShardDataset(dataset)))
    image, alpha = sample["images"][0], sample["alphas"][0]
    same = recomposite(image, alpha, old, np.full(image.shape, old, np.float32))
    assert np.abs(same - image).max() < 1e-3
    grey = recomposite(image, alpha, old, np.full(image.shape, 240.0, np.float32))
    assert np.allclose(grey[alpha == 0], 240.0) and np.allclose(grey[alpha == 255], image[alpha == 255])
    batch = ViewBatcher(views=(2, 2), background="random_color", old_background=old, normalize=True,
                        color_jitter=0.2, pca_noise=0.1, permute_rgb=True, flip=True)([sample])
    assert batch["images"].shape == (1, 2, 3, 127, 127) and torch.isfinite(batch["images"]).all()


def test_decoding_a_subset_of_views_keeps_cameras_with_their_images(dataset):
    full = next(iter(ShardDataset(dataset)))
    subset = next(iter(ShardDataset(dataset, max_views=3, seed=2)))
    assert subset["images"].shape[0] == 3 and len(subset["views"]) == 3
    for index, view in enumerate(subset["views"]):
        assert np.array_equal(subset["images"][index], full["images"][view])
        assert np.array_equal(subset["world_to_camera"][index], full["world_to_camera"][view])
        assert subset["azimuth"][index] == full["azimuth"][view]


def test_each_dataloader_worker_draws_its_own_views(dataset):
    loader = torch.utils.data.DataLoader(ShardDataset(dataset), batch_size=1, num_workers=2,
                                         collate_fn=ViewBatcher(views=(1, 5), seed=0))
    counts = {}
    for batch in loader:
        counts.setdefault(batch["id"][0], batch["images"].shape[1])
    sequence = list(counts.values())  # workers alternate: equal halves would mean copied random streams
    assert sequence[0::2] != sequence[1::2]


def test_fewer_shards_than_readers_still_gives_each_reader_its_samples(tmp_path, ray_local, monkeypatch):
    """One shard, 2 ranks x 2 DataLoader workers: samples are divided instead of shards, each read once."""
    from voxforge.pipeline.run import run

    run(small_config(tmp_path, limit=8, views=2, points=256, shard_size=64, min_shards=1, split_ratios=(1.0, 0.0, 0.0)))
    assert len(ShardDataset(tmp_path, split="train").shards) == 1
    seen = []
    for rank in range(2):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        loader = torch.utils.data.DataLoader(ShardDataset(tmp_path, split="train"), batch_size=None, num_workers=2)
        mine = [sample["id"] for sample in loader]
        assert len(mine) == 4  # no rank left without data (it would wait for the other forever)
        seen += mine
    assert len(seen) == len(set(seen)) == 8
    monkeypatch.setenv("RANK", "4")
    monkeypatch.setenv("WORLD_SIZE", "5")  # 10 readers for 8 samples: the last ones would get none
    loader = torch.utils.data.DataLoader(ShardDataset(tmp_path, split="train"), batch_size=None, num_workers=2)
    with pytest.raises(ValueError, match="8 samples for 10 readers"):
        list(loader)
