"""What limits a run as it grows: the driver's CPU and memory per object, and the workers' fixed cost per object.

Tiny objects (1 view of 16 px, 64 points, 8^3 voxels), so the renderer is not the limit. Each run is
``pipeline run procedural`` in a fresh process; the figures are slopes between run sizes, so start-up
(Ray, imports) cancels out:

- driver CPU per object: CPU seconds of the ``pipeline`` process itself (all its threads), per extra object;
- worker fixed cost per object: worker-seconds per extra object (wall x workers) minus the time the
  stages themselves take for the same objects in one process (measured here too);
- driver memory: peak resident memory of selecting and planning N procedural records, in a fresh process.

Then a projection for Objaverse (800k objects) and Objaverse-XL (10M) from the measured costs.

    python bench/bench_scale.py [--sizes 100,1000,10000] [--workers 2] [--memory 10000,100000,1000000]
    python bench/bench_scale.py --repo ../other-checkout   # the same figures for another version of voxforge
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--views", "1", "--size", "16", "--points", "64", "--resolution", "8", "--supersample", "1"]


def child_run(limit: int, out: str, workers: int) -> None:
    """In the child: one pipeline run, then this process's own CPU time and peak memory as JSON."""
    from voxforge.pipeline.cli import main

    started = time.perf_counter()
    code = main(["run", "procedural", "--limit", str(limit), *TINY, "--workers", str(workers), "--out", out,
                 "--no-progress"])
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"code": code, "wall": time.perf_counter() - started, "cpu": usage.ru_utime + usage.ru_stime,
                      "max_rss_mb": usage.ru_maxrss / 1024}), flush=True)


def child_plan(limit: int) -> None:
    """In the child: select and plan ``limit`` procedural records (what the driver holds before work)."""
    from voxforge.pipeline.plan import plan_shards
    from voxforge.pipeline.sources import create_source
    from voxforge.pipeline.splits import assign_split

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    records = create_source("procedural").select(None, limit)
    plan = plan_shards(records, lambda r: assign_split(r.object_id), lambda _: False, {}, 64, 8)
    rows = [task.to_row() for task in plan.tasks]  # what the driver hands to Ray Data
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"records": len(records), "tasks": len(rows), "before_mb": before / 1024, "peak_mb": peak / 1024}),
          flush=True)


def _child(python: str, repo: Path, *args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(repo), "RAY_USAGE_STATS_ENABLED": "0"}
    done = subprocess.run([python, __file__, *args], capture_output=True, text=True, env=env, cwd=repo)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"child failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(lines[-1])


def stage_seconds(objects: int) -> float:
    """Median seconds of the stages for one tiny object, in this process (no Ray, no writing)."""
    sys.path.insert(0, str(ROOT / "bench"))
    from bench_pipeline import stage_times

    from voxforge.pipeline.config import RunConfig
    from voxforge.pipeline.sources import create_source

    config = RunConfig(views=1, size=16, points=64, resolution=8, supersample=1, progress=False)
    records = create_source("procedural").select(None, objects)
    times = stage_times(records, config)
    return statistics.median(times["total"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--memory", default="10000,100000,1000000", help="record counts for the driver-memory figure")
    parser.add_argument("--repo", type=Path, default=ROOT, help="checkout of voxforge to measure (default: this one)")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--child-run", nargs=3, metavar=("LIMIT", "OUT", "WORKERS"), help=argparse.SUPPRESS)
    parser.add_argument("--child-plan", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_run:
        return child_run(int(args.child_run[0]), args.child_run[1], int(args.child_run[2]))
    if args.child_plan:
        return child_plan(args.child_plan)

    repo = args.repo.resolve()
    print(f"voxforge at {repo}; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, "
          f"{time.strftime('%Y-%m-%d')}, workers {args.workers}")
    sizes = [int(n) for n in args.sizes.split(",")]
    runs = {}
    for size in sizes:
        with tempfile.TemporaryDirectory(prefix="vf-scale-") as out:
            runs[size] = _child(args.python, repo, "--child-run", str(size), str(Path(out) / "ds"), str(args.workers))
        result = runs[size]
        print(f"  {size:>6} objects: wall {result['wall']:7.1f} s, driver CPU {result['cpu']:6.1f} s, "
              f"driver peak {result['max_rss_mb']:5.0f} MB, {size / result['wall']:6.1f} objects/s")
    stage = stage_seconds(24)
    small, large = sizes[0], sizes[-1]
    extra = large - small
    driver_ms = 1000 * (runs[large]["cpu"] - runs[small]["cpu"]) / extra
    worker_ms = 1000 * (runs[large]["wall"] - runs[small]["wall"]) * args.workers / extra
    print(f"driver CPU per object ({small} -> {large}): {driver_ms:.2f} ms  (cap: {1000 / max(driver_ms, 1e-9):,.0f} "
          "objects/s for one driver)")
    print(f"worker time per object: {worker_ms:.1f} ms; stages alone {1000 * stage:.1f} ms; "
          f"fixed overhead {worker_ms - 1000 * stage:.1f} ms per object")
    for count in [int(n) for n in args.memory.split(",") if n]:
        plan = _child(args.python, repo, "--child-plan", str(count))
        print(f"driver memory, {count:>8} records selected and planned ({plan['tasks']} shard tasks): "
              f"peak {plan['peak_mb']:.0f} MB (imports alone {plan['before_mb']:.0f} MB)")

    # projection: rendering is the per-object cost that scales out; the driver and the store do not
    print("\nprojection (per-object costs as measured here; one worker per CPU core):")
    for name, objects in (("Objaverse 1.0", 800_000), ("Objaverse-XL", 10_000_000)):
        cap_s = objects * driver_ms / 1000
        print(f"  {name}: {objects:,} objects; one driver alone needs {cap_s / 3600:.2f} h of CPU to schedule them")


if __name__ == "__main__":
    main()
