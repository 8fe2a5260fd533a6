"""What the per-object safety limits cost on ordinary objects, against the time to make the object's sample.

The limits and checks a worker applies to every object (what a hostile file cannot get past):
- declared sizes read before data: the OBJ face-line count, the STL count, glTF accessor and instance sums
  (inside the glTF decoder, not separable; the OBJ scan is timed on the file's bytes);
- texture headers checked before decoding (``meshio.images.texture_problem``);
- float64 re-centring of far-off geometry (``meshes.recenter_geometry``);
- the check that each view's mask holds the object's projected points (``alignment.check_alignment``);
- the deadline watched from outside: the worker rewrites a small file at the start, each stage and the
  end of every object (``ExternalDeadline.set`` / ``stage``; the watchdog process polls it twice a second);
- the memory cap (RLIMIT_DATA) is kernel accounting: nothing to time per object.

Each object's sample is made ``--rounds`` times with the pyrender renderer at the default settings (24
views, 127 px, 32^3 voxels, 16384 points); the guards' own time is accumulated by wrapping them. The report
is per object: median sample time, median guard time, and their ratio (target: under 5%).

    python bench/bench_limits.py [--rounds 3] [--data ../shared/data] [--files 12]
"""

from __future__ import annotations

import argparse
import collections
import functools
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GUARD_TIME: collections.Counter = collections.Counter()


def timed(name: str, function):
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            GUARD_TIME[name] += time.perf_counter() - started
    return wrapper


def wrap_guards() -> None:
    from voxforge.meshio import gltf, names, obj
    from voxforge.pipeline import meshes, stages

    stages.check_alignment = timed("alignment check", stages.check_alignment)
    meshes.recenter_geometry = timed("float64 re-centring", meshes.recenter_geometry)
    for module in (gltf, obj, names):
        module.texture_problem = timed("texture headers", module.texture_problem)


def pick_files(data: Path, count: int) -> list[Path]:
    chosen = sorted((data / "shapenetcore_v2").rglob("*.obj"))[: count // 3]
    chosen += sorted((data / "meshes" / "modelnet").rglob("*.off"))[: count // 3]
    chosen += sorted(p for p in (data / "meshes").rglob("*.glb"))[: count - len(chosen)]
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--files", type=int, default=12)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args()

    import numpy as np

    from voxforge.pipeline.config import RunConfig
    from voxforge.pipeline.deadline import ExternalDeadline
    from voxforge.pipeline.sources import ObjectRecord
    from voxforge.pipeline.stages import make_sample
    from voxforge.renderers import get_renderer
    from voxforge.renderers.backgrounds import BackgroundPool

    wrap_guards()
    renderer = get_renderer("pyrender")(127)
    config = RunConfig()
    deadline = ExternalDeadline(grace_s=5.0)
    marker = str(Path(tempfile.gettempdir()) / "bench-limits-marker.json")

    def on_stage(name: str) -> None:
        started = time.perf_counter()
        deadline.stage(name)
        GUARD_TIME["external deadline"] += time.perf_counter() - started

    rows = []
    for path in pick_files(args.data, args.files):
        record = ObjectRecord(object_id=path.stem, category="x", source="local", uri=str(path))
        sample_s, guard_s = [], []
        for _ in range(args.rounds + 1):  # the first round warms caches and is not counted
            GUARD_TIME.clear()
            started = time.perf_counter()
            with_deadline = time.perf_counter()
            deadline.set(time.time() + 600, "", marker, "timed out")
            GUARD_TIME["external deadline"] += time.perf_counter() - with_deadline
            make_sample(record, "train", renderer, BackgroundPool(None), config, on_stage=on_stage)
            with_deadline = time.perf_counter()
            deadline.set(None)
            GUARD_TIME["external deadline"] += time.perf_counter() - with_deadline
            if path.suffix == ".obj":  # the declared-triangle scan of the OBJ reader, on the same bytes
                data = path.read_bytes()
                scan = time.perf_counter()
                data.count(b"\nf ")
                GUARD_TIME["declared sizes (OBJ scan)"] += time.perf_counter() - scan
            sample_s.append(time.perf_counter() - started)
            guard_s.append(dict(GUARD_TIME))
        sample_s, guard_s = sample_s[1:], guard_s[1:]
        per_guard = {name: statistics.median(g.get(name, 0.0) for g in guard_s) for name in
                     sorted({n for g in guard_s for n in g})}
        rows.append((path.name, statistics.median(sample_s), per_guard))
    deadline.close()
    renderer.close()

    print(f"{'file':<40} {'sample ms':>10} {'guards ms':>10} {'share':>7}  largest guard")
    shares = []
    for name, sample, per_guard in rows:
        total = sum(per_guard.values())
        shares.append(total / sample)
        largest = max(per_guard.items(), key=lambda item: item[1]) if per_guard else ("-", 0.0)
        print(f"{name[:40]:<40} {sample * 1e3:10.1f} {total * 1e3:10.2f} {100 * total / sample:6.2f}%  "
              f"{largest[0]} {largest[1] * 1e3:.2f} ms")
    print(f"median share of the guards in per-object time: {100 * float(np.median(shares)):.2f}% "
          f"(max {100 * max(shares):.2f}%; target under 5%)")


if __name__ == "__main__":
    main()
