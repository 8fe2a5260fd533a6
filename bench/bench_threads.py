"""Training it/s of the README's tiny 3D-R2N2 recipe under the old and the new CPU thread defaults, on an
idle machine and beside other CPU-bound processes (what a shared machine looks like).

    python bench/bench_threads.py [--data ../shared/data/r2n2] [--warmup 2] [--iterations 10] [--repeats 3] [--busy 2]

Four conditions, each ``--repeats`` fresh ``pipeline train`` processes (so no thread pool is shared between
them; old and new alternate, so drifting load hits both alike), median reported:

- old defaults: torch's own intra-op threads (one per core), libgomp's default busy-waiting (torch is
  imported before voxforge, with ``OMP_WAIT_POLICY`` unset), ``--threads -1``;
- new defaults: ``pipeline train`` as shipped: ``max(1, usable CPUs - DataLoader workers)`` intra-op
  threads and ``OMP_WAIT_POLICY=PASSIVE`` (:mod:`voxforge.models.threads`);
- idle, and with ``--busy`` other processes spinning (``while True: pass``, started here and killed after).

The recipe is the README's (``--arch 3d-gru-3 --width 0.125 --image-size 64 --batch-norm --batch-size 7
--views 1-3 --lr 3e-3``, 2 DataLoader workers) on the 7 real 3D-R2N2 objects; it/s is timed from
metrics.csv over ``--iterations`` iterations after ``--warmup`` (no checkpoint is written in between).
``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``, ``OMP_WAIT_POLICY`` and ``GOMP_SPINCOUNT`` are removed from the
children's environment, so both sides run on their defaults. About 4 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ["--arch", "3d-gru-3", "--width", "0.125", "--image-size", "64", "--batch-norm", "--batch-size", "7",
          "--views", "1-3", "--lr", "3e-3", "--lr-steps", "225", "--workers", "2", "--device", "cpu", "--no-progress"]
CLEARED = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def child(mode: str, data: str, out: str, warmup: int, iterations: int) -> None:
    """One training run in this fresh process; prints a JSON line with its it/s and thread settings."""
    if mode == "old":
        import torch  # noqa: F401  first: libgomp loads (and reads its environment) before voxforge sets anything
    else:
        import voxforge.models  # noqa: F401  as ``pipeline`` does, before torch: sets the wait policy
        assert "torch" not in sys.modules
    policy = os.environ.get("OMP_WAIT_POLICY", "unset")  # what libgomp reads when torch loads

    from voxforge.pipeline.cli import main
    argv = ["train", "--data", data, "--out", out, "--iterations", str(warmup + iterations), "--log-every", "1",
            "--checkpoint-every", str(10**9), "--checkpoint-minutes", "0", *RECIPE]
    if mode == "old":
        argv += ["--threads", "-1"]
    code = main(argv)
    if code != 0:
        raise SystemExit(f"pipeline train exited {code}")
    import torch

    from voxforge.models.threads import intra_op_threads

    threads = torch.get_num_threads() if mode == "old" else intra_op_threads(2)
    with open(Path(out) / "metrics.csv") as handle:
        seconds = {int(row["iteration"]): float(row["seconds"]) for row in csv.DictReader(handle)}
    rate = iterations / (seconds[warmup + iterations] - seconds[warmup])
    print(json.dumps({"mode": mode, "it_s": rate, "threads": threads, "wait_policy": policy}))


def run_child(mode: str, args, env: dict) -> dict:
    with tempfile.TemporaryDirectory(prefix="voxforge-bench-threads-") as folder:
        command = [sys.executable, str(Path(__file__).resolve()), "--child", mode, "--data", args.data,
                   "--warmup", str(args.warmup), "--iterations", str(args.iterations), "--out", folder + "/run"]
        done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            raise SystemExit(f"{mode} run failed:\n{done.stdout}\n{done.stderr}")
        return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "r2n2"), help="3D-R2N2 layout")
    parser.add_argument("--warmup", type=int, default=2, help="iterations left out first (default 2)")
    parser.add_argument("--iterations", type=int, default=10, help="timed iterations per run (default 10)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per condition; the median counts (default 3)")
    parser.add_argument("--busy", type=int, default=2, help="CPU-bound processes of the loaded condition (default 2)")
    parser.add_argument("--child", choices=("old", "new"), help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.data, args.out, args.warmup, args.iterations)
        return

    set_by_user = {name: os.environ[name] for name in CLEARED if name in os.environ}  # before voxforge sets one
    env = {k: v for k, v in os.environ.items() if k not in CLEARED}
    sys.path.insert(0, str(ROOT))
    from voxforge.models.threads import cgroup_cpu_limit, usable_cpus

    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    load_before = os.getloadavg()
    began = time.time()
    results: dict[tuple[str, str], list[dict]] = {}
    conditions = [("idle", 0), (f"{args.busy} busy processes", args.busy)]
    for condition, busy in conditions:
        spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
        try:
            time.sleep(1.0 if busy else 0.0)
            for _ in range(args.repeats):
                for mode in ("old", "new"):
                    results.setdefault((condition, mode), []).append(run_child(mode, args, env))
        finally:
            for spinner in spinners:
                spinner.kill()
                spinner.wait()
    load_after = os.getloadavg()

    import torch

    limit = cgroup_cpu_limit()
    backend = torch.__config__.parallel_info().splitlines()[-1].strip()  # "ATen parallel backend: OpenMP"
    print(f"bench_threads: README tiny 3D-R2N2 recipe (3d-gru-3 width 0.125, 64 px, batch 7, views 1-3, "
          f"2 DataLoader workers), {args.warmup} warm-up + {args.iterations} timed iterations, "
          f"median of {args.repeats} fresh processes")
    print(f"date {time.strftime('%Y-%m-%d %H:%M', time.localtime(began))}, nproc {os.cpu_count()} "
          f"(affinity {len(os.sched_getaffinity(0))}, cgroup quota {'none' if limit is None else f'{limit:g} CPUs'}, "
          f"usable {usable_cpus()}), torch {torch.__version__} ({backend})")
    print("load average (1/5/15 min) at start " + " / ".join(f"{x:.2f}" for x in load_before)
          + ", at end " + " / ".join(f"{x:.2f}" for x in load_after) + f"; {time.time() - began:.0f} s in all")
    if set_by_user:
        print(f"(removed from the children's environment: {set_by_user})")
    print(f"{'condition':<20} {'old it/s':>9} {'new it/s':>9} {'new/old':>8}   runs old | new")
    for condition, _ in conditions:
        old = [r["it_s"] for r in results[(condition, "old")]]
        new = [r["it_s"] for r in results[(condition, "new")]]
        print(f"{condition:<20} {statistics.median(old):>9.2f} {statistics.median(new):>9.2f} "
              f"{statistics.median(new) / statistics.median(old):>8.2f}   "
              f"{' '.join(f'{x:.2f}' for x in old)} | {' '.join(f'{x:.2f}' for x in new)}")
    for mode in ("old", "new"):
        first = results[(conditions[0][0], mode)][0]
        print(f"{mode}: {first['threads']} intra-op thread(s), OMP_WAIT_POLICY {first['wait_policy']} "
              "when torch loaded, DataLoader workers 1 thread each")


if __name__ == "__main__":
    main()
