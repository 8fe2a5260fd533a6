"""Shards as the unit of work: deterministic plans, outputs on any filesystem or object store, one run per
output, and whole runs on S3 (a loopback moto server) and on a multi-node loopback Ray cluster."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tarfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import projection_hits, small_config

from voxforge.pipeline.plan import plan_shards, shard_sizes
from voxforge.pipeline.sources import ObjectRecord
from voxforge.storage import StorageError, location

# -- planning -------------------------------------------------------------------------------------------


def _records(count: int) -> list[ObjectRecord]:
    return [ObjectRecord(f"thing/{i:04d}", "thing", "procedural", f"spec-{i}", split=("train", "val")[i % 5 == 0])
            for i in range(count)]


def _plan(records, done=frozenset(), taken=None, size=4, min_shards=1):
    plan = plan_shards(records, lambda r: r.split, lambda object_id: object_id in done,
                       taken or {"train": set(), "val": set(), "test": set()}, size, min_shards)
    return {(t.split, t.index): [r.object_id for r in t.records] for t in plan.tasks}, plan


def test_a_killed_run_replans_exactly_the_shards_it_had_not_committed():
    records = _records(37)
    full, plan = _plan(records)
    assert plan.objects == 37 and all(len(ids) <= 4 for ids in full.values())
    assert [index for split, index in full if split == "train"] == list(range(8))
    for committed in ([("train", 1), ("train", 3), ("val", 0)], [("train", 7)], list(full)[:5]):
        done = {object_id for key in committed for object_id in full[key]}
        taken = {"train": set(), "val": set(), "test": set()}
        for split, index in committed:
            taken[split].add(index)
        rest, again = _plan(records, done, taken)
        assert again.skipped == len(done)
        assert rest == {key: ids for key, ids in full.items() if key not in committed}  # same numbers, same objects


def test_new_objects_go_to_new_shards_and_small_splits_get_enough_shards():
    first, _ = _plan(_records(10))
    done = {object_id for ids in first.values() for object_id in ids}
    taken = {"train": {i for s, i in first if s == "train"}, "val": {i for s, i in first if s == "val"}, "test": set()}
    grown, plan = _plan(_records(20), done, taken)
    assert plan.skipped == 10 and not set(grown) & set(first)
    assert sorted(object_id for ids in grown.values() for object_id in ids) == [f"thing/{i:04d}" for i in range(10, 20)]
    sizes = shard_sizes(Counter(train=9, val=2), shard_size=64, min_shards=8)
    assert sizes == {"train": 2, "val": 1, "test": 1}  # 5 train shards, 2 val: each reader gets one
    assert shard_sizes(Counter(train=100_000), 64, 8)["train"] == 64


def test_the_planner_streams_holding_at_most_a_few_shards_of_records():
    from voxforge.pipeline.plan import Planner
    from voxforge.pipeline.sources import create_source
    from voxforge.pipeline.splits import assign_split

    planner = Planner(lambda r: assign_split(r.object_id), lambda _: False, {}, shard_size=64, min_shards=8)
    held, tasks = 0, []
    for record in create_source("procedural").stream(None, 50_000):  # made one at a time, never a list
        tasks += planner.add(record)
        held = max([held, *(len(pending) for pending in planner.pending.values())])
    tasks += planner.finish()
    assert planner.selected == planner.objects == sum(len(t.records) for t in tasks) == 50_000
    assert held <= 64 * 8  # a split holds 8 shards' worth until it knows its shards are full, then one
    train = [len(t.records) for t in tasks if t.split == "train"]
    assert set(train[:-1]) == {64} and 0 < train[-1] <= 64  # full shards, then the remainder


# -- locations ------------------------------------------------------------------------------------------


def test_urls_are_never_made_into_local_folders(tmp_path, monkeypatch):
    from voxforge.pipeline.run import RunError, run

    monkeypatch.chdir(tmp_path)
    with pytest.raises(StorageError, match="unknown storage scheme 'nosuch'"):
        location("nosuch://bucket/ds")
    try:
        import gcsfs  # noqa: F401
    except ImportError:
        with pytest.raises(RunError, match=r"gs:// needs a filesystem that is not installed; pip install 'voxforge\[gcs\]'"):
            run(small_config("gs://bucket/ds"))
    with pytest.raises(RunError, match="pipeline publish"):
        run(small_config("hf://datasets/me/ds"))
    assert not list(tmp_path.iterdir())  # no folder named "gs:" or "hf:" appeared


def test_a_location_writes_atomically_and_reads_back_locally_and_on_s3(tmp_path, s3):
    bucket = s3.bucket("locations")
    for where in (location(tmp_path / "ds"), location(f"s3://{bucket}/ds")):
        where.write_bytes("a/one.json", b"1")
        where.write_text("a/two.json", "2")
        staged = where.staging_file("b/big.tar")
        staged.write_bytes(b"x" * 1000)
        where.put_file(staged, "b/big.tar")
        assert not staged.exists()
        assert where.list_files("a") == {"one.json": 1, "two.json": 1} and where.list_files("nothing") == {}
        assert where.read_many(["a/one.json", "a/two.json", "a/missing.json"]) == {"a/one.json": b"1", "a/two.json": b"2"}
        assert where.read_bytes("b/big.tar") == b"x" * 1000
        with pytest.raises(FileNotFoundError):
            where.read_bytes("a/missing.json")
    assert sorted(s3.keys(bucket)) == ["ds/a/one.json", "ds/a/two.json", "ds/b/big.tar"]
    assert not [p for p in (tmp_path / "ds").rglob("*") if p.name.endswith(".partial")]


# -- one run per output -----------------------------------------------------------------------------------


def test_one_run_per_output_on_an_object_store(s3):
    from voxforge.pipeline.lease import ObjectStoreLease, OutputBusyError

    where = location(f"s3://{s3.bucket('leases')}/ds")
    first = ObjectStoreLease(where, ttl_s=0.8).acquire()
    with pytest.raises(OutputBusyError, match=r"another run \(host .*\) is writing to s3://leases/ds; its lease expires"):
        ObjectStoreLease(where, ttl_s=0.8).acquire()
    time.sleep(0.5)  # renewed meanwhile: still refused after the first ttl would have run out
    time.sleep(0.5)
    with pytest.raises(OutputBusyError):
        ObjectStoreLease(where, ttl_s=0.8).acquire()

    # a run whose lease expired (a driver killed on another host) is taken over, and the old holder notices
    stale = json.loads(where.read_bytes(".voxforge/lease.json"))
    where.fs.pipe_file(where.path(".voxforge/lease.json"),
                       json.dumps({**stale, "host": "elsewhere", "expires": time.time() - 1}).encode())
    second = ObjectStoreLease(where, ttl_s=0.8).acquire()
    time.sleep(0.6)
    assert first.lost and not second.lost
    first.release()
    assert json.loads(where.read_bytes(".voxforge/lease.json"))["holder"] == second.token  # not removed by the loser
    second.release()
    assert not where.exists(".voxforge/lease.json")

    # a killed driver on this host: its pid is gone, so the lease is taken at once
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    where.fs.pipe_file(where.path(".voxforge/lease.json"), json.dumps(
        {"holder": "old", "host": socket.gethostname(), "pid": int(dead.stdout), "expires": time.time() + 60}).encode())
    ObjectStoreLease(where, ttl_s=60).acquire().release()


@pytest.mark.slow
def test_a_run_that_loses_its_lease_stops_and_leaves_the_output_alone(s3, ray_local, monkeypatch):
    import threading

    from voxforge.pipeline import lease as lease_module
    from voxforge.pipeline.run import RunError, run

    monkeypatch.setattr(lease_module, "DEFAULT_TTL_S", 0.4)  # renewed every 0.1 s
    where = location(f"s3://{s3.bucket('stolen')}/ds")

    def take_over() -> None:  # another driver, after this one's lease had expired, takes the output
        while not where.exists(".voxforge/plans"):
            time.sleep(0.05)
        where.fs.pipe_file(where.path(".voxforge/lease.json"), json.dumps(
            {"holder": "other", "host": "elsewhere", "pid": 1, "expires": time.time() + 600}).encode())

    thief = threading.Thread(target=take_over, daemon=True)
    thief.start()
    with pytest.raises(RunError, match="another run took over s3://stolen/ds"):
        run(small_config(where.url, limit=12, views=2, points=256, shard_size=1))
    thief.join(5)
    assert json.loads(where.read_bytes(".voxforge/lease.json"))["holder"] == "other"  # not removed by the loser
    assert where.exists(".voxforge/plans")  # its scratch is left for the new holder to clear


def test_one_run_per_output_on_a_local_folder(tmp_path):
    from voxforge.pipeline.lease import OutputBusyError, hold_output

    lock = hold_output(location(tmp_path))
    with pytest.raises(OutputBusyError, match="another run is writing"):
        hold_output(location(tmp_path))
    lock.release()
    hold_output(location(tmp_path)).release()


# -- whole runs --------------------------------------------------------------------------------------------


def _tars(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.glob("*/shard-*.tar"))}


@pytest.mark.slow
def test_a_run_writes_straight_to_s3_and_everything_reads_it_back(tmp_path, ray_local, s3):
    from voxforge.loaders import open_dataset
    from voxforge.loaders.torch import ShardDataset
    from voxforge.pipeline.cli import main
    from voxforge.pipeline.run import run

    bucket = s3.bucket("datasets")
    url = f"s3://{bucket}/chairs"
    summary = run(small_config(url, limit=6, views=3, points=512))
    assert summary.ok == 6 and summary.out == url
    local = tmp_path / "local"
    run(small_config(local, limit=6, views=3, points=512))
    keys = s3.keys(bucket, "chairs/")
    remote_tars = {k[len("chairs/"):]: s3.client().get_object(Bucket=bucket, Key=k)["Body"].read()
                   for k in keys if k.endswith(".tar")}
    assert remote_tars == _tars(local)  # byte-identical to the same run on a local disk
    assert not [k for k in keys if "partial" in k or "/attempts/" in k or k.endswith("lease.json")]

    samples = {s["id"]: s for s in open_dataset(url)}
    assert len(samples) == 6
    for sample in samples.values():
        for view in range(3):
            assert projection_hits(sample["points"], sample["K"][view], sample["world_to_camera"][view],
                                   sample["masks"][view]).mean() >= 0.99
    streamed = list(ShardDataset(url, split="train"))
    assert {s["id"] for s in streamed} == {s["id"] for s in samples.values() if s["split"] == "train"}
    info = json.loads(s3.client().get_object(Bucket=bucket, Key="chairs/dataset.json")["Body"].read())
    assert info["counts"]["objects"] == 6 and info["config"]["out"] == url

    assert main(["inspect", url, "--sheet", str(tmp_path / "sheet.png")]) == 0
    assert (tmp_path / "sheet.png").stat().st_size > 0
    assert main(["export", url, "--layout", "r2n2", "--out", str(tmp_path / "r2n2")]) == 0
    assert len(list((tmp_path / "r2n2").rglob("model.binvox"))) == 6
    assert main(["publish", url, "--to", str(tmp_path / "published"), "--no-progress"]) == 0
    assert _tars(tmp_path / "published") == _tars(local)  # verified, then copied out of the bucket
    assert main(["train", "--data", url, "--arch", "3d-gru-1", "--width", "0.125", "--image-size", "64",
                 "--iterations", "2", "--batch-size", "2", "--views", "1-2", "--workers", "0", "--device", "cpu",
                 "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    assert (tmp_path / "run" / "checkpoint.pt").is_file()
    assert run(small_config(url, limit=6, views=3, points=512)).skipped == 6  # resumed: nothing to do


def _cluster_command(address: str, out: str, objects: int) -> list[str]:
    return [sys.executable, "-m", "voxforge.pipeline.cli", "run", "procedural", "--limit", str(objects),
            "--views", "3", "--size", "48", "--points", "512", "--shard-size", "2", "--address", address,
            "--out", out, "--no-progress"]


@pytest.mark.slow
def test_a_cluster_run_survives_a_lost_node_and_every_object_lands_once(tmp_path, s3):
    """Three loopback nodes (every one on 127.0.0.1); one is removed mid-run; the same command again."""
    from ray.cluster_utils import Cluster

    from voxforge.loaders import open_dataset
    from voxforge.loaders.torch import ShardDataset

    bucket = s3.bucket("cluster")
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    cluster = Cluster(initialize_head=True, head_node_args={"node_ip_address": "127.0.0.1", "num_cpus": 1,
                                                            "include_dashboard": False})
    try:
        doomed = cluster.add_node(node_ip_address="127.0.0.1", num_cpus=1)
        cluster.add_node(node_ip_address="127.0.0.1", num_cpus=1)
        cluster.wait_for_nodes()
        command = _cluster_command(cluster.address, f"s3://{bucket}/ds", 18)
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 240
        while process.poll() is None and time.time() < deadline:
            if sum(k.endswith(".tar") for k in s3.keys(bucket)) >= 2:
                cluster.remove_node(doomed, allow_graceful=False)  # its worker dies mid-task
                break
            time.sleep(0.2)
        stdout, stderr = process.communicate(timeout=max(1.0, deadline - time.time()))
        assert process.returncode == 0, stderr[-3000:]
        again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
        assert again.returncode == 0 and "18 already done" in again.stdout, again.stderr[-3000:]
    finally:
        cluster.shutdown()

    keys = s3.keys(bucket, "ds/")
    tars = [k for k in keys if k.endswith(".tar")]
    for key in tars:  # every shard a whole, valid tar
        body = s3.client().get_object(Bucket=bucket, Key=key)["Body"].read()
        with tarfile.open(fileobj=__import__("io").BytesIO(body)) as tar:
            assert len(tar.getnames()) % (3 * 2 + 4) == 0
    samples = list(open_dataset(f"s3://{bucket}/ds"))
    ids = [s["id"] for s in samples]
    assert len(ids) == len(set(ids)) == 18  # every object exactly once
    for sample in samples:
        hits = projection_hits(sample["points"], sample["K"][0], sample["world_to_camera"][0], sample["masks"][0])
        assert hits.mean() >= 0.99
    assert sorted(s["id"] for s in ShardDataset(f"s3://{bucket}/ds")) == sorted(ids)
    rows = [json.loads(line) for line in s3.client().get_object(Bucket=bucket, Key="ds/manifest.jsonl")["Body"].read()
            .decode().splitlines()]
    assert Counter(r["status"] for r in rows) == {"ok": 18}


@pytest.mark.slow
def test_object_store_faults_never_show_a_partial_shard(tmp_path, s3):
    """Throttling, 5xx and a connection cut mid-upload are retried; a store that keeps refusing one shard
    stops the run with its reason, and the same command completes once the store recovers."""
    from s3_fixtures import FaultProxy

    from voxforge.loaders import open_dataset

    bucket = s3.bucket("faulty")
    proxy = FaultProxy(s3.endpoint)
    env = {**os.environ, "AWS_ENDPOINT_URL": proxy.endpoint, "AWS_MAX_ATTEMPTS": "3", "AWS_RETRY_MODE": "standard"}
    command = [sys.executable, "-m", "voxforge.pipeline.cli", "run", "procedural", "--limit", "12", "--views", "2",
               "--size", "32", "--points", "256", "--shard-size", "2", "--workers", "2", "--out", f"s3://{bucket}/ds",
               "--no-progress"]
    try:
        proxy.add("PUT", r"/train/shard-00000[0-2]\.tar", "status:503", times=2)  # SlowDown
        proxy.add("PUT", r"/val/shard-000000\.tar", "status:500", times=1)
        proxy.add("PUT", r"/train/shard-000003\.tar", "cut", times=1)  # the connection drops mid-body
        proxy.add("PUT", r"/test/shard-000000\.tar", "status:500", times=-1)  # refused until the store recovers
        first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert first.returncode == 2, first.stderr[-3000:]
        assert "cannot write test/shard-000000.tar" in first.stderr and "run the same command" in first.stderr
        assert "objects are safely written there" in first.stderr
        keys = s3.keys(bucket, "ds/")
        assert "ds/test/shard-000000.tar" not in keys and not [k for k in keys if "partial" in k]
        proxy.faults = [fault for fault in proxy.faults if fault.times >= 0]  # the store recovers
        second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert second.returncode == 0, second.stderr[-3000:]
        assert {503, 500, -1} <= {status for _, _, status in proxy.log}  # every kind of fault was met
    finally:
        proxy.stop()
    ids = [s["id"] for s in open_dataset(f"s3://{bucket}/ds")]
    assert len(ids) == len(set(ids)) == 12
    manifests = [k for k in s3.keys(bucket, "ds/.voxforge/shards/")]
    tars = [k for k in s3.keys(bucket, "ds/") if k.endswith(".tar")]
    assert len(manifests) == len(tars)  # every tar has its manifest; no manifest without its tar
    np.testing.assert_equal(sorted(ids), sorted(json.loads(l)["id"] for l in  # noqa: E741
                            s3.client().get_object(Bucket=bucket, Key="ds/manifest.jsonl")["Body"].read().splitlines()))
