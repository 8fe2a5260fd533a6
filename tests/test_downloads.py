"""Downloads against a loopback server: retries per fault, verified and atomic files, the Hub's endpoint and
token rules, range reads, a cache shared by concurrent runs, and hostile archives."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import threading
import zipfile
from pathlib import Path

import pytest
from http_fixtures import LoopbackServer

from voxforge.pipeline.downloads.archives import ArchiveError, extract_prefix, safe_id, safe_member_path
from voxforge.pipeline.downloads.cache import evict, path_lock
from voxforge.pipeline.downloads.http import DownloadError, DownloadSettings, RangeFile, fetch_file
from voxforge.pipeline.downloads.hub import hub_endpoint, hub_file_url, origin
from voxforge.pipeline.sources.licenses import license_filter, license_slug

FAST = DownloadSettings(timeout=1.0, retries=2, backoff=0.01)
TOKEN = "hf_loopbackTestToken0123456789"


@pytest.fixture(scope="module")
def server():
    fixture = LoopbackServer(slow_s=2.0)
    yield fixture
    fixture.close()


@pytest.fixture(autouse=True)
def no_saved_login(tmp_path, monkeypatch):
    """No test may pick up a real token from this machine's saved login."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_TOKEN", raising=False)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".partial"))


@pytest.mark.parametrize("fault", ["500", "503", "429", "reset", "truncate", "slow", "corrupt"])
def test_a_transient_fault_is_retried_and_the_file_is_exact(server, tmp_path, fault):
    data = os.urandom(300_000)
    path = f"/plain/{fault}.bin"
    url = server.add_file(path, data)
    server.fault(path, fault)
    sha = hashlib.sha256(data).hexdigest()
    result = fetch_file(url, tmp_path / "file.bin", FAST, sha256=sha)
    assert result.downloaded and result.path.read_bytes() == data
    assert [r.method for r in server.requests_for(path)] == ["GET", "GET"]
    assert leftovers(tmp_path) == []


def test_hub_files_are_verified_by_the_linked_etag(server, tmp_path, monkeypatch):
    """The Hub's redirect names the sha256 (X-Linked-Etag): a corrupted body is caught without a table."""
    monkeypatch.setenv("HF_ENDPOINT", server.url + "/")
    data = os.urandom(50_000)
    server.add_repo("org/public", {"data/file.bin": data})
    url = hub_file_url("org/public", "data/file.bin")
    assert url == f"{server.url}/datasets/org/public/resolve/main/data/file.bin"  # HF_ENDPOINT, "/" stripped
    server.fault("org/public/data/file.bin", "corrupt")
    result = fetch_file(url, tmp_path / "file.bin", FAST, hub_origin=origin(hub_endpoint()))
    assert result.path.read_bytes() == data and result.sha256 == hashlib.sha256(data).hexdigest()
    assert len(server.requests_for("/cdn/")) >= 2


def test_permanent_failures_stop_at_once_with_their_reason(server, tmp_path):
    missing = server.url + "/plain/absent.bin"
    with pytest.raises(DownloadError, match=r"not found \(HTTP 404\)") as error:
        fetch_file(missing, tmp_path / "absent.bin", FAST)
    assert error.value.status == 404 and len(server.requests_for("/plain/absent.bin")) == 1

    url = server.add_file("/plain/always500.bin", b"x" * 10)
    server.fault("/plain/always500.bin", "always:500")
    with pytest.raises(DownloadError, match=r"HTTP 500.*gave up after 3 attempts"):
        fetch_file(url, tmp_path / "always500.bin", FAST)
    assert len(server.requests_for("/plain/always500.bin")) == FAST.retries + 1

    data = b"y" * 1000
    url = server.add_file("/plain/wrong.bin", data)
    with pytest.raises(DownloadError, match=r"modified: sha256 is .*gave up after 2 attempts"):
        fetch_file(url, tmp_path / "wrong.bin", FAST, sha256="0" * 64, mismatch_label="modified")
    for name in ("absent.bin", "always500.bin", "wrong.bin"):
        assert not (tmp_path / name).exists()  # never a partial or wrong file under the final name
    assert leftovers(tmp_path) == []


