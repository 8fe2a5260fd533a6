"""Samples made by the pipeline's own stage functions in this process (no Ray): quick real data for tests.

``make_samples`` runs load -> render -> composite -> voxelize/points -> encode and decodes the result
with the dataset reader, so the dicts are exactly what ``open_dataset`` yields; ``write_dataset``
stores them as a small dataset folder (shards + ``dataset.json``) the loaders and trainers read.
"""

from __future__ import annotations

import json
from pathlib import Path

from voxforge.loaders import format as fmt
from voxforge.loaders.dataset import decode_sample
from voxforge.loaders.shards import ShardWriter
from voxforge.pipeline.config import RunConfig
from voxforge.pipeline.sources import create_source
from voxforge.pipeline.stages import composite_stage, encode_stage, geometry_stage, load_stage, render_stage
from voxforge.renderers import get_renderer
from voxforge.renderers.backgrounds import BackgroundPool


def make_members(config: RunConfig, splits=None) -> list[tuple[str, dict[str, bytes]]]:
    """(split, shard members) of the objects ``config`` selects (procedural or local source)."""
    records = create_source(config.source, path=config.path, seed=config.seed).select(config.categories, config.limit)
    renderer = get_renderer(config.renderer)(config.size, supersample=config.supersample)
    backgrounds = BackgroundPool(None, color=config.background_color)
    made = []
    for index, record in enumerate(records):
        split = splits[index % len(splits)] if splits else "train"
        loaded = load_stage(record)
        rendered = render_stage(loaded, renderer, config, record.object_id)
        images = composite_stage(rendered, backgrounds, config, record.object_id)
        geometry = geometry_stage(loaded, config, record.object_id)
        made.append((split, encode_stage(record, split, loaded, rendered, images, geometry, config)))
    return made


def make_samples(config: RunConfig) -> list[dict]:
    return [decode_sample(members) for _, members in make_members(config)]


def write_dataset(out: Path, config: RunConfig, splits=("train",)) -> Path:
    """A dataset folder (one shard per split, ``dataset.json``) from in-process samples."""
    made = make_members(config, list(splits))
    per_split = {s: 0 for s in fmt.SPLITS}
    for split in fmt.SPLITS:
        writer = ShardWriter(out / split, max_count=1000)
        for sample_split, members in made:
            if sample_split == split:
                writer.add(fmt.sample_key(json.loads(members[fmt.META])["id"]), members)
                per_split[split] += 1
        writer.commit()
    info = {"format_version": fmt.FORMAT_VERSION, "config": config.as_dict(),
            "counts": {"objects": len(made), "per_split": per_split}}
    (out / fmt.DATASET_FILE).write_text(json.dumps(info))
    return out
