"""Published folders and Parquet exports read by older ``datasets`` releases.

The Parquet export names only feature types every ``datasets`` from 2.14 on knows (``Value``, ``Image``,
``Sequence``) and keeps the sample metadata as JSON text, so the oldest supported release loads it. A
published folder carries that export in ``data/`` and its card names it (and declares no features), so
``load_dataset(FOLDER)`` works from 2.14 on too. Published without it (``--no-parquet``), the card names
the shards and declares the ``json`` column as ``Json``, which ``datasets`` has from 4.7 on
(``voxforge.loaders.hf`` explains why no declaration serves older ones): 4.7.0 is the oldest release
that such a folder is promised to.

The slow tests install those releases into virtual environments cached under
``~/.cache/voxforge-test-venvs`` (``VOXFORGE_TEST_VENVS`` overrides; keyed by Python version and pins, so a
rerun reuses them) and load a dataset made here in a child process with ``datasets`` offline. Without a
reachable package registry they are skipped; any other install failure fails.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from voxforge.loaders import format as fmt
from voxforge.loaders.hf import DATASETS_FOR_CARD, features_yaml, hf_features
from voxforge.loaders.parquet import parquet_columns, parquet_schema

# the oldest releases the docs promise, with a pyarrow, numpy and Pillow they run with (datasets 2.14 needs
# pyarrow < 15: later pyarrow drops what it uses; pyarrow 26 needs numpy 2)
OLDEST_FOR_PARQUET = ("datasets==2.14.7", "pyarrow==14.0.2", "numpy==1.26.4", "pillow")
OLDEST_FOR_CARD = (f"datasets=={DATASETS_FOR_CARD}.0", "pyarrow==25.0.1", "numpy==1.26.4", "pillow")
VENVS = Path(os.environ.get("VOXFORGE_TEST_VENVS", Path.home() / ".cache" / "voxforge-test-venvs"))
# datasets' Json feature (>= 4.7) stores a dict through pandas' ujson_dumps, which keeps 10 decimal places
JSON_ROUNDING = 1e-10
# what pip prints when it cannot reach the registry (then the test is skipped, not failed)
NETWORK_ERRORS = ("NewConnectionError", "Failed to establish a new connection", "Temporary failure in name resolution",
                  "Network is unreachable", "ProxyError", "ConnectTimeoutError", "Read timed out",
                  "Could not fetch URL", "No route to host", "Connection refused")


# --- what any installed datasets reads (fast) ---------------------------------------------------------------


@pytest.mark.parametrize("views,depth", [(2, False), (24, True)])
def test_card_yaml_parses_to_the_features_the_builder_yields(views, depth):
    datasets = pytest.importorskip("datasets")
    parsed = datasets.Features._from_yaml_list(features_yaml(views, depth))
    assert parsed == hf_features(views, depth) and list(parsed) == list(hf_features(views, depth))
    assert parsed["json"] == datasets.Json()
    assert parsed[fmt.POINTS] == datasets.List(datasets.List(datasets.Value("float32")))


def test_card_yaml_uses_forms_every_release_parses_except_for_json():
    """``list:`` (2.x and 3.x read it as a plain list feature, 4.0 on as ``List``) and plain dtypes; ``json``
    is the one column only >= 4.7 parses."""

    def portable(feature) -> bool:
        if isinstance(feature, dict) and set(feature) == {"list"}:
            return portable(feature["list"])
        return feature in ("float16", "float32")

    for column in features_yaml(3, True):
        name, rest = column["name"], {k: v for k, v in column.items() if k != "name"}
        if name == fmt.META:
            assert rest == {"dtype": "json"}
        elif "list" in rest:
            assert portable(rest), column
        else:
            assert rest["dtype"] in ("string", "image", "binary"), column


@pytest.mark.parametrize("depth", [False, True])
def test_parquet_schema_names_only_feature_types_old_releases_know(depth):
    schema = parquet_schema(depth)
    stored = json.loads(schema.metadata[b"huggingface"])["info"]["features"]
    assert stored == parquet_columns(depth) and list(stored) == schema.names

    def types(feature) -> set[str]:
        return {feature["_type"]} | (types(feature["feature"]) if "feature" in feature else set())

    assert set().union(*(types(f) for f in stored.values())) == {"Value", "Image", "Sequence"}
    assert str(schema.field("metadata").type) == "string"

    datasets = pytest.importorskip("datasets")
    from datasets import Image, List, Value

    read = datasets.Features.from_arrow_schema(schema)  # what load_dataset(OUT) uses
    assert read["images"] == List(Image()) and read["masks"] == List(Image())
    assert read["K"] == List(List(List(Value("float64")))) and read["points"] == List(List(Value("float32")))
    assert read["metadata"] == Value("string") and read["voxels_binvox"] == Value("binary")
    assert ("depth" in read) == depth


# --- loading a real export and published folder in another datasets (slow) ---------------------------------


READ = r"""
import glob, hashlib, json, os, sys, tempfile
import numpy as np
import datasets
datasets.logging.set_verbosity_error()

