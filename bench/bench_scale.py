"""What limits a run as it grows: the driver's CPU and memory per object, and the workers' fixed cost per object.

Tiny objects (1 view of 16 px, 64 points, 8^3 voxels), so the renderer is not the limit. Each run is
``pipeline run procedural`` in a fresh process; the figures are slopes between run sizes, so start-up
(Ray, imports) cancels out:

- driver CPU per object: CPU seconds of the ``pipeline`` process itself (all its threads), per extra object;
- worker fixed cost per object: worker-seconds per extra object (wall x workers) minus the time the
  stages themselves take for the same objects in one process (measured here too);
- driver memory: peak resident memory of selecting N procedural records, planning them into a plan file
  and making Ray Data's read tasks for them (what the driver holds before work starts);
- throughput: objects/s of full-size objects (24 views of 127 px, 16384 points, 32^3 voxels) with 1
  and 2 workers here and on a two-node loopback Ray cluster (every node on 127.0.0.1).

Then a projection for Objaverse (800k objects) and Objaverse-XL (10M) on N nodes: the stages' time per
object of the shared ShapeNet meshes (one process, full size) plus the fixed overhead measured above.

    python bench/bench_scale.py [--sizes 100,1000,10000] [--workers 2] [--memory 10000,100000,1000000]
                                [--parts driver,memory,throughput,projection] [--objects 96]
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


def child_run(arguments: list[str]) -> None:
    """In the child: one pipeline run, then this process's own CPU time and peak memory as JSON."""
    from voxforge.pipeline.cli import main

    started = time.perf_counter()
    code = main(["run", "procedural", *arguments, "--no-progress"])
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"code": code, "wall": time.perf_counter() - started, "cpu": usage.ru_utime + usage.ru_stime,
                      "max_rss_mb": usage.ru_maxrss / 1024}), flush=True)


