"""Publishing to disk (folder, .tar, .zip), the dataset card, datasets.load_dataset and the Parquet export."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import zipfile

import numpy as np
import pytest
import yaml

from voxforge.loaders import open_dataset
from voxforge.loaders.shards import iter_shard, shard_paths
from voxforge.pipeline.publish import PublishError, publish, verify_dataset
from voxforge.voxelize.binvox import decode_binvox

datasets = pytest.importorskip("datasets")
pytestmark = pytest.mark.slow  # the dataset is made by a Ray run

SPLIT_SIZES = {"train": 9, "validation": 2, "test": 1}


def _first_train_sample(dataset):
    return next(iter(open_dataset(dataset, "train")))


def _rewrite_without(shard, member_suffix: str, replacement: bytes | None = None) -> None:
    """Rewrite a shard leaving out one member of its first sample (a damaged upload, say), or putting
    ``replacement`` bytes in its place."""
    samples = list(iter_shard(shard))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for index, (key, members) in enumerate(samples):
            for name, data in sorted(members.items()):
                if index == 0 and name == member_suffix:
                    if replacement is None:
                        continue
                    data = replacement
                info = tarfile.TarInfo(f"{key}.{name}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    shard.write_bytes(buffer.getvalue())


def test_verification_names_every_problem_and_nothing_is_published(split_dataset, tmp_path):
    good = verify_dataset(split_dataset)
    assert good.problems == [] and dict(good.per_split) == {"train": 9, "val": 2, "test": 1}
    broken = tmp_path / "broken"
    shutil.copytree(split_dataset, broken, ignore=shutil.ignore_patterns(".voxforge"))
    first = broken / "train" / "shard-000000.tar"
    data = bytearray(first.read_bytes())
    data[20] ^= 0x01  # inside the first member's name: the header checksum no longer matches
    first.write_bytes(bytes(data))
    _rewrite_without(broken / "val" / "shard-000000.tar", "mask_01.png")
    (broken / "test" / "shard-000000.tar").unlink()
    problems = "\n".join(verify_dataset(broken).problems)
    assert "train/shard-000000.tar: " in problems and "checksum" in problems
    assert "missing or empty members: mask_01.png" in problems
    assert "test/shard-000000.tar: listed in dataset.json but missing" in problems
    assert "test: 0 samples in the shards, 1 in dataset.json" in problems
    with pytest.raises(PublishError, match="did not verify"):
        publish(broken, str(tmp_path / "out"), progress=False)
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_verification_decodes_every_member(split_dataset, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(split_dataset, broken, ignore=shutil.ignore_patterns(".voxforge"))
    image = next(iter_shard(broken / "train" / "shard-000000.tar"))[1]["rgb_02.png"]
    _rewrite_without(broken / "train" / "shard-000000.tar", "rgb_02.png", bytes(len(image)))  # zeroed, same size
    points = next(iter_shard(broken / "val" / "shard-000000.tar"))[1]["points.npy"]
    _rewrite_without(broken / "val" / "shard-000000.tar", "points.npy", points[:-12])  # one coordinate short
    problems = "\n".join(verify_dataset(broken).problems)
    assert "rgb_02.png does not decode" in problems and "points.npy does not decode" in problems
    with pytest.raises(PublishError, match="did not verify; nothing was published"):
        publish(broken, str(tmp_path / "out"), progress=False)  # the preview never sees the bad sample
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("parquet", [True, False])
def test_folder_publish_reads_back_with_load_dataset(split_dataset, tmp_path, parquet):
    """By default the card's config is the Parquet copy (one row per object, loads from datasets 2.14 on);
    with parquet=False it is the shards themselves (datasets >= 4.7). The shards are published either way."""
    destination = tmp_path / "published"
    summary = publish(split_dataset, str(destination), progress=False, parquet=parquet)
    assert summary["objects"] == 12 and summary["shards"] == 8  # train 5, val 2 (--min-shards), test 1
    for split in ("train", "val", "test"):
        for shard in shard_paths(split_dataset / split):
            assert (destination / split / shard.name).read_bytes() == shard.read_bytes()
    published = (destination / "dataset.json").read_text()
    assert str(split_dataset) not in published  # local paths stay home
    assert json.loads(published)["config"]["out"] == split_dataset.name
    assert json.loads(published)["counts"] == json.loads((split_dataset / "dataset.json").read_text())["counts"]
    card = (destination / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["license"] == "cc0-1.0" and "image-to-3d" in front["task_categories"]
    files = {item["split"]: item["path"] for item in front["configs"][0]["data_files"]}
    if parquet:
        assert files == {"train": "data/train-*.parquet", "validation": "data/validation-*.parquet",
                         "test": "data/test-*.parquet"}
        assert sorted(p.name for p in (destination / "data").iterdir()) == [
            "test-00000-of-00001.parquet", "train-00000-of-00001.parquet", "validation-00000-of-00001.parquet"]
        assert "features" not in front["dataset_info"]  # the files' own schema declares them, for every release
        sizes = {s["name"]: s["num_bytes"] for s in front["dataset_info"]["splits"]}
        assert sizes["train"] == (destination / "data" / "train-00000-of-00001.parquet").stat().st_size
    else:
        assert files == {"train": "train/shard-*.tar", "validation": "val/shard-*.tar", "test": "test/shard-*.tar"}
        assert not (destination / "data").exists()
    assert {s["name"]: s["num_examples"] for s in front["dataset_info"]["splits"]} == SPLIT_SIZES
    assert "![Preview" in card and (destination / "preview.png").read_bytes().startswith(b"\x89PNG")
    assert "| chair |" in card and "## How it was made" in card

    loaded = datasets.load_dataset(str(destination), cache_dir=str(tmp_path / "cache"))
    assert {name: len(split) for name, split in loaded.items()} == SPLIT_SIZES
    row, sample = loaded["train"][0], _first_train_sample(split_dataset)
    if parquet:
        meta = json.loads(row["metadata"])
        image, mask, points, voxels = row["images"][2], row["masks"][3], row["points"], row["voxels_binvox"]
    else:
        meta = row["json"]
        image, mask, points, voxels = row["rgb_02.png"], row["mask_03.png"], row["points.npy"], row["voxels.binvox"]
    assert meta["id"] == sample["id"] and meta["cameras"]["K"] == sample["K"].tolist()
    assert np.array_equal(np.asarray(image), sample["images"][2])
    assert np.array_equal(np.asarray(mask), sample["alphas"][3])
    assert np.array_equal(np.asarray(points, np.float32), sample["points"])
    assert np.array_equal(decode_binvox(voxels).occupancy, sample["voxels"])
    with pytest.raises(PublishError, match="not empty"):
        publish(split_dataset, str(destination), progress=False)


@pytest.mark.parametrize("suffix", [".tar", ".zip"])
def test_bundles_unpack_to_a_dataset(split_dataset, tmp_path, suffix):
    bundle = tmp_path / f"chairs{suffix}"
    publish(split_dataset, str(bundle), progress=False)
    unpacked = tmp_path / "unpacked"
    if suffix == ".zip":
        with zipfile.ZipFile(bundle) as archive:
            archive.extractall(unpacked)
    else:
        with tarfile.open(bundle) as archive:
            archive.extractall(unpacked, filter="data")
    ids = sorted(s["id"] for s in open_dataset(unpacked / "chairs"))
    assert ids == sorted(s["id"] for s in open_dataset(split_dataset)) and len(ids) == 12
    assert (unpacked / "chairs" / "README.md").is_file()
    with pytest.raises(PublishError, match="already exists"):
        publish(split_dataset, str(bundle), progress=False)


def test_parquet_export_has_one_row_per_object(split_dataset, tmp_path):
    import pyarrow.parquet as pq

    from voxforge.pipeline.cli import main

    assert main(["export", str(split_dataset), "--layout", "parquet", "--out", str(tmp_path / "pq")]) == 0
    files = sorted(p.name for p in (tmp_path / "pq" / "data").iterdir())
    assert files == ["test-00000-of-00001.parquet", "train-00000-of-00001.parquet",
                     "validation-00000-of-00001.parquet"]
    table = pq.read_table(tmp_path / "pq" / "data" / "train-00000-of-00001.parquet")
    assert table.num_rows == 9
    row = table.slice(0, 1).to_pylist()[0]
    sample = _first_train_sample(split_dataset)
    assert row["id"] == sample["id"] and row["category"] == sample["category"]
    from voxforge.loaders.png import decode_png

    assert np.array_equal(decode_png(row["images"][1]["bytes"]), sample["images"][1])
    assert np.array_equal(decode_png(row["masks"][0]["bytes"]), sample["alphas"][0])
    assert np.allclose(row["world_to_camera"], sample["world_to_camera"]) and np.allclose(row["K"], sample["K"])
    assert np.array_equal(np.asarray(row["points"], np.float32), sample["points"])
    grid = decode_binvox(row["voxels_binvox"])
    assert np.array_equal(grid.occupancy, sample["voxels"]) and row["voxel_size"] == pytest.approx(sample["voxel_size"])
    loaded = datasets.load_dataset(str(tmp_path / "pq"), cache_dir=str(tmp_path / "cache"))
    assert {name: len(split) for name, split in loaded.items()} == SPLIT_SIZES
    first = loaded["train"][0]
    # the metadata is the sample's JSON text (a string column every datasets release reads)
    assert json.loads(first["metadata"])["id"] == sample["id"]
    assert np.array_equal(np.asarray(first["images"][1]), sample["images"][1])


@pytest.mark.parametrize("views,depth", [(4, False), (24, True)])
def test_card_features_are_what_datasets_reads(views, depth):
    from voxforge.loaders.hf import features_yaml, hf_features

    parsed = datasets.Features._from_yaml_list(features_yaml(views, depth))
    assert parsed == hf_features(views, depth) and list(parsed) == list(hf_features(views, depth))
