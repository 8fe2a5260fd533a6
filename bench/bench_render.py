"""Views/s of the pyrender backend on real ShapeNet meshes and procedural objects, one core.

Compares pyrender's own 4x MSAA (the obvious way to get anti-aliased edges) with voxforge's 2x2
supersampling and with no anti-aliasing. Each mode runs in its own process (the MSAA switch is
process-wide). Prints the median over repeats of 24 views per mesh.

    python bench/bench_render.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def meshes():
    import trimesh

    from voxforge.pipeline.sources.procedural import generate

    items = [(f"shapenet {p.parts[-4]}/{p.parts[-3][:8]}", lambda p=p: trimesh.load(p, force="scene", process=False))
             for p in sorted(SHARED.glob("shapenetcore_v2/*/*/models/model_normalized.obj"))]
    items += [(f"procedural {c}", lambda c=c: generate(c, 0)) for c in ("chair", "table", "car", "airplane", "lamp", "mug")]
    return items


def measure(mode: str, repeats: int) -> dict:
    import numpy as np

    from voxforge.pipeline.meshes import flatten, validate_and_normalize
    from voxforge.renderers import get_renderer, sample_lighting
    from voxforge.renderers.cameras import sample_cameras

    if mode == "msaa4":  # pyrender as shipped: no supersampling, its 4x multisampled framebuffer
        import voxforge.renderers.pyrender_egl as backend

        backend._disable_msaa = lambda module: None
        renderer = get_renderer("pyrender")(127, supersample=1)
    else:
        renderer = get_renderer("pyrender")(127, supersample=2 if mode == "ss2" else 1)
    results = {}
    for name, load in meshes():
        scene, _ = validate_and_normalize(load())
        faces = len(flatten(scene)[1])
        cameras = sample_cameras(24, 127, np.random.default_rng(0))
        lights = sample_lighting(24, np.random.default_rng(0))
        renderer.render(scene, cameras, lights)  # warm-up: uploads buffers and textures
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            renderer.render(scene, cameras, lights)
            times.append(time.perf_counter() - start)
        results[name] = {"faces": faces, "views_per_s": 24 / float(np.median(times))}
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(measure(args.mode, args.repeats)))
        return
    env = dict(os.environ, LP_NUM_THREADS="1")  # one core per renderer, as in the pipeline
    modes = {}
    for mode in ("msaa4", "ss2", "ss1"):
        output = subprocess.run([sys.executable, __file__, "--mode", mode, "--repeats", str(args.repeats)],
                                env=env, capture_output=True, text=True, check=True).stdout
        modes[mode] = json.loads(output.strip().splitlines()[-1])
    print(f"{'mesh':<28}{'faces':>8}{'msaa4 v/s':>11}{'ss2 v/s':>10}{'ss1 v/s':>10}{'ss2/msaa4':>11}")
    for name, row in modes["ss2"].items():
        msaa, ss2, ss1 = (modes[m][name]["views_per_s"] for m in ("msaa4", "ss2", "ss1"))
        print(f"{name:<28}{row['faces']:>8}{msaa:>11.1f}{ss2:>10.1f}{ss1:>10.1f}{ss2 / msaa:>10.2f}x")
    import numpy as np

    for mode in modes:
        print(f"median over meshes, {mode}: {np.median([r['views_per_s'] for r in modes[mode].values()]):.1f} views/s per core")


if __name__ == "__main__":
    main()