def child_plan(limit: int) -> None:
    """In the child: what the driver does before work for ``limit`` procedural records: select them, plan the
    shard tasks into a plan file, and make Ray Data's read tasks for them."""
    from voxforge.pipeline.config import RunConfig
    from voxforge.pipeline.manifest import CommittedState, IdSet
    from voxforge.pipeline.run import plan_run
    from voxforge.pipeline.sources import create_source
    from voxforge.pipeline.task_source import ShardTaskSource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    nothing_done = CommittedState(IdSet(), IdSet(), {})
    with tempfile.NamedTemporaryFile("wb") as plan_file:
        planner, starts = plan_run(RunConfig(limit=limit), nothing_done, create_source("procedural").stream(None, limit),
                                   plan_file)
        read_tasks = ShardTaskSource(plan_file.name, "", starts).get_read_tasks(planner.tasks)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"records": planner.selected, "tasks": len(read_tasks), "before_mb": before / 1024,
                      "peak_mb": peak / 1024}), flush=True)


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
    parser.add_argument("--parts", default="driver,memory,throughput,projection")
    parser.add_argument("--objects", type=int, default=96, help="full-size objects for the throughput part")
    parser.add_argument("--child-run", help=argparse.SUPPRESS)  # JSON list of pipeline run arguments
    parser.add_argument("--child-plan", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_run:
        return child_run(json.loads(args.child_run))
    if args.child_plan:
        return child_plan(args.child_plan)

    repo = args.repo.resolve()
    parts = args.parts.split(",")
    print(f"voxforge at {repo}; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, "
          f"{time.strftime('%Y-%m-%d')}, workers {args.workers}")
    driver_ms, overhead_ms = None, 0.0
    if "driver" in parts:
        driver_ms, overhead_ms = driver_part(args, repo)
    if "memory" in parts:
        for count in [int(n) for n in args.memory.split(",") if n]:
            plan = _child(args.python, repo, "--child-plan", str(count))
            print(f"driver memory, {count:>8} records selected and planned ({plan['tasks']} shard tasks): peak "
                  f"{plan['peak_mb']:.0f} MB (after imports {plan['before_mb']:.0f} MB)")
    if "throughput" in parts:
        throughput_part(args, repo)
    if "projection" in parts:
        project(driver_ms, overhead_ms)


def _run(args, repo: Path, *arguments: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="vf-scale-") as out:
        return _child(args.python, repo, "--child-run", json.dumps([*arguments, "--out", str(Path(out) / "ds")]))


def driver_part(args, repo: Path) -> tuple[float, float]:
    """Driver CPU and worker overhead per tiny object (slopes between run sizes), in ms."""
    sizes = [int(n) for n in args.sizes.split(",")]
    runs = {}
    for size in sizes:
        runs[size] = result = _run(args, repo, "--limit", str(size), *TINY, "--workers", str(args.workers))
        print(f"  {size:>6} tiny objects: wall {result['wall']:7.1f} s, driver CPU {result['cpu']:6.1f} s, "
              f"driver peak {result['max_rss_mb']:5.0f} MB, {size / result['wall']:6.1f} objects/s")
    stage = stage_seconds(24)
    small, large = sizes[0], sizes[-1]
    extra = large - small
    driver_ms = 1000 * (runs[large]["cpu"] - runs[small]["cpu"]) / extra
    worker_ms = 1000 * (runs[large]["wall"] - runs[small]["wall"]) * args.workers / extra
    print(f"driver CPU per object ({small} -> {large}): {driver_ms:.2f} ms  (cap: {1000 / max(driver_ms, 1e-9):,.0f} "
          "objects/s for one driver)")
    print(f"worker time per tiny object: {worker_ms:.1f} ms; stages alone {1000 * stage:.1f} ms; "
          f"fixed overhead {worker_ms - 1000 * stage:.1f} ms per object")
    return driver_ms, worker_ms - 1000 * stage


def throughput_part(args, repo: Path) -> None:
    """Objects/s of full-size objects, from the slope between a run of N/4 and one of N objects (Ray's
    start-up cancels out)."""
    small, large = max(1, args.objects // 4), args.objects

    def rate(*arguments: str) -> tuple[float, float]:
        walls = [_run(args, repo, "--limit", str(n), *arguments)["wall"] for n in (small, large)]
        return (large - small) / (walls[1] - walls[0]), walls[1]

    rates = {}
    for workers in (1, 2):
        rates[workers], wall = rate("--workers", str(workers))
        print(f"  full-size objects, {workers} worker(s) here: {rates[workers]:.2f} objects/s "
              f"({large} objects in {wall:.1f} s incl. Ray start)")
    from ray.cluster_utils import Cluster

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # the driver, too, on 127.0.0.1
    cluster = Cluster(initialize_head=True, head_node_args={"node_ip_address": "127.0.0.1", "num_cpus": 1,
                                                            "include_dashboard": False})
    try:
        cluster.add_node(node_ip_address="127.0.0.1", num_cpus=1)
        cluster.wait_for_nodes()
        clustered, wall = rate("--address", cluster.address)
        print(f"  full-size objects, loopback cluster of 2 nodes x 1 CPU: {clustered:.2f} objects/s "
              f"({large} objects in {wall:.1f} s)")
    finally:
        cluster.shutdown()


def full_size_seconds() -> tuple[float, str]:
    """Median seconds of the stages for one full-size object in one process: the shared ShapeNet meshes
    when ../shared/data is there (closer to real collections than the procedural shapes)."""
    sys.path.insert(0, str(ROOT / "bench"))
    from bench_pipeline import SHARED, stage_times

    from voxforge.pipeline.config import RunConfig
    from voxforge.pipeline.sources import create_source

    config = RunConfig(progress=False)  # 24 views of 127 px, 16384 points, 32^3 voxels
    if SHARED.is_dir():
        records, what = create_source("local", path=str(SHARED / "shapenetcore_v2")).select(None, None), \
            "the shared ShapeNet meshes"
    else:
        records, what = create_source("procedural").select(None, 12), "procedural objects"
    return statistics.median(stage_times(records, config)["total"]), what


def project(driver_ms: float | None, overhead_ms: float) -> None:
    """Wall-clock for Objaverse and Objaverse-XL on N nodes of C cores at the per-object cost measured here."""
    stages, what = full_size_seconds()
    per_object = stages + overhead_ms / 1000
    print(f"\nprojection: {per_object:.2f} worker-seconds per object ({what}: stages {stages:.2f} s + fixed "
          f"{overhead_ms:.1f} ms; CPU rendering on this machine's cores), one worker per core"
          + (f"; one driver's cap {1000 / driver_ms:,.0f} objects/s" if driver_ms else ""))
    print(f"{'nodes x cores':>14} {'objects/s':>10} {'Objaverse 800k':>15} {'Objaverse-XL 10M':>17}")
    for nodes, cores in ((1, 32), (8, 32), (32, 32), (100, 32)):
        rate = nodes * cores / per_object
        if driver_ms:
            rate = min(rate, 1000 / driver_ms)
        print(f"{nodes:>7} x {cores:<4} {rate:>10.1f} {800_000 / rate / 3600:>13.1f} h {10_000_000 / rate / 3600:>15.1f} h")


if __name__ == "__main__":
    main()
