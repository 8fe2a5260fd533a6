"""Mesh-file loading speed per file type, one checkout of voxforge against another (before/after a loader change).

What is timed, per file, is what the pipeline's load stage does with a local mesh file:
``LocalSource.load_record(record)``, then ``meshes.validate_and_normalize(scene)`` and ``meshes.flatten(scene)``.
Each checkout is measured in ONE child process with that checkout first on sys.path, so imports are not
timed and both trees read the same files. Each file is loaded once to warm up (page cache, lazy imports),
then timed --repeats times; the per-file figure is the median. Per type the report sums the per-file
medians over the files that load in BOTH trees, so the ratio after/before compares the same work; a file
that fails in either tree is listed with its error, never dropped silently. Files whose triangle counts
differ between the trees are listed too (the two loaders then did different work, e.g. n-gon triangulation).

Files: the real meshes under <data>/meshes (trimesh, kaolin, glTF samples, ModelNet OFF) and the ShapeNetCore v2
OBJ files under <data>/shapenetcore_v2; the --per-type largest of each type (0: all), so timings are not noise.

    python bench/bench_loading.py --before ../voxforge-before [--after .] [--repeats 5] [--types obj,glb,...]
                                  [--per-type 8] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
TYPES = "obj,glb,gltf,off,ply,stl,dae"


def pick_files(data: Path, types: list[str], per_type: int) -> dict[str, list[Path]]:
    """Type -> the largest files of that type (all when per_type is 0), under meshes/ and shapenetcore_v2/."""
    found: dict[str, list[Path]] = {t: [] for t in types}
    for folder in ("meshes", "shapenetcore_v2"):
        for path in (data / folder).rglob("*") if (data / folder).is_dir() else ():
            kind = path.suffix.lower().lstrip(".")
            if kind in found and path.is_file():
                found[kind].append(path)
    for kind, paths in found.items():
        paths.sort(key=lambda p: (-p.stat().st_size, str(p)))
        found[kind] = paths[:per_type] if per_type else paths
    return {kind: paths for kind, paths in found.items() if paths}


def child(repo: str, repeats: int, paths: list[str]) -> None:
    """In the child: median seconds (and triangle count) per file, or the error, as one JSON line."""
    sys.path.insert(0, repo)
    import voxforge
    from voxforge.pipeline.meshes import flatten, validate_and_normalize
    from voxforge.pipeline.sources import ObjectRecord
    from voxforge.pipeline.sources.local import LocalSource

    def load(path: str) -> int:
        record = ObjectRecord(object_id=Path(path).name, category="x", source="local", uri=path)
        scene, _ = validate_and_normalize(LocalSource.load_record(record))
        return len(flatten(scene)[1])

    results = {}
    for path in paths:
        try:
            triangles = load(path)  # warm-up
            times = []
            for _ in range(repeats):
                started = time.perf_counter()
                load(path)
                times.append(time.perf_counter() - started)
            results[path] = {"median": statistics.median(times), "triangles": triangles}
        except Exception as error:  # noqa: BLE001 - any failure is reported per file
            results[path] = {"error": f"{type(error).__name__}: {' '.join(str(error).split())[:160]}"}
    print(json.dumps({"voxforge": voxforge.__file__, "results": results}), flush=True)


def measure(repo: Path, repeats: int, paths: list[Path]) -> dict[str, dict]:
    """Run the child for one checkout; path -> {median, triangles} or {error}."""
    done = subprocess.run([sys.executable, __file__, "--child", str(repo), "--repeats", str(repeats),
                           *map(str, paths)], check=False, capture_output=True, text=True, cwd=repo)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"child for {repo} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    answer = json.loads(lines[-1])
    if not Path(answer["voxforge"]).resolve().is_relative_to(repo):
        raise SystemExit(f"child for {repo} imported voxforge from {answer['voxforge']}, not from that checkout")
    return answer["results"]


def combine(results: list[dict[str, dict]]) -> dict[str, dict]:
    """Per file: the median of the rounds' medians (an error in any round is the file's error)."""
    combined = {}
    for path in results[0]:
        rounds = [r[path] for r in results]
        failed = next((r for r in rounds if "error" in r), None)
        combined[path] = failed or {"median": statistics.median(r["median"] for r in rounds),
                                    "triangles": rounds[0]["triangles"]}
    return combined


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, help="checkout of voxforge before the change")
    parser.add_argument("--after", type=Path, default=ROOT, help="checkout after the change (default: this one)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--types", default=TYPES, help=f"file types to time (default {TYPES}; absent ones skipped)")
    parser.add_argument("--per-type", type=int, default=8, help="the largest N files of each type (0: all)")
    parser.add_argument("--data", type=Path, default=DATA, help="the shared data folder (meshes/, shapenetcore_v2/)")
    parser.add_argument("--per-file", action="store_true", help="also print each file's before/after medians")
    parser.add_argument("--rounds", type=int, default=3, help="child processes per checkout, alternated; a "
                        "file's figure is the median over them (timings of textured files vary by process)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("paths", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.repeats, args.paths)
    if args.before is None:
        parser.error("--before is required")

    before, after = args.before.resolve(), args.after.resolve()
    files = pick_files(args.data.resolve(), [t.strip().lower().lstrip(".") for t in args.types.split(",")],
                       args.per_type)
    paths = [p for kind_paths in files.values() for p in kind_paths]
    print(f"before {before}; after {after}; {len(paths)} files from {args.data.resolve()}; {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.1f}, {time.strftime('%Y-%m-%d')}; median of {args.repeats} after 1 warm-up, "
          f"then of {args.rounds} alternated processes")
    rounds = [(measure(before, args.repeats, paths), measure(after, args.repeats, paths)) for _ in range(args.rounds)]
    old, new = (combine([r[side] for r in rounds]) for side in (0, 1))

    print(f"{'type':<5} {'files':>5} {'before ms':>10} {'after ms':>10} {'after/before':>12}  (sum of per-file medians)")
    failed, differ = [], []
    for kind, kind_paths in files.items():
        both = [str(p) for p in kind_paths if "median" in old[str(p)] and "median" in new[str(p)]]
        for p in kind_paths:
            for tree, result in (("before", old[str(p)]), ("after", new[str(p)])):
                if "error" in result:
                    failed.append(f"  {tree:<6} {p.relative_to(args.data.resolve())}: {result['error']}")
        differ += [f"  {Path(p).relative_to(args.data.resolve())}: {old[p]['triangles']} -> {new[p]['triangles']}"
                   for p in both if old[p]["triangles"] != new[p]["triangles"]]
        if not both:
            print(f"{kind:<5} {0:>5} {'-':>10} {'-':>10} {'-':>12}  ({len(kind_paths)} files, none loads in both)")
            continue
        b, a = (1000 * sum(results[p]["median"] for p in both) for results in (old, new))
        skipped = f"  ({len(kind_paths) - len(both)} of {len(kind_paths)} skipped: failed)" if len(both) < len(
            kind_paths) else ""
        print(f"{kind:<5} {len(both):>5} {b:>10.1f} {a:>10.1f} {a / b:>12.2f}{skipped}")
        if args.per_file:
            for p in both:
                b_ms, a_ms = 1000 * old[p]["median"], 1000 * new[p]["median"]
                print(f"      {Path(p).relative_to(args.data.resolve())}: {b_ms:.1f} -> {a_ms:.1f} ms ({a_ms / b_ms:.2f})")
    if failed:
        print("failed to load (left out of the sums for both trees):", *failed, sep="\n")
    if differ:
        print("triangle counts differ (before -> after):", *differ, sep="\n")


if __name__ == "__main__":
    main()