published, shards_only, parquet, check_shards = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
cache = tempfile.mkdtemp()
digest = lambda image: hashlib.sha1(np.ascontiguousarray(np.asarray(image)).tobytes()).hexdigest()
out = {"version": datasets.__version__}

def summary(loaded, meta_column, image_of, points_of, depth_of):
    rows = {}
    for split, data in loaded.items():
        rows[split] = []
        for row in data:
            meta = row[meta_column]
            rows[split].append({"meta_type": type(meta).__name__,
                                "meta": json.loads(meta) if isinstance(meta, str) else meta,
                                "image": digest(image_of(row)), "image_mode": image_of(row).mode,
                                "points": digest(np.asarray(points_of(row), np.float32)),
                                "depth": digest(np.asarray(depth_of(row), np.float32))})
    return rows

loaded = datasets.load_dataset(parquet, cache_dir=cache)
out["parquet"] = summary(loaded, "metadata", lambda row: row["images"][1], lambda row: row["points"],
                        lambda row: row["depth"])
out["parquet_ids"] = {split: list(data["id"]) for split, data in loaded.items()}
train_files = sorted(glob.glob(os.path.join(parquet, "data", "train-*.parquet")))
single = datasets.load_dataset("parquet", data_files=train_files, split="train", cache_dir=cache)
out["parquet_files_rows"] = len(single)
loaded = datasets.load_dataset(published, cache_dir=cache)
out["published"] = summary(loaded, "metadata", lambda row: row["images"][1], lambda row: row["points"],
                           lambda row: row["depth"])
if check_shards:
    loaded = datasets.load_dataset(shards_only, cache_dir=cache)
    out["shards_only"] = summary(loaded, "json", lambda row: row["rgb_01.png"], lambda row: row["points.npy"],
                                 lambda row: row["depth.npy"])
print(json.dumps(out))
"""


def _digest(array) -> str:
    return hashlib.sha1(np.ascontiguousarray(array).tobytes()).hexdigest()


def _pip_env() -> dict:
    """The environment for pip: without the dead proxy conftest points every test at (pip must reach the
    registry), and without the tests' Hugging Face settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        if env.get(name, "").startswith("http://127.0.0.1:9"):
            env.pop(name)
    return env


