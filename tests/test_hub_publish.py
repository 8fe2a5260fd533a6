"""Publishing to the Hugging Face Hub and reading it back, against the loopback stand-in.

The real client runs in child processes: huggingface_hub and datasets read ``HF_ENDPOINT`` when they
are imported, and another test may already have imported them in this process. Each child gets
``HF_ENDPOINT`` (the stand-in), ``HF_HUB_DISABLE_XET=1`` (the stand-in speaks the LFS protocol, not
Xet) and its own ``HF_HOME``; the publish runs log at debug level (``HF_DEBUG=1``) so a leaked token
would show.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from hub_standin import HubStandIn

from voxforge.loaders import open_dataset
from voxforge.loaders.shards import shard_paths
from voxforge.pipeline.publish import public_summary

pytest.importorskip("huggingface_hub")
pytest.importorskip("datasets")
pytestmark = pytest.mark.slow  # the dataset is made by a Ray run
REPO = "tester/voxforge-small"


def _published_summary(dataset: Path) -> dict:
    return public_summary(json.loads((dataset / "dataset.json").read_text()))


def _env(hub: HubStandIn, home: Path, token: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(HF_ENDPOINT=hub.endpoint, HF_HUB_DISABLE_XET="1", HF_HOME=str(home), HF_HUB_DISABLE_TELEMETRY="1",
               HF_HUB_VERBOSITY="debug", HF_DEBUG="1", HF_HUB_DISABLE_IMPLICIT_TOKEN="0")
    if token:
        env["HF_TOKEN"] = token
    return env


def _publish(dataset: Path, env: dict, *extra: str, repo: str = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "voxforge.pipeline.cli", "publish", str(dataset), "--to",
                           f"hf://datasets/{repo}", "--no-progress", *extra],
                          capture_output=True, text=True, env=env, timeout=240)


@pytest.fixture(scope="module")
def hub():
    with HubStandIn() as standin:
        yield standin


@pytest.fixture(scope="module")
def published(hub, split_dataset, tmp_path_factory):
    """Publish with the second commit failing on the server, then publish again (the resume)."""
    home = tmp_path_factory.mktemp("hf-home")
    hub.fail_on["commit"] = {2}
    first = _publish(split_dataset, _env(hub, home, hub.token), "--files-per-commit", "4")
    uploads_after_first = [r["path"] for r in hub.requests("storage-upload")]
    second = _publish(split_dataset, _env(hub, home, hub.token), "--files-per-commit", "4")
    return {"first": first, "second": second, "uploads_after_first": uploads_after_first, "home": home}


def test_an_interrupted_publish_resumes_without_uploading_twice(published, hub, split_dataset):
    first, second = published["first"], published["second"]
    assert first.returncode == 2, first.stderr
    assert "stopped after 4 of 15 files" in first.stderr and "run the same command again to resume" in first.stderr
    assert second.returncode == 0, second.stderr
    assert "uploaded 11 files in 4 commits (4 already there)" in second.stdout  # 8 shards, 3 Parquet, 4 others
    files = hub.files(REPO)
    for split in ("train", "val", "test"):
        for shard in shard_paths(split_dataset / split):
            assert files[f"{split}/{shard.name}"] == shard.read_bytes()
    assert json.loads(files["dataset.json"]) == _published_summary(split_dataset)
    assert str(split_dataset).encode() not in files["dataset.json"]  # local paths stay home
    uploads = [r["path"] for r in hub.requests("storage-upload")]
    assert len(uploads) == len(set(uploads))  # LFS objects of the failed commit were not sent again
    assert set(published["uploads_after_first"]) < set(uploads)
    repo = hub.repos[("dataset", REPO)]
    assert repo.private  # private unless --public
    assert [title for _, title, _ in repo.commits][-1] == "voxforge: publish dataset (part 4 of 4)"
    assert files["README.md"] == hub.files(REPO, revision=repo.commits[-1][0])["README.md"]
    commit_requests = hub.requests("commit")
    assert all(r["headers"].get("Content-Type") == "application/x-ndjson" for r in commit_requests)


def test_the_card_describes_the_dataset_for_the_hub(published, hub):
    card = hub.files(REPO)["README.md"].decode()
    front = yaml.safe_load(card.split("---")[1])
    assert front["license"] == "cc0-1.0" and front["size_categories"] == ["n<1K"]
    assert [f["split"] for f in front["configs"][0]["data_files"]] == ["train", "validation", "test"]
    assert front["configs"][0]["data_files"][0]["path"] == "data/train-*.parquet"  # the Parquet copy: any datasets
    assert hub.files(REPO)["data/train-00000-of-00001.parquet"].startswith(b"PAR1")
    assert f'load_dataset("{REPO}"' in card and f'"hf://datasets/{REPO}"' in card
    assert hub.files(REPO)["preview.png"].startswith(b"\x89PNG")


def test_the_token_never_leaks(published, hub, split_dataset):
    token = hub.token
    for run in (published["first"], published["second"]):
        assert token not in run.stdout and token not in run.stderr
        assert "<TOKEN>" in run.stderr or "authenticated: True" in run.stderr  # debug logging was really on
    assert all(token.encode() not in data for data in hub.files(REPO).values())
    assert all(token.encode() not in p.read_bytes() for p in split_dataset.rglob("*") if p.is_file())
    storage = hub.requests("storage-upload") + hub.requests("storage-download")
    assert storage and all(r["authorization"] is None for r in storage)  # never sent to the storage origin
    api_writes = hub.requests("commit") + hub.requests("preupload")
    assert all(r["authorization"] == f"Bearer {token}" for r in api_writes)


def test_saved_login_public_repos_and_clear_token_errors(hub, split_dataset, tmp_path):
    home, copy = tmp_path / "home", "tester/public-copy"
    home.mkdir()
    missing = _publish(split_dataset, _env(hub, home, None), repo=copy)
    assert missing.returncode == 2 and "no Hugging Face token" in missing.stderr
    wrong = _publish(split_dataset, _env(hub, home, "hf_wrong_token_value"), repo=copy)
    assert wrong.returncode == 2 and "refused the token" in wrong.stderr
    assert "hf_wrong_token_value" not in wrong.stderr + wrong.stdout
    assert ("dataset", copy) not in hub.repos  # both failed before any work
    (home / "token").write_text(hub.token)  # what `hf auth login` saves
    ok = _publish(split_dataset, _env(hub, home, None), "--public", repo=copy)
    assert ok.returncode == 0, ok.stderr
    assert not hub.repos[("dataset", copy)].private
    assert hub.token not in ok.stdout + ok.stderr


READ_BACK = r"""
import hashlib, json, sys
import numpy as np, torch, datasets
from huggingface_hub import hf_hub_download
from voxforge.loaders.torch import ShardDataset

