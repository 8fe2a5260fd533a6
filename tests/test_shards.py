"""Shards are written atomically and read back exactly."""

from __future__ import annotations

import tarfile

from voxforge.loaders.format import sample_key
from voxforge.loaders.shards import ShardWriter, iter_shard, remove_partial_shards, shard_paths


def _members(i: int) -> dict[str, bytes]:
    return {"json": b'{"i": %d}' % i, "rgb_00.png": bytes([i]) * 100}


def test_shards_roll_over_and_read_back(tmp_path):
    writer = ShardWriter(tmp_path, max_count=2)
    committed = [writer.add(f"k{i}", _members(i)) for i in range(5)]
    committed.append(writer.commit())
    assert [c[0] if c else None for c in committed] == [
        None, "shard-000000.tar", None, "shard-000001.tar", None, "shard-000002.tar"]
    samples = [s for path in shard_paths(tmp_path) for s in iter_shard(path)]
    assert [key for key, _ in samples] == [f"k{i}" for i in range(5)]
    assert samples[3][1] == _members(3)


def test_open_shard_is_invisible_until_committed(tmp_path):
    writer = ShardWriter(tmp_path, max_count=10)
    writer.add("a", _members(1))
    assert shard_paths(tmp_path) == []  # a killed run leaves only a .partial file
    assert remove_partial_shards(tmp_path) and not list(tmp_path.iterdir())


def test_numbering_continues_after_existing_shards(tmp_path):
    first = ShardWriter(tmp_path, 1)
    first.add("a", _members(1))
    assert ShardWriter(tmp_path, 1).current_name == "shard-000001.tar"


def test_same_samples_give_identical_bytes(tmp_path):
    for name in ("one", "two"):
        writer = ShardWriter(tmp_path / name, 4)
        writer.add("x", _members(7))
        writer.commit()
    assert (tmp_path / "one" / "shard-000000.tar").read_bytes() == (tmp_path / "two" / "shard-000000.tar").read_bytes()
    with tarfile.open(tmp_path / "one" / "shard-000000.tar") as tar:
        assert tar.getnames() == ["x.json", "x.rgb_00.png"]


def test_sample_keys_are_webdataset_safe_and_unique():
    ids = ["03001627/abc", "kaolin/armchair.obj", "kaolin/armchair.gltf", "../../etc/passwd", "a b.c"]
    keys = [sample_key(i) for i in ids]
    assert len(set(keys)) == len(keys)
    assert all("." not in k and "/" not in k for k in keys)