def old_datasets_python(pins: tuple[str, ...]) -> Path:
    """A Python with ``pins`` installed, from the cache or made now (skips when the registry is unreachable)."""
    key = hashlib.sha1("\n".join(pins).encode()).hexdigest()[:10]
    name = f"{pins[0].replace('==', '-')}-py{sys.version_info.major}{sys.version_info.minor}-{key}"
    venv = VENVS / name
    python = venv / "bin" / "python"
    if (venv / ".voxforge-ready").is_file():
        return python
    VENVS.mkdir(parents=True, exist_ok=True)
    partial = VENVS / f"{name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    start = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", str(partial)], check=True, capture_output=True, timeout=300)
    # --retries: pip names a refused connection only when it retries (then it is a skip, not a failure)
    install = subprocess.run([str(partial / "bin" / "python"), "-m", "pip", "install", "-q", "--no-input",
                              "--retries", "2", "--disable-pip-version-check", *pins],
                             check=False, capture_output=True, text=True, env=_pip_env(), timeout=1200)
    if install.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        output = install.stdout + install.stderr
        if any(marker in output for marker in NETWORK_ERRORS):
            pytest.skip(f"pip cannot reach the package registry to install {' '.join(pins)}")
        pytest.fail(f"pip install {' '.join(pins)} failed:\n{output[-3000:]}")
    check = subprocess.run([str(partial / "bin" / "python"), "-c", "import datasets, PIL; print(datasets.__version__)"],
                           check=False, capture_output=True, text=True, timeout=300)
    assert check.returncode == 0 and check.stdout.strip() == pins[0].split("==")[1], check.stderr[-2000:]
    (partial / ".voxforge-ready").write_text(f"{' '.join(pins)}\ninstalled in {time.monotonic() - start:.0f} s\n")
    try:
        partial.rename(venv)
    except OSError:  # another run finished first: use its copy
        shutil.rmtree(partial, ignore_errors=True)
    print(f"installed {' '.join(pins)} into {venv} in {time.monotonic() - start:.0f} s")
    return python


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A tiny dataset (4 objects, 2 views, depth, train and val), its published folder (with and without the
    Parquet copy) and its Parquet export."""
    from inprocess_samples import write_dataset

    from voxforge.loaders.parquet import export_parquet
    from voxforge.pipeline.config import RunConfig
    from voxforge.pipeline.publish import publish

    root = tmp_path_factory.mktemp("old-datasets")
    config = RunConfig(limit=4, views=2, size=32, points=64, save_depth=True, out=str(root / "data"))
    data = write_dataset(root / "data", config, splits=("train", "val"))
    info = json.loads((data / fmt.DATASET_FILE).read_text())  # what a pipeline run also records
    info["name"] = "tiny"
    info["counts"]["shards"] = {split: sorted(f"{split}/{p.name}" for p in (data / split).glob("shard-*.tar"))
                                for split in fmt.SPLITS}
    (data / fmt.DATASET_FILE).write_text(json.dumps(info))
    publish(data, str(root / "published"), progress=False)
    publish(data, str(root / "shards-only"), progress=False, parquet=False)
    assert export_parquet(data, root / "parquet") == {"train": 2, "val": 2}
    return {"data": data, "published": root / "published", "shards_only": root / "shards-only",
            "parquet": root / "parquet", "root": root}


def _expected(data: Path) -> dict[str, dict]:
    """id -> what the loaders must give, from the shards read with voxforge's own reader and tar reader."""
    from voxforge.loaders import open_dataset
    from voxforge.loaders.dataset import iter_any_shard
    from voxforge.loaders.shards import shard_paths

    members = {}
    for split in ("train", "val"):
        for shard in shard_paths(data / split):
            for _, sample in iter_any_shard(shard):
                meta = json.loads(sample[fmt.META])
                members[meta["id"]] = meta
    return {sample["id"]: {"split": sample["split"], "meta": members[sample["id"]],
                           "image": _digest(sample["images"][1]), "points": _digest(sample["points"]),
                           "depth": _digest(np.asarray(sample["depth"], np.float32))}
            for sample in open_dataset(data)}