repo, cache = sys.argv[1], sys.argv[2]
datasets.config.USE_PARQUET_EXPORT = False  # the dataset viewer's Parquet service is not part of the stand-in
digest = lambda array: hashlib.sha1(np.ascontiguousarray(array).tobytes()).hexdigest()
out = {}
stream = ShardDataset(f"hf://datasets/{repo}", split="train")
out["shards"] = [str(s) for s in stream.shards]
out["train_ids"] = [s["id"] for s in torch.utils.data.DataLoader(stream, batch_size=None, num_workers=2)]
first = next(iter(ShardDataset(f"hf://datasets/{repo}/train/shard-000000.tar", max_views=2, seed=3)))
out["first"] = {"id": first["id"], "views": first["views"].tolist(), "images": digest(first["images"]),
                "voxels": digest(first["voxels"]), "points": digest(first["points"])}
loaded = datasets.load_dataset(repo, cache_dir=cache)
out["splits"] = {name: len(split) for name, split in loaded.items()}
row = loaded["train"][0]
out["row"] = {"id": json.loads(row["metadata"])["id"], "rgb_01": digest(np.asarray(row["images"][1])),
              "points": digest(np.asarray(row["points"], np.float32))}
streamed = datasets.load_dataset(repo, split="validation", streaming=True)
out["streamed_val_ids"] = [r["id"] for r in streamed]
out["dataset_json"] = open(hf_hub_download(repo, "dataset.json", repo_type="dataset")).read()
print(json.dumps(out))
"""


def test_reading_back_with_shards_load_dataset_and_hf_hub_download(published, hub, split_dataset, tmp_path):
    env = _env(hub, published["home"], hub.token)
    env["HF_DEBUG"] = "0"
    result = subprocess.run([sys.executable, "-c", READ_BACK, REPO, str(tmp_path / "cache")], capture_output=True,
                            text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])

    def digest(array) -> str:
        return hashlib.sha1(np.ascontiguousarray(array).tobytes()).hexdigest()

    local_train = list(open_dataset(split_dataset, "train"))
    assert out["shards"] == [f"hf://datasets/{REPO}/train/{p.name}" for p in shard_paths(split_dataset / "train")]
    assert sorted(out["train_ids"]) == sorted(s["id"] for s in local_train)  # two workers, each sample once
    first = local_train[0]
    views = out["first"]["views"]
    assert len(views) == 2 and out["first"]["id"] == first["id"]
    assert out["first"]["images"] == digest(first["images"][views])
    assert out["first"]["voxels"] == digest(first["voxels"]) and out["first"]["points"] == digest(first["points"])
    assert out["splits"] == {"train": 9, "validation": 2, "test": 1}
    assert out["row"] == {"id": first["id"], "rgb_01": digest(first["images"][1]), "points": digest(first["points"])}
    assert sorted(out["streamed_val_ids"]) == sorted(s["id"] for s in open_dataset(split_dataset, "val"))
    assert json.loads(out["dataset_json"]) == _published_summary(split_dataset)
    # LFS files came through the storage origin after a redirect, small git files straight from the Hub
    assert hub.requests("storage-download") and hub.requests("resolve")