def test_a_killed_downloads_temporary_is_never_used_and_is_cleaned_up(server, tmp_path):
    url = server.add_file("/plain/killed.bin", b"z" * 1000)
    orphan = tmp_path / ".killed.bin.999.deadbeef.partial"  # what a kill -9 mid-download leaves
    orphan.write_bytes(b"zz")
    assert fetch_file(url, tmp_path / "killed.bin", FAST).path.read_bytes() == b"z" * 1000
    assert not orphan.exists()


def test_two_runs_fetching_the_same_file_download_it_once(server, tmp_path):
    data = os.urandom(200_000)
    url = server.add_file("/plain/shared.bin", data)
    server.fault("/plain/shared.bin", "slow")  # the first download takes a while; the second waits for it
    settings = DownloadSettings(timeout=5.0, retries=1, backoff=0.01)
    results = []
    threads = [threading.Thread(target=lambda: results.append(fetch_file(url, tmp_path / "shared.bin", settings)))
               for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r.downloaded for r in results) == [False, True]
    assert (tmp_path / "shared.bin").read_bytes() == data
    assert len([r for r in server.requests_for("/plain/shared.bin") if r.method == "GET"]) == 1


def test_the_token_goes_to_the_hub_only_and_a_refusal_says_what_to_do(server, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    server.add_repo("Gated/Data", {"a.zip": b"zip bytes"}, token=TOKEN)
    url = hub_file_url("Gated/Data", "a.zip")
    hub = origin(server.url)
    with pytest.raises(DownloadError) as error:
        fetch_file(url, tmp_path / "a.zip", FAST, hub_origin=hub, repo_id="Gated/Data")
    message = str(error.value)
    assert "HTTP 401" in message and "no Hugging Face token" in message
    assert f"request access at {server.url}/datasets/Gated/Data" in message

    monkeypatch.setenv("HF_TOKEN", "hf_wrongToken00000000000000")
    with pytest.raises(DownloadError) as error:
        fetch_file(url, tmp_path / "a.zip", FAST, hub_origin=hub, repo_id="Gated/Data")
    assert "HTTP 403" in str(error.value) and "hf_wrongToken" not in str(error.value)

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    before = len(server.log)
    assert fetch_file(url, tmp_path / "a.zip", FAST, hub_origin=hub, repo_id="Gated/Data").path.read_bytes() == b"zip bytes"
    hub_request, cdn_request = server.log[before:before + 2]
    assert hub_request.headers.get("authorization") == f"Bearer {TOKEN}"
    assert cdn_request.host.startswith("localhost") and "authorization" not in cdn_request.headers


def test_range_reads_fetch_only_the_bytes_asked_for(server):
    data = os.urandom(3_000_000)
    url = server.add_file("/plain/big.bin", data)
    server.fault("/plain/big.bin", "truncate")  # a damaged range is retried like a damaged file
    reader = RangeFile(url, len(data), FAST, block_size=1 << 16)
    reader.seek(2_000_000)
    assert reader.read(1000) == data[2_000_000:2_001_000]
    reader.seek(-10, io.SEEK_END)
    assert reader.read() == data[-10:]
    served = [r for r in server.requests_for("/plain/big.bin") if r.status == 206]
    assert sum(int(r.headers["range"].split("-")[1]) - int(r.headers["range"][6:].split("-")[0]) + 1
               for r in served) <= 3 * (1 << 16)


def make_zip(members: dict[str, bytes], links: tuple[str, ...] = ()) -> zipfile.ZipFile:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            if name in links:
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, data)
    return zipfile.ZipFile(io.BytesIO(buffer.getvalue()))


@pytest.mark.parametrize("members, links, message", [
    ({"obj/../../escape.txt": b"x", "obj/model.obj": b"v 0 0 0"}, (), "outside"),
    ({"obj//etc/passwd": b"x"}, (), "unsafe"),
    ({"obj/a\\..\\b": b"x"}, (), "unsafe"),
    ({"obj/model.obj": b"v 0 0 0", "obj/link": b"/etc/passwd"}, ("obj/link",), "symbolic link"),
    ({"obj/bomb.bin": bytes(40 << 20)}, (), "zip bomb"),
])
def test_hostile_archives_are_refused_and_leave_nothing(tmp_path, members, links, message):
    dest = tmp_path / "cache" / "model"
    with pytest.raises(ArchiveError, match=message):
        extract_prefix(make_zip(members, links), "obj/", dest, max_bytes=8 << 20)
    assert not dest.exists()
    cache = tmp_path / "cache"
    assert not cache.exists() or [p.name for p in cache.iterdir() if not p.name.endswith(".lock")] == []
    assert not (tmp_path / "escape.txt").exists()


