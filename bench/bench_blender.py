"""Views/s of the Blender renderer per engine at 127x127, one core, next to pyrender; then end-to-end
objects/s of ``pipeline run --renderer blender*``.

Each renderer runs in its own process with one render thread (``threads=1``, ``LP_NUM_THREADS=1``
for Mesa's llvmpipe), pinned to one core (``sched_setaffinity``), so the figures are per core. A render
call is a whole object: the scene is emptied, the file imported (ShapeNet OBJ with its MTL and
textures) or the procedural mesh built, and 24 views rendered, so import and reset are included.
Medians over ``--repeats``. Two figures per cell: views per wall-clock second on that core and, in
brackets, views per CPU-second of the process. (Unpinned, Blender, Mesa and numpy spread helper threads
over the other core without rendering faster: on an idle 2-core machine that halved the per-CPU-second
figures, while under load it did not, so only the pinned wall-clock figure is a per-core rate.)

    python bench/bench_blender.py [--repeats 3] [--objects 24] [--skip-pipeline] [--eevee] [--iou-only]

Targets (issue #5, this machine): Cycles 16 spp >= 8 views/s per core, Workbench >= 40 views/s per
core. EEVEE is only measured with ``--eevee``, on 2 meshes x 4 views (seconds per view on llvmpipe;
meant for GPU hosts).
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

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SIZE, VIEWS = 127, 24
EEVEE_VIEWS = 4  # seconds per view on llvmpipe: a few views are enough to measure it
CONFIGS = {  # label -> (renderer, supersample)
    "pyrender 2x2": ("pyrender", 2),
    "cycles 16 spp": ("blender", 2),
    "workbench FXAA": ("blender-workbench", 2),
    "workbench 5 samples": ("blender-workbench", 3),
    "workbench no AA": ("blender-workbench", 1),
    "eevee 16 samples": ("blender-eevee", 2),
}


def meshes():
    import trimesh

    from voxforge.pipeline.sources.procedural import generate

    items = [(f"shapenet {p.parts[-4]}/{p.parts[-3][:8]}", p, lambda p=p: trimesh.load(p, force="scene", process=False))
             for p in sorted(SHARED.glob("shapenetcore_v2/*/*/models/model_normalized.obj"))]
    items += [(f"procedural {c}", None, lambda c=c: generate(c, 0))
              for c in ("chair", "table", "car", "airplane", "lamp", "mug")]
    return items


def measure(label: str, repeats: int, limit: int | None) -> dict:
    import numpy as np

    from voxforge.pipeline.meshes import flatten, validate_and_normalize
    from voxforge.renderers import get_renderer, sample_lighting
    from voxforge.renderers.base import attach_source_file
    from voxforge.renderers.cameras import sample_cameras

    name, supersample = CONFIGS[label]
    views = EEVEE_VIEWS if "eevee" in label else VIEWS
    renderer = get_renderer(name)(SIZE, supersample=supersample)
    results = {}
    for mesh_name, path, load in meshes()[:limit]:
        scene, normalization = validate_and_normalize(load())
        if path is not None:
            attach_source_file(scene, str(path), normalization.matrix())
        faces = len(flatten(scene)[1])
        cameras = sample_cameras(views, SIZE, np.random.default_rng(0))
        lights = sample_lighting(views, np.random.default_rng(0))
        renderer.render(scene, cameras, lights)  # warm-up (first frame compiles shaders, loads kernels)
        times, cpu_times = [], []
        for _ in range(repeats):
            start, cpu_start = time.perf_counter(), time.process_time()
            renderer.render(scene, cameras, lights)
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
        results[mesh_name] = {"faces": faces, "views_per_s": views / float(np.median(times)),
                              "views_per_cpu_s": views / float(np.median(cpu_times))}
    renderer.close()
    return results


def mask_agreement(views: int = 8) -> None:
    """Per mesh, the lowest per-view mask IoU against pyrender: as shipped (both anti-aliased) and with
    anti-aliasing off on both sides (both sample pixel centres: geometry only)."""
    import numpy as np

    from voxforge.pipeline.meshes import flatten, validate_and_normalize
    from voxforge.renderers import get_renderer, sample_lighting
    from voxforge.renderers.base import attach_source_file
    from voxforge.renderers.cameras import CameraRanges, sample_cameras

    pairs = {"default": (get_renderer("pyrender")(SIZE), get_renderer("blender")(SIZE)),
             "no AA": (get_renderer("pyrender")(SIZE, supersample=1), get_renderer("blender")(SIZE, supersample=1))}
    print(f"\nmask IoU (alpha >= 128) against pyrender, lowest of {views} views, Cycles")
    print("| mesh | as shipped | anti-aliasing off |")
    print("|---|---:|---:|")
    for index, (mesh_name, path, load) in enumerate(meshes()):
        scene, normalization = validate_and_normalize(load())
        if path is not None:
            attach_source_file(scene, str(path), normalization.matrix())
        radius = float(np.linalg.norm(flatten(scene)[0], axis=1).max())
        cameras = sample_cameras(views, SIZE, np.random.default_rng(index), CameraRanges(), object_radius=radius)
        lights = sample_lighting(views, np.random.default_rng(index))
        cells = []
        for reference, blender in pairs.values():
            a, b = reference.render(scene, cameras, lights).alpha >= 128, blender.render(scene, cameras, lights).alpha >= 128
            cells.append(min(float((a[v] & b[v]).sum() / max((a[v] | b[v]).sum(), 1)) for v in range(views)))
        print(f"| {mesh_name} | {cells[0]:.3f} | {cells[1]:.3f} |")


def run_in_subprocess(label: str, repeats: int, limit: int | None) -> dict:
    env = dict(os.environ, LP_NUM_THREADS="1")
    command = [sys.executable, __file__, "--worker", label, "--repeats", str(repeats)]
    if limit:
        command += ["--limit", str(limit)]
    output = subprocess.run(command, capture_output=True, text=True, env=env, check=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def pipeline_objects_per_s(renderer: str, objects: int) -> tuple[float, float]:
    """(objects/s, views/s) of a whole ``pipeline run procedural`` with 2 workers, Ray start included."""
    out = Path(tempfile.mkdtemp(prefix="voxforge-bench-blender-"))
    try:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "voxforge.pipeline.cli", "run", "procedural", "--limit", str(objects),
                        "--renderer", renderer, "--workers", "2", "--out", str(out), "--no-progress"],
                       check=True, capture_output=True)
        seconds = time.perf_counter() - start
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return objects / seconds, objects * VIEWS / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--objects", type=int, default=24, help="objects for the end-to-end runs")
    parser.add_argument("--limit", type=int, help="only the first N meshes (quick runs)")
    parser.add_argument("--skip-pipeline", action="store_true")
    parser.add_argument("--eevee", action="store_true", help="also EEVEE (slow on a CPU: llvmpipe)")
    parser.add_argument("--iou-only", action="store_true", help="only the mask agreement table")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core: the figures are per core
        print(json.dumps(measure(args.worker, args.repeats, args.limit)))
        return

    import numpy as np

    if args.iou_only:
        mask_agreement()
        return
    labels = [label for label in CONFIGS if args.eevee or "eevee" not in label]
    results = {}
    for label in labels:
        results[label] = run_in_subprocess(label, 1 if "eevee" in label else args.repeats,
                                           min(args.limit or 2, 2) if "eevee" in label else args.limit)
        print(f"measured {label}", file=sys.stderr, flush=True)
    names = list(results["pyrender 2x2"])
    load = os.getloadavg()[0]
    print(f"views per second on one pinned core (per CPU-second) at {SIZE}x{SIZE}, one thread, {VIEWS} views per object "
          f"({EEVEE_VIEWS} for EEVEE), import + reset included, median of {args.repeats}; load average {load:.1f}")
    print("| mesh | faces | " + " | ".join(labels) + " |")
    print("|---|---:|" + "---:|" * len(labels))

    def cell(entry: dict) -> str:
        digits = 2 if entry["views_per_s"] < 1 else 1
        return f"{entry['views_per_s']:.{digits}f} ({entry['views_per_cpu_s']:.{digits}f})"

    for name in names:
        cells = [cell(results[label][name]) if name in results[label] else "-" for label in labels]
        print(f"| {name} | {results['pyrender 2x2'][name]['faces']:,} | " + " | ".join(cells) + " |")
    medians = [float(np.median([v["views_per_s"] for v in results[label].values()])) for label in labels]
    print("| **median** | | " + " | ".join(f"**{m:.2f}**" if m < 1 else f"**{m:.1f}**" for m in medians) + " |")
    pyrender_median = medians[0]
    for label, median in zip(labels[1:], medians[1:]):
        print(f"{label}: {median:.2f} views/s per core = {median / pyrender_median:.2f}x pyrender 2x2")
    mask_agreement()
    if args.skip_pipeline:
        return
    print(f"\nend to end: pipeline run procedural --limit {args.objects} --workers 2 ({VIEWS} views, Ray start-up "
          "included)")
    for renderer in ("pyrender", "blender", "blender-workbench"):
        objects_per_s, views_per_s = pipeline_objects_per_s(renderer, args.objects)
        print(f"  --renderer {renderer:<18} {objects_per_s:5.2f} objects/s  {views_per_s:6.1f} views/s")


if __name__ == "__main__":
    main()
