"""Hugging Face side of a voxforge dataset: ``datasets`` features and the dataset card (README.md).

``datasets.load_dataset`` reads voxforge shards with its WebDataset builder: it recognizes ``*.tar``
files, groups members by the key before the first dot, finds the splits from the ``train/``, ``val/``,
``test/`` folders (``val`` becomes ``validation``) and decodes members by their last extension
(``png`` -> Image, ``npy`` -> array, ``json`` -> dict; ``voxels.binvox`` stays bytes). The card pins
that down so the Hub viewer and ``load_dataset`` agree without guessing: ``configs`` maps each split
to its shards, and ``dataset_info.features`` declares every column, with the ``json`` metadata as a
``Json`` column (its nested fields differ between sources, which a struct column would reject).

A published folder normally also carries a Parquet copy of the samples (``data/``), and its card then
names that instead (:func:`card_metadata` with ``parquet``): it loads in every ``datasets`` from 2.14
on. What follows is about the card that names the shards (``publish --no-parquet``).

Which ``datasets`` read the shards' card (checked against 2.14.7, 2.16.1, 2.18.0, 3.6.0, 4.0.0, 4.6.1, 4.7.0, 5.2.0):
``Json`` exists from 4.7 on, and older versions fail on the card's ``json`` dtype before reading any shard
(``TypeError: 'module' object is not callable``), so ``load_dataset`` of a published folder or repo needs
``datasets`` >= :data:`DATASETS_FOR_CARD`. No declaration of that column serves older versions too: every
version's builder hands the ``json`` member to the feature as a dict already, so a ``string`` column holds
its Python ``repr`` (not JSON) and a struct column breaks on the first sample whose fields differ. Older
versions (2.16 to 4.6; 2.14 and 2.15 have no WebDataset builder) can name the shards instead,
``load_dataset("webdataset", data_files=...)``, which skips the card and guesses the columns from the
first samples (``*.npy`` members stay bytes before 2.20); any version reads the Parquet export
(:mod:`voxforge.loaders.parquet`). The list columns use the YAML ``list:`` form, which every version
parses (2.x and 3.x as a plain list feature, 4.0 and later as ``List``).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from voxforge.loaders import format as fmt
from voxforge.loaders.shards import SHARD_NAME

DATASETS_FOR_CARD = "4.7"  # the first datasets with the Json feature the card's json column declares
PARQUET_FOLDER = "data"  # where a published folder keeps its Parquet copy (voxforge.loaders.parquet's layout)
HF_SPLIT_NAMES = {"train": "train", "val": "validation", "test": "test"}
# licence slugs (voxforge.pipeline.sources.licenses) -> the Hub's licence identifiers
HUB_LICENSES = {"cc0": "cc0-1.0", "by": "cc-by-4.0", "by-sa": "cc-by-sa-4.0", "by-nd": "cc-by-nd-4.0",
                "by-nc": "cc-by-nc-4.0", "by-nc-sa": "cc-by-nc-sa-4.0", "by-nc-nd": "cc-by-nc-nd-4.0", "mit": "mit",
                "apache-2.0": "apache-2.0", "bsd-2-clause": "bsd-2-clause", "bsd-3-clause": "bsd-3-clause",
                "unlicense": "unlicense", "unknown": "unknown"}


def hf_features(views: int, has_depth: bool = False):
    """The ``datasets.Features`` of a voxforge sample as the WebDataset builder yields it."""
    from datasets import Features, Image, Json, List, Value

    columns = {"__key__": Value("string"), "__url__": Value("string"), "json": Json()}
    for view in range(views):
        columns[fmt.mask_member(view)] = Image()
    columns[fmt.NORMALS] = List(List(Value("float32")))
    columns[fmt.POINTS] = List(List(Value("float32")))
    for view in range(views):
        columns[fmt.image_member(view)] = Image()
    columns[fmt.VOXELS] = Value("binary")
    if has_depth:
        columns[fmt.DEPTH] = List(List(List(Value("float16"))))
    return Features(dict(sorted(columns.items(), key=lambda item: (not item[0].startswith("__"), item[0]))))


def features_yaml(views: int, has_depth: bool = False) -> list[dict]:
    """:func:`hf_features` in the card's YAML form, written out so publishing needs no ``datasets`` import
    (a test checks that ``datasets`` parses it back to :func:`hf_features`)."""
    columns = [{"name": "__key__", "dtype": "string"}, {"name": "__url__", "dtype": "string"},
               {"name": fmt.META, "dtype": "json"}]
    columns += [{"name": fmt.mask_member(v), "dtype": "image"} for v in range(views)]
    columns += [{"name": name, "list": {"list": "float32"}} for name in (fmt.NORMALS, fmt.POINTS)]
    columns += [{"name": fmt.image_member(v), "dtype": "image"} for v in range(views)]
    columns.append({"name": fmt.VOXELS, "dtype": "binary"})
    if has_depth:
        columns.insert(2, {"name": fmt.DEPTH, "list": {"list": {"list": "float16"}}})
    return columns


def hub_license(text: str) -> str:
    from voxforge.pipeline.sources.licenses import license_slug

    return HUB_LICENSES.get(license_slug(text), "other")


def _size_category(count: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if count < limit:
            return name
    return "1M<n<10M"


def card_metadata(info: dict, split_bytes: dict[str, int] | None = None, parquet: bool = False) -> dict:
    """The card's YAML front matter: licences, tags, configs (split -> files), features, split sizes
    (``num_bytes``: the split's file bytes; ``datasets`` ignores split sizes without it).

    With ``parquet`` (a Parquet copy published beside the shards, :data:`PARQUET_FOLDER`), the default
    config names the Parquet files and the card declares no features: the files' own schema metadata
    does, in types every ``datasets`` from 2.14 on reads, so no release fails on the card. Without it,
    the config names the shards and the features are declared (:func:`features_yaml`; needs
    ``datasets`` >= :data:`DATASETS_FOR_CARD`)."""
    config, counts = info["config"], info["counts"]
    present = [s for s in fmt.SPLITS if counts["per_split"].get(s, 0) > 0]
    licenses = sorted({hub_license(text) for text in info.get("licenses", {})}) or ["unknown"]
    splits = [{"name": HF_SPLIT_NAMES[s], "num_bytes": (split_bytes or {}).get(s, 0),
               "num_examples": counts["per_split"][s]} for s in present]
    if parquet:
        data_files = [{"split": HF_SPLIT_NAMES[s], "path": f"{PARQUET_FOLDER}/{HF_SPLIT_NAMES[s]}-*.parquet"}
                      for s in present]
        dataset_info = {"splits": splits}
    else:
        data_files = [{"split": HF_SPLIT_NAMES[s], "path": f"{s}/{fmt.SHARD_PREFIX}-*{fmt.SHARD_SUFFIX}"}
                      for s in present]
        dataset_info = {"features": features_yaml(config["views"], bool(config.get("save_depth"))), "splits": splits}
    return {
        "license": licenses[0] if len(licenses) == 1 else licenses,
        "pretty_name": info.get("name") or "voxforge dataset",
        "tags": ["voxforge", "3d", "multi-view", "voxels", "point-cloud", "3d-reconstruction", "webdataset"]
        + (["parquet"] if parquet else []),
        "task_categories": ["image-to-3d"],
        "size_categories": [_size_category(counts["objects"])],
        "configs": [{"config_name": "default", "default": True, "data_files": data_files}],
        "dataset_info": dataset_info,
    }


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def dataset_card(dataset: str | Path, repo_id: str | None = None, preview: str | None = "preview.png",
                 info: dict | None = None, parquet_bytes: dict[str, int] | None = None,
                 folder: str | None = None) -> str:
    """README.md for a published dataset: YAML metadata, then what it holds and how it was made.

    ``info`` replaces the dataset's own ``dataset.json`` (publishing passes the copy without local paths).
    ``parquet_bytes`` (split -> bytes) says a Parquet copy is published in :data:`PARQUET_FOLDER`, which
    the card then makes the default config (:func:`card_metadata`). The usage lines load ``repo_id`` from
    the Hub, else the published ``folder`` by name.
    """
    import yaml

    from voxforge.pipeline.config import CYCLES_RENDERERS
    from voxforge.pipeline.manifest import Manifest
    from voxforge.storage import location

    where = location(dataset)
    info = info if info is not None else json.loads(where.read_text(fmt.DATASET_FILE))
    config, counts = info["config"], info["counts"]
    present = [s for s in fmt.SPLITS if counts["per_split"].get(s, 0) > 0]
    per_category: dict[str, Counter] = {}
    for row in Manifest(where).rows().values():  # the last line of an id wins
        if row["status"] == "ok":
            per_category.setdefault(row["category"], Counter())[row["split"]] += 1
    category_rows = [[name] + [c[s] for s in present] + [sum(c.values())] for name, c in sorted(per_category.items())]
    category_rows.append(["**total**"] + [counts["per_split"][s] for s in present] + [counts["objects"]])
    license_rows = [[text, hub_license(text), n] for text, n in sorted(info.get("licenses", {}).items())]
    # what the usage lines load: the Hub repo, or the published folder (its name; the reader's path to it)
    name = repo_id or folder or info.get("name") or "DATASET"
    shards = f"hf://datasets/{repo_id}" if repo_id else name
    source = config["source"] + (f" ({config['path']})" if config.get("path") and config["source"] != "local" else "")
    cycles = (f", {config.get('cycles_samples', 4)} samples per pixel{' and OpenImageDenoise' if config.get('denoise') else ''}"
              if config["renderer"] in CYCLES_RENDERERS else "")
    made_with = (f"`pipeline run {config['source']}` with {config['views']} views of {config['size']}x{config['size']} "
                 f"px per object ({config['renderer']} renderer{cycles}, supersampling {config.get('supersample', 1)}x), "
                 f"{config['resolution']}^3 voxels (fill `{config['fill']}`), {config['points']} surface points"
                 f"{' (evenly spaced)' if config.get('even_points') else ''}, seed {config['seed']}, backgrounds: "
                 + ("photos" if config.get("backgrounds") else f"plain colour {tuple(config['background_color'])}") + ".")
    software = ", ".join(f"{k} {v}" for k, v in sorted(info.get("software", {}).items()))
    if parquet_bytes is not None:
        parquet_text = (f", and the same samples as Parquet (`{PARQUET_FOLDER}/`, one row per object: `images`, "
                        "`masks`, `K`, `world_to_camera`, `voxels_binvox`, `points`, `normals`, `metadata` as JSON text)")
        use_text = f"""data = load_dataset("{name}", split="train")   # the Parquet copy (datasets >= 2.14): images, K, points, ...
import json; meta = json.loads(data[0]["metadata"])  # the sample's json member

# the WebDataset shards themselves (datasets >= 2.16; column types guessed from the first samples)
data = load_dataset("webdataset", data_files={{"train": "{shards}/train/*.tar"}}, split="train")"""
    else:
        parquet_text = ""
        use_text = f"""data = load_dataset("{name}", split="train")   # columns: json, rgb_NN.png, mask_NN.png, voxels.binvox, points.npy, ...

# datasets < {DATASETS_FOR_CARD} lacks the Json type of the `json` column and fails on this card; from 2.16 on,
# name the shards instead (the columns' types are then guessed from the first samples; .npy stays bytes before 2.20)
data = load_dataset("webdataset", data_files={{"train": "{shards}/train/*.tar"}}, split="train")"""
    body = f"""
# {info.get('name') or 'voxforge dataset'}

Multi-view renders with cameras, solid voxel grids and surface point clouds of {counts['objects']} 3D objects
from the `{source}` source, in one shared object frame, made with voxforge.
{'' if not preview else f'''
![Preview: views, mask, voxel centres (red) and points (green) projected by the stored camera, voxel silhouettes]({preview})
'''}
## Contents

{_table(['category'] + [HF_SPLIT_NAMES[s] for s in present] + ['total'], category_rows)}

Objects that failed to render or voxelize are not included ({counts.get('failed', 0)} failed).

## Licences

{_table(['licence of the source objects', 'identifier', 'objects'], license_rows)}

Each sample's `json` metadata carries the licence and source URI of its object.

## Format

WebDataset shards (`train/`, `val/`, `test/`; voxforge format {info['format_version']}){parquet_text}. Each sample has:

| member | content |
|---|---|
| `json` | metadata: id, category, source, licence, normalization, cameras (`K`, `world_to_camera` in OpenCV convention, azimuth, elevation, distance), lights, voxel grid origin and size |
| `rgb_NN.png` | view NN (00..{config['views'] - 1:02d}), RGB |
| `mask_NN.png` | view NN, 8-bit alpha (coverage) |
| `voxels.binvox` | {config['resolution']}^3 occupancy, binvox format |
| `points.npy`, `normals.npy` | ({config['points']}, 3) float32 surface points and normals |

Cameras, voxels and points share one frame: the object's bounding box centred at the origin with unit
diagonal. `dataset.json` holds the full configuration and counts; `manifest.jsonl` one line per object.

## Use

```python
from datasets import load_dataset
{use_text}

# or stream the shards straight into PyTorch training batches
from voxforge.loaders.torch import ShardDataset
samples = ShardDataset("{shards}", split="train", shuffle_buffer=64, max_views=5)
```

## How it was made

{made_with} Split ratios {config.get('split_ratios')}; at most {config['shard_size']} objects per shard.
Software: {software}. Last updated {info.get('updated', '')}.
"""
    if parquet_bytes is not None:
        split_bytes = parquet_bytes
    else:
        split_bytes = {s: sum(size for name, size in where.list_files(s).items() if SHARD_NAME.match(name))
                       for s in present}
    front = yaml.safe_dump(card_metadata(info, split_bytes, parquet=parquet_bytes is not None), sort_keys=False,
                           allow_unicode=True)
    return f"---\n{front}---\n{body}"
