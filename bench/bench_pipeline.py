"""Per-stage seconds per object (one core) and end-to-end objects/s through Ray.

Defaults are the issue's target workload: 24 views at 127x127, 32^3 voxels, 16384 points.

    python bench/bench_pipeline.py [--objects 24] [--workers 2] [--skip-e2e]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def stage_times(records, config) -> dict[str, list[float]]:
    from voxforge.pipeline import stages
    from voxforge.renderers import get_renderer
    from voxforge.renderers.backgrounds import BackgroundPool

    os.environ.setdefault("LP_NUM_THREADS", "1")
    renderer = get_renderer(config.renderer)(config.size, supersample=config.supersample)
    backgrounds = BackgroundPool(None)
    times: dict[str, list[float]] = {k: [] for k in ("load", "render", "composite", "voxelize+points", "encode", "total")}
    for record in records:
        marks = [time.perf_counter()]
        loaded = stages.load_stage(record)
        marks.append(time.perf_counter())
        rendered = stages.render_stage(loaded, renderer, config, record.object_id)
        marks.append(time.perf_counter())
        images = stages.composite_stage(rendered, backgrounds, config, record.object_id)
        marks.append(time.perf_counter())
        geometry = stages.geometry_stage(loaded, config, record.object_id)
        marks.append(time.perf_counter())
        stages.encode_stage(record, "train", loaded, rendered, images, geometry, config)
        marks.append(time.perf_counter())
        for name, start, end in zip(list(times)[:-1], marks, marks[1:]):
            times[name].append(end - start)
        times["total"].append(marks[-1] - marks[0])
    renderer.close()
    return times


def print_stages(title: str, times: dict[str, list[float]], views: int) -> None:
    print(f"\n{title} ({len(times['total'])} objects, median seconds per object, one core)")
    for name, values in times.items():
        print(f"  {name:<16}{np.median(values):8.3f} s")
    print(f"  render views/s  {views / np.median(times['render']):8.1f}")
    print(f"  objects/s/core  {1 / np.median(times['total']):8.2f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--objects", type=int, default=24)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--skip-e2e", action="store_true")
    args = parser.parse_args()

    from voxforge.pipeline.config import RunConfig
    from voxforge.pipeline.sources import create_source

    config = RunConfig(views=24, size=127, resolution=32, points=16384, progress=False)
    procedural = create_source("procedural").select(None, args.objects)
    print_stages("procedural", stage_times(procedural, config), config.views)
    if SHARED.is_dir():
        shapenet = create_source("local", path=str(SHARED / "shapenetcore_v2")).select(None, None)
        print_stages("shapenet (shared meshes)", stage_times(shapenet, config), config.views)

    if args.skip_e2e:
        return
    from voxforge.pipeline.run import run

    for source, extra in (("procedural", {"limit": args.objects}),
                          ("local", {"path": str(SHARED / "shapenetcore_v2")}) if SHARED.is_dir() else (None, None)):
        if source is None:
            continue
        with tempfile.TemporaryDirectory() as out:
            run_config = RunConfig(source=source, out=out, workers=args.workers, progress=False, **extra)
            summary = run(run_config)
            # the first run includes Ray start-up; a second, same-size run in the warm cluster does not
        with tempfile.TemporaryDirectory() as out:
            run_config = RunConfig(source=source, out=out, workers=args.workers, progress=False, **extra)
            warm = run(run_config)
        print(f"\nend to end, {source}: {warm.ok} objects, {args.workers} workers: "
              f"{warm.ok / warm.seconds:.2f} objects/s, {warm.ok * 24 / warm.seconds:.1f} views/s "
              f"(warm Ray; cold run incl. Ray start {summary.ok / summary.seconds:.2f} objects/s)")


if __name__ == "__main__":
    main()
