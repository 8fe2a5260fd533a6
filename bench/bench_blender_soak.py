"""Soak test of the Blender renderer: do memory and speed stay flat over hundreds of objects?

Part 1, one process: a single Blender Workbench renderer renders ``--objects`` procedural objects
(small images, few views), the scene emptied between objects as in a pipeline worker; the table gives,
per 50 objects, the process's resident memory at the end of the block and the block's views/s.

Part 2, the pipeline: ``pipeline run procedural --renderer blender-workbench`` over the same number of
objects with 2 workers replaced every ``--recycle-after`` objects; the bench samples every worker's
resident memory from /proc while the run goes, and prints, per 50 objects written, the views/s and
the largest worker memory seen, with the replacements the run recorded.

    python bench/bench_blender_soak.py [--objects 500] [--views 4] [--size 64] [--recycle-after 100]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BLOCK = 50


def resident_mb(pid: int | str = "self") -> float:
    try:
        with open(f"/proc/{pid}/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


def in_process(objects: int, views: int, size: int) -> list[tuple[int, float, float]]:
    import numpy as np

    from voxforge.pipeline.meshes import validate_and_normalize
    from voxforge.pipeline.sources.procedural import GENERATORS, generate
    from voxforge.renderers import get_renderer, sample_lighting
    from voxforge.renderers.cameras import sample_cameras

    renderer = get_renderer("blender-workbench")(size)
    categories = sorted(GENERATORS)
    rows, block_start, block_views = [], time.perf_counter(), 0
    for index in range(objects):
        scene, _ = validate_and_normalize(generate(categories[index % len(categories)], index // len(categories)))
        rng = np.random.default_rng(index)
        renderer.render(scene, sample_cameras(views, size, rng), sample_lighting(views, rng))
        block_views += views
        if (index + 1) % BLOCK == 0:
            elapsed = time.perf_counter() - block_start
            rows.append((index + 1, resident_mb(), block_views / elapsed))
            block_start, block_views = time.perf_counter(), 0
    renderer.close()
    return rows


def _parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as handle:
            return next(int(line.split()[1]) for line in handle if line.startswith("PPid:"))
    except (OSError, StopIteration, ValueError):
        return 0


def worker_pids(run_pid: int) -> list[int]:
    """This run's render workers: processes named after ObjectWorker that descend from ``run_pid``."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                if b"ObjectWorker" not in handle.read():
                    continue
        except OSError:
            continue
        ancestor = int(entry)
        while ancestor > 1 and ancestor != run_pid:
            ancestor = _parent(ancestor)
        if ancestor == run_pid:
            pids.append(int(entry))
    return pids


def through_pipeline(objects: int, views: int, size: int, recycle_after: int) -> tuple[list, list]:
    out = Path(tempfile.mkdtemp(prefix="voxforge-soak-"))
    manifest = out / "manifest.jsonl"
    command = [sys.executable, "-m", "voxforge.pipeline.cli", "run", "procedural", "--limit", str(objects),
               "--renderer", "blender-workbench", "--workers", "2", "--views", str(views), "--size", str(size),
               "--points", "2048", "--shard-size", "5", "--recycle-after", str(recycle_after), "--out", str(out),
               "--no-progress"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows, peak, seen_pids = [], 0.0, set()
    last_count, block_start = 0, None
    try:
        while process.poll() is None:
            pids = worker_pids(process.pid)
            seen_pids.update(pids)
            peak = max([peak] + [resident_mb(pid) for pid in pids])
            count = sum(1 for _ in manifest.open()) if manifest.exists() else 0
            if count and block_start is None:
                block_start, last_count = time.perf_counter(), count
            if block_start is not None and count >= last_count + BLOCK:
                elapsed = time.perf_counter() - block_start
                rows.append((count, peak, (count - last_count) * views / elapsed, len(seen_pids)))
                block_start, last_count, peak = time.perf_counter(), count, 0.0
            time.sleep(0.2)
        count = sum(1 for _ in manifest.open()) if manifest.exists() else 0
        if block_start is not None and count > last_count:  # the last, shorter block
            rows.append((count, peak, (count - last_count) * views / (time.perf_counter() - block_start),
                         len(seen_pids)))
        journal = out / ".voxforge" / "recycled_workers.jsonl"
        replaced = [json.loads(line) for line in journal.read_text().splitlines()] if journal.exists() else []
        if process.returncode:
            raise SystemExit(f"pipeline run failed with exit code {process.returncode}")
    finally:
        if process.poll() is None:
            process.kill()
        shutil.rmtree(out, ignore_errors=True)
    return rows, replaced


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=500)
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--recycle-after", type=int, default=100)
    parser.add_argument("--skip-pipeline", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("LP_NUM_THREADS", "1")

    rows = in_process(args.objects, args.views, args.size)
    print(f"one process, one Workbench renderer, {args.objects} procedural objects, {args.views} views of "
          f"{args.size}x{args.size} each")
    print("| objects | resident MB | views/s (block) |")
    print("|---:|---:|---:|")
    for count, memory, speed in rows:
        print(f"| {count} | {memory:.0f} | {speed:.1f} |")
    first, last = rows[0], rows[-1]
    print(f"memory {first[1]:.0f} -> {last[1]:.0f} MB ({(last[1] - first[1]) / max(len(rows) - 1, 1):+.1f} MB per "
          f"{BLOCK} objects); speed {first[2]:.1f} -> {last[2]:.1f} views/s")
    if args.skip_pipeline:
        return
    rows, replaced = through_pipeline(args.objects, args.views, args.size, args.recycle_after)
    print(f"\npipeline run procedural --renderer blender-workbench --workers 2 --recycle-after {args.recycle_after}")
    print("| objects written | views/s (block) | largest worker MB (block) | worker processes so far |")
    print("|---:|---:|---:|---:|")
    for count, memory, speed, workers in rows:
        print(f"| {count} | {speed:.1f} | {memory:.0f} | {workers} |")
    print(f"workers replaced: {len(replaced)} ({', '.join(sorted({r['reason'] for r in replaced})) or 'none'})")


if __name__ == "__main__":
    main()
