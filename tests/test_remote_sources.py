"""ShapeNet, Objaverse and Objaverse-XL against a loopback stand-in for the Hub and the other hosts:
selection (LVIS names, licences, seeds, splits, filters), streaming fetches, refusals, and whole runs
through Ray (faults recorded, resume to completion, attribution, eviction)."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from http_fixtures import (
    LoopbackServer,
    objaverse_files,
    objaverse_xl_files,
    shapenet_zips,
    uid_of,
    xl_mirrors,
)

from voxforge.pipeline.config import RunConfig
from voxforge.pipeline.downloads.http import DownloadError
from voxforge.pipeline.downloads.materialize import ensure_local
from voxforge.pipeline.sources import SourceError, UnknownCategoryError, create_source

TOKEN = "hf_loopbackShapeNetToken987654"
CHAIRS = ["03001627/341fcdd8a40a2612456cbf78e1e89022", "03001627/360b02dcfeabe768492d9da2668ec34c"]


@pytest.fixture(scope="module")
def hub(shared_data):
    server = LoopbackServer()
    files, uids = objaverse_files(shared_data)
    server.add_repo("allenai/objaverse", files)
    server.add_repo("allenai/objaverse-xl", objaverse_xl_files(shared_data, server, uids))
    server.zips = shapenet_zips(shared_data)
    server.add_repo("ShapeNet/ShapeNetCore", server.zips, token=TOKEN)
    server.uids = uids
    yield server
    server.close()


@pytest.fixture(autouse=True)
def endpoint(request, monkeypatch, tmp_path):
    if "hub" in request.fixturenames:
        monkeypatch.setenv("HF_ENDPOINT", request.getfixturevalue("hub").url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # never a real saved login
    monkeypatch.delenv("HF_TOKEN", raising=False)


def config(tmp_path, source, **values) -> RunConfig:
    base = dict(source=source, cache=str(tmp_path / "cache"), download_backoff=0.01, download_timeout=5.0,
                out=str(tmp_path / "out"), views=4, size=64, points=1024, workers=2, progress=False, shard_size=4)
    return RunConfig(**{**base, **values})


# -- Objaverse 1.0 ------------------------------------------------------------------------------------

def test_objaverse_categories_resolve_against_lvis(hub, tmp_path):
    source = create_source("objaverse", config=config(tmp_path, "objaverse"))
    records = source.select(["chair", "bus"], None)
    assert source.selection_notes() == ["objaverse: chair -> chair (3): 3 objects",
                                        "objaverse: bus -> bus_(vehicle) (2), school_bus (1): 3 objects"]
    by_category = {c: sorted(r.extra["lvis_category"] for r in records if r.category == c) for c in ("chair", "bus")}
    assert by_category == {"chair": ["chair"] * 3, "bus": ["bus_(vehicle)", "bus_(vehicle)", "school_bus"]}
    chair = next(r for r in records if r.object_id == hub.uids["chair-b"])
    assert chair.license == "by-nc" and chair.extra["license_name"] == "CC BY-NC 4.0"
    assert chair.extra["author"] == "Maker 1" and chair.extra["source_url"].endswith(hub.uids["chair-b"])
    assert chair.uri == f"{hub.url}/datasets/allenai/objaverse/resolve/main/{chair.fetch['dest'].split('hf-objaverse-v1/')[1]}"
    with pytest.raises(UnknownCategoryError, match="closest LVIS names: chair"):
        source.select(["chiar"], None)


def test_objaverse_licences_limit_and_seeded_sampling(hub, tmp_path):
    def pick(seed, **values):
        return [r.object_id for r in create_source("objaverse", config=config(tmp_path, "objaverse", seed=seed, **values))
                .select(["chair", "bus"], values.get("limit"))]

    commercial = pick(0, licenses=["commercial"])
    assert hub.uids["chair-b"] not in commercial and len(commercial) == 5
    assert pick(0, limit=4) == pick(0, limit=4)  # deterministic
    assert len({tuple(pick(seed, limit=4)) for seed in range(6)}) > 1  # the seed chooses
    two = create_source("objaverse", config=config(tmp_path, "objaverse")).select(["chair", "bus"], 2)
    assert sorted(r.category for r in two) == ["bus", "chair"]  # a limit stays balanced


def test_hostile_annotation_entries_never_become_paths(tmp_path):
    """Entries of object-paths.json.gz that are not a uid and a glbs/NNN-NNN/<uid>.glb path are dropped."""
    folder = tmp_path / "cache" / "objaverse" / "hf-objaverse-v1"
    folder.mkdir(parents=True)
    good = uid_of("good")
    paths = {good: f"glbs/000-001/{good}.glb", "../../etc": "glbs/000-001/x.glb", uid_of("bad"): "../../../etc/passwd"}
    (folder / "object-paths.json.gz").write_bytes(gzip.compress(json.dumps(paths).encode()))
    source = create_source("objaverse", config=config(tmp_path, "objaverse"))
    assert source.annotations.object_paths() == {good: f"glbs/000-001/{good}.glb"}  # read from the cache, offline


# -- Objaverse-XL ---------------------------------------------------------------------------------------

def test_objaverse_xl_filters_report_what_they_kept(hub, tmp_path):
    plain = create_source("objaverse-xl", config=config(tmp_path, "objaverse-xl", mirrors=xl_mirrors(hub)))
    records = plain.select(["chair", "bus"], None)
    assert plain.selection_notes()[:2] == [
        "objaverse-xl: annotations: 14 objects (sketchfab 8, smithsonian 2, thingiverse 2, github 2)",
        "objaverse-xl: file types glb,gltf,obj,stl,ply,off: kept 13 of 14"]
    assert {r.extra["xl_source"] for r in records} == {"sketchfab"}  # no keywords: only LVIS-labelled objects
    assert "without LVIS labels skipped (--match-keywords)" in plain.selection_notes()[2]

    keywords = create_source("objaverse-xl", config=config(tmp_path, "objaverse-xl", mirrors=xl_mirrors(hub),
                                                          match_keywords=True, licenses=["commercial"]))
    records = keywords.select(["chair", "bus"], None)
    assert "licences commercial: kept 12 of 13" in keywords.selection_notes()[2]
    found = {(r.extra["xl_source"], r.category) for r in records}
    assert {("github", "chair"), ("smithsonian", "chair"), ("thingiverse", "bus")} <= found
    github = next(r for r in records if r.extra["xl_source"] == "github")
    assert github.uri.startswith("https://raw.githubusercontent.com/maker/furniture/")  # the real address is kept
    assert github.fetch["url"].startswith(hub.url + "/github-raw/")  # and fetched through the mirror
    assert github.license == "mit" and github.extra["author"] == "maker"


def test_objaverse_xl_found_missing_and_modified(hub, tmp_path):
    source = create_source("objaverse-xl", config=config(tmp_path, "objaverse-xl", mirrors=xl_mirrors(hub),
                                                        match_keywords=True, xl_sources=["smithsonian", "thingiverse"]))
    outcome = {}
    for record in source.select(["chair", "bus"], None):
        try:
            ensure_local(record.fetch)
            outcome[record.object_id.split("/")[0] + ":" + record.extra["name"]] = "found"
        except DownloadError as error:
            outcome[record.object_id.split("/")[0] + ":" + record.extra["name"]] = str(error).split(":")[0]
    assert outcome == {"smithsonian:Windsor chair": "found", "smithsonian:Lost chair": "missing upstream",
                       "thingiverse:toy bus": "found", "thingiverse:bus shelter": "modified"}


# -- ShapeNet -------------------------------------------------------------------------------------------

def test_shapenet_from_the_gated_hub_streams_single_objects(hub, tmp_path, monkeypatch, capsys):
    from voxforge.pipeline.cli import main

    assert main(["run", "shapenet", "--categories", "chair", "--out", str(tmp_path / "refused"), "--cache",
                 str(tmp_path / "cache")]) == 2
    assert f"no Hugging Face token was found: request access at {hub.url}/datasets/ShapeNet/ShapeNetCore" in capsys.readouterr().err
    monkeypatch.setenv("HF_TOKEN", "hf_notTheRightOne0000000000")
    with pytest.raises(SourceError, match="HTTP 403") as refused:
        create_source("shapenet", config=config(tmp_path, "shapenet")).select(["chair"], None)
    assert "hf_notTheRightOne" not in str(refused.value)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    source = create_source("shapenet", config=config(tmp_path, "shapenet"))
    records = source.select(["chair"], None)
    assert [r.object_id for r in records] == CHAIRS and source.selection_notes() == ["shapenet: chair -> 03001627 (2 models)"]
    before = len(hub.log)
    hub.fault("ShapeNet/ShapeNetCore/03001627.zip", "500", "truncate")  # range reads are retried too
    path, downloaded = ensure_local(records[1].fetch)
    assert downloaded and path.name == "model_normalized.obj" and (path.parent / "model_normalized.mtl").is_file()
    fetched = [r for r in hub.log[before:] if r.path.startswith("/cdn/") and r.status == 206]
    assert len([r for r in hub.log[before:] if r.status == 500]) == 1
    assert all(r.headers.get("range") for r in fetched) and "authorization" not in str([r.headers for r in fetched])
    served = sum(int(r.headers["range"].split("-")[1]) - int(r.headers["range"][6:].split("-")[0]) + 1 for r in fetched)
    assert served < len(hub.zips["03001627.zip"])  # this object's members, not the archive
    assert len(source.load_record(records[1]).geometry) >= 1


def test_shapenet_zips_on_disk_folders_and_the_r2n2_split(hub, shared_data, tmp_path):
    zips = tmp_path / "zips"
    zips.mkdir()
    for name, data in hub.zips.items():
        (zips / name).write_bytes(data)
    split_file = str(shared_data / "r2n2" / "ShapeNet.json")
    from_zips = create_source("shapenet", config=config(tmp_path, "shapenet", path=str(zips)))
    records = from_zips.select(["aeroplane", "03001627"], None)
    assert sorted(r.category for r in records) == ["airplane", "airplane", "chair", "chair"]
    path, downloaded = ensure_local(records[0].fetch)
    assert downloaded and path.is_file() and records[0].uri.startswith(records[0].synset_id + ".zip#")

    folder = create_source("shapenet", config=config(tmp_path, "shapenet", path=str(shared_data / "shapenetcore_v2"),
                                                    split_mode="r2n2", split_file=split_file))
    r2n2 = folder.select(["r2n2"], None)
    assert {r.category for r in r2n2} == {"airplane", "bench", "chair"}  # bottle is not a 3D-R2N2 class
    assert {r.object_id: r.split for r in r2n2 if r.category == "chair"} == {CHAIRS[0]: "train", CHAIRS[1]: "val"}
    assert all(not os.path.isabs(r.uri) for r in r2n2) and ensure_local(r2n2[0].fetch) == (Path(r2n2[0].fetch["dest"]), False)


def test_the_r2n2_split_file_is_fetched_once_and_verified(hub, shared_data, tmp_path):
    from voxforge.pipeline.sources.shapenet import R2N2_SPLIT_URL

    mirror = {"https://raw.githubusercontent.com": f"{hub.url}/github-raw"}
    served = R2N2_SPLIT_URL.replace("https://raw.githubusercontent.com", "/github-raw")
    with pytest.raises(SourceError, match="cannot get 3D-R2N2's split file.*give a copy with --split-file"):
        create_source("shapenet", config=config(tmp_path, "shapenet", split_mode="r2n2", mirrors=mirror,
                                                download_retries=0))  # not on the server yet: 404
    hub.add_file(served, b"[]")  # the wrong bytes: refused by the pinned checksum
    with pytest.raises(SourceError, match="checksum mismatch"):
        create_source("shapenet", config=config(tmp_path, "shapenet", split_mode="r2n2", mirrors=mirror,
                                                download_retries=1))
    hub.add_file(served, (shared_data / "r2n2" / "ShapeNet.json").read_bytes())
    before = len(hub.requests_for(served))
    for _ in range(2):
        source = create_source("shapenet", config=config(tmp_path, "shapenet", split_mode="r2n2", mirrors=mirror,
                                                        path=str(shared_data / "shapenetcore_v2")))
        chairs = {r.object_id: r.split for r in source.select(["chair"], None)}
        assert chairs == {CHAIRS[0]: "train", CHAIRS[1]: "val"}
    assert len(hub.requests_for(served)) == before + 1  # fetched once, then read from the cache


# -- whole runs through Ray -----------------------------------------------------------------------------

def samples_of(out):
    from voxforge.loaders import open_dataset

    return list(open_dataset(out))


@pytest.mark.slow
def test_pipeline_run_objaverse_chair_bus(hub, tmp_path, ray_local, capsys):
    from voxforge.pipeline.cli import main

    out, cache = tmp_path / "out", tmp_path / "cache"
    code = main(["run", "objaverse", "--categories", "chair,bus", "--limit", "4", "--out", str(out), "--cache",
                 str(cache), "--views", "4", "--size", "64", "--points", "1024", "--workers", "2", "--no-progress"])
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr
    assert "objaverse: bus -> bus_(vehicle) (2), school_bus (1): 3 objects" in stderr
    assert "selected 4 objects: chair 2, bus 2" in stderr and "done: 4 ok, 0 failed" in stdout
    samples = samples_of(out)
    assert sorted(s["category"] for s in samples) == ["bus", "bus", "chair", "chair"]
    for sample in samples:
        meta = sample["meta"]
        assert meta["extra"]["author"].startswith("Maker") and meta["extra"]["uid"] == sample["id"]
        assert meta["license"] in ("by", "by-sa", "by-nc", "cc0") and meta["source_sha256"]
        assert sample["images"].shape == (4, 64, 64, 3) and sample["voxels"].any()
    info = json.loads((out / "dataset.json").read_text())
    assert info["attribution"] == {"file": "attribution.csv", "objects": 4, "authors": 4}
    assert len((out / "attribution.csv").read_text().splitlines()) == 5
    assert not list((cache / "objaverse").rglob("*.glb"))  # meshes evicted once their samples were made
    from voxforge.pipeline.publish import publish

    publish(out, str(tmp_path / "published"), progress=False)  # the credits travel with the data
    assert (tmp_path / "published" / "attribution.csv").read_text() == (out / "attribution.csv").read_text()
    assert str(tmp_path) not in (tmp_path / "published" / "dataset.json").read_text()


@pytest.mark.slow
def test_a_faulty_run_records_its_failures_and_a_rerun_completes(hub, tmp_path, ray_local):
    from voxforge.pipeline.run import run

    run_config = config(tmp_path, "objaverse-xl", mirrors=xl_mirrors(hub), match_keywords=True, download_retries=2,
                        categories=["chair", "bus"], xl_sources=["smithsonian", "thingiverse", "github"],
                        keep_meshes=True)
    obj = "/github-raw/maker/furniture/ead0bed6a76012452273bbe18d12e4d68a881956/models/office_chair.obj"
    hub.fault(obj, "reset", "truncate")  # transient: fine on the third attempt
    hub.fault("/thingiverse/download:5678", "always:503")  # down for the whole first run
    summary = run(run_config)
    assert summary.ok == 2 and summary.failed == 3, summary.report()  # ok: the chair OBJ (3rd try), Windsor chair

    def kind(reason: str) -> str:
        return next(k for k in ("missing upstream: not found (HTTP 404)", "modified: sha256", "HTTP 503") if k in reason)

    assert sorted(kind(reason) for _, reason in summary.failures) == [
        "HTTP 503", "missing upstream: not found (HTTP 404)", "modified: sha256"]
    assert all(reason.startswith("download: ") for _, reason in summary.failures)
    manifest = [json.loads(line) for line in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    assert {r["id"]: r["error"] for r in manifest if r["status"] == "failed"} == dict(summary.failures)
    assert sum(r["status"] == "ok" for r in manifest) == 2

    hub.faults.clear()  # the hosts recover; the lost Smithsonian file reappears
    hub.add_file("/si/3d_package:gone-1/gone.glb", hub.files["/si/3d_package:chair-1/chair.glb"])
    again = run(RunConfig.from_dict({**run_config.as_dict(), "retry_failed": True}))
    assert again.skipped == 2 and again.ok == 2 and again.failed == 1  # modified upstream stays failed
    assert "modified" in again.failures[0][1]
    ids = [s["id"] for s in samples_of(tmp_path / "out")]
    assert len(ids) == len(set(ids)) == 4
    assert list((tmp_path / "cache" / "objaverse-xl").rglob("*.obj"))  # --keep-meshes kept them


@pytest.mark.slow
def test_pipeline_run_shapenet_chair_from_the_gated_hub(hub, tmp_path):
    """The command a user types, in its own process (its Ray workers get HF_TOKEN from the environment)."""
    short = Path(tempfile.mkdtemp(prefix="vf"))  # Ray's socket paths must stay short
    try:
        env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf"), "TMPDIR": str(short),
               "RAY_USAGE_STATS_ENABLED": "0"}
        command = [sys.executable, "-m", "voxforge.pipeline.cli", "run", "shapenet", "--categories", "chair",
                   "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache"), "--views", "4", "--size", "64",
                   "--points", "1024", "--workers", "1", "--no-progress", "--download-backoff", "0.01"]
        done = subprocess.run(command, env={**env, "HF_TOKEN": TOKEN}, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "shapenet: chair -> 03001627 (2 models)" in done.stderr and "done: 2 ok, 0 failed" in done.stdout
        samples = samples_of(tmp_path / "out")
        assert sorted(s["id"] for s in samples) == CHAIRS
        written = [p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()]
        assert not any(TOKEN.encode() in data for data in written)  # shards, manifest, dataset.json
        assert TOKEN not in done.stderr + done.stdout
    finally:
        shutil.rmtree(short, ignore_errors=True)