def test_a_good_archive_extracts_atomically(tmp_path):
    names = extract_prefix(make_zip({"s/m/models/model.obj": b"v 0 0 0", "s/m/images/t.png": b"png",
                                     "s/other/x.obj": b"nope"}), "s/m/", tmp_path / "m", max_bytes=1 << 20)
    assert sorted(names) == ["images/t.png", "models/model.obj"]
    assert (tmp_path / "m" / "models" / "model.obj").read_bytes() == b"v 0 0 0"
    assert not (tmp_path / "m" / "x.obj").exists()


def test_ids_and_member_names_are_checked_before_they_become_paths():
    for bad in ("../x", "a/b", "", ".", "x" * 200, "/abs", "a\x00b"):
        with pytest.raises(ArchiveError):
            safe_id(bad)
    assert safe_id("341fcdd8a40a2612456cbf78e1e89022") == "341fcdd8a40a2612456cbf78e1e89022"
    assert str(safe_member_path("models/model_normalized.obj")) == "models/model_normalized.obj"


def test_eviction_waits_for_readers_and_prefetching_stays_a_few_objects_ahead(tmp_path, server):
    target = tmp_path / "mesh.glb"
    target.write_bytes(b"glb")
    with path_lock(target, shared=True):
        assert evict(target) is False and target.exists()  # a concurrent run is reading it
    assert evict(target) is True and not target.exists()

    from voxforge.pipeline.sources import ObjectRecord
    from voxforge.pipeline.worker import Prefetcher

    records = []
    for i in range(5):
        url = server.add_file(f"/prefetch/{i}.glb", b"mesh %d" % i)
        fetch = {"kind": "file", "url": url, "dest": str(tmp_path / "cache" / f"{i}.glb"),
                 "settings": {"timeout": 1.0, "retries": 0, "backoff": 0.01}}
        records.append(ObjectRecord(f"o{i}", "thing", "objaverse", url, fetch=fetch))
    records[3].fetch["url"] = server.url + "/prefetch/missing.glb"
    fetcher = Prefetcher(records, downloads=1, keep_meshes=False)
    assert fetcher.wait(records[0]) == ""
    assert fetcher.submitted == 2  # the object in hand and one ahead, not the whole task
    fetcher.release(records[0])
    assert not (tmp_path / "cache" / "0.glb").exists()  # evicted once its sample is made
    assert fetcher.wait(records[1]) == "" and (tmp_path / "cache" / "1.glb").read_bytes() == b"mesh 1"
    assert fetcher.wait(records[3]).startswith("download: ")  # a failure is a reason, not an exception
    fetcher.close()  # fetched but never used (object 2, 4): evicted too
    assert not list((tmp_path / "cache").glob("*.glb"))


def test_mirrors_and_licence_slugs():
    settings = DownloadSettings(mirrors=(("https://3d-api.si.edu", "http://m/si"), ("https://3d-api.si.edu/x", "http://n")))
    assert settings.rewrite("https://3d-api.si.edu/x/a.glb") == "http://n/a.glb"  # longest prefix wins
    assert settings.rewrite("https://3d-api.si.edu/y.glb") == "http://m/si/y.glb"
    assert settings.rewrite("https://elsewhere/y.glb") == "https://elsewhere/y.glb"
    cases = {"by": "by", "CC-BY 4.0": "by", "Creative Commons - Attribution - Share Alike": "by-sa",
             "Attribution-NonCommercial-NoDerivatives": "by-nc-nd", "by-nc-sa": "by-nc-sa", "CC0": "cc0",
             "Creative Commons - Public Domain Dedication": "cc0", "MIT License": "mit", None: "unknown"}
    assert {text: license_slug(text) for text in cases} == cases
    commercial = license_filter(["commercial"])
    assert [s for s in ("by", "by-nc", "cc0", "by-nc-sa", "mit") if commercial(s)] == ["by", "cc0", "mit"]
    assert license_filter(None) is None