def _load(python: Path | str, made: dict, check_shards: bool, tmp_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "PYTHON"))}
    env.update(HF_HOME=str(tmp_path / "hf-home"), HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1",
               HF_HUB_DISABLE_TELEMETRY="1", PYTHONNOUSERSITE="1")
    result = subprocess.run([str(python), "-c", READ, str(made["published"]), str(made["shards_only"]),
                             str(made["parquet"]), "1" if check_shards else "0"],
                            check=False, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _close(got, want, tolerance: float) -> bool:
    """``got == want``, but floats within ``tolerance``."""
    if isinstance(want, float) and isinstance(got, (int, float)) and not isinstance(got, bool):
        return abs(got - want) <= tolerance
    if isinstance(want, dict):
        return (isinstance(got, dict) and got.keys() == want.keys()
                and all(_close(got[k], want[k], tolerance) for k in want))
    if isinstance(want, list):
        return (isinstance(got, list) and len(got) == len(want)
                and all(_close(g, w, tolerance) for g, w in zip(got, want)))
    return got == want and type(got) is type(want)


def _check(loaded: dict[str, list[dict]], expected: dict[str, dict], meta_type: str, tolerance: float = 0.0) -> None:
    splits = {"train": "train", "validation": "val"}
    assert {name: len(rows) for name, rows in loaded.items()} == {"train": 2, "validation": 2}
    seen = set()
    for name, rows in loaded.items():
        for row in rows:
            want = expected[row["meta"]["id"]]
            assert want["split"] == splits[name] and row["meta_type"] == meta_type
            if tolerance:
                assert _close(row["meta"], want["meta"], tolerance)  # the whole json member, every nested field
            else:
                assert row["meta"] == want["meta"]
            assert row["image"] == want["image"] and row["image_mode"] == "RGB" and row["points"] == want["points"]
            assert row["depth"] == want["depth"]  # float16 in the shards, float32 in Parquet: the same values
            seen.add(row["meta"]["id"])
    assert seen == set(expected)


@pytest.mark.slow
def test_installed_datasets_reads_the_export_and_the_published_folder(made, tmp_path):
    """The same child-process reader as for the old releases, with this environment's datasets."""
    out = _load(sys.executable, made, True, tmp_path)
    expected = _expected(made["data"])
    _check(out["parquet"], expected, "str")  # JSON text: json.loads(row["metadata"])
    assert sorted(i for ids in out["parquet_ids"].values() for i in ids) == sorted(expected)
    assert out["parquet_files_rows"] == 2
    _check(out["published"], expected, "str")  # the published folder's default config: its Parquet copy
    # the shards' card (--no-parquet): a Json column; datasets re-encodes the decoded member with pandas'
    # ujson, 10 decimal places
    _check(out["shards_only"], expected, "dict", JSON_ROUNDING)


@pytest.mark.slow
def test_oldest_supported_datasets_reads_the_parquet_export_and_the_published_folder(made, tmp_path):
    python = old_datasets_python(OLDEST_FOR_PARQUET)
    out = _load(python, made, False, tmp_path)
    assert out["version"] == "2.14.7"
    expected = _expected(made["data"])
    _check(out["parquet"], expected, "str")
    _check(out["published"], expected, "str")
    assert sorted(i for ids in out["parquet_ids"].values() for i in ids) == sorted(expected)
    assert out["parquet_files_rows"] == 2


@pytest.mark.slow
def test_oldest_release_the_shards_card_names_reads_a_folder_published_without_parquet(made, tmp_path):
    python = old_datasets_python(OLDEST_FOR_CARD)
    out = _load(python, made, True, tmp_path)
    assert out["version"] == f"{DATASETS_FOR_CARD}.0"
    expected = _expected(made["data"])
    _check(out["shards_only"], expected, "dict", JSON_ROUNDING)
    _check(out["published"], expected, "str")
    _check(out["parquet"], expected, "str")


@pytest.mark.slow
def test_card_tells_older_releases_what_to_do(made):
    card = (made["shards_only"] / "README.md").read_text()
    assert f"datasets < {DATASETS_FOR_CARD}" in card
    # a folder's card loads the folder by its name (a Hub repo's names hf://datasets/OWNER/NAME)
    assert 'load_dataset("webdataset", data_files={"train": "shards-only/train/*.tar"}' in card
    assert 'load_dataset("shards-only", split="train")' in card
