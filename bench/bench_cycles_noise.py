"""Cycles noise against its cost: how speckled a default 127 px view is, and what more samples or
OpenImageDenoise buy, in views per second.

    python bench/bench_cycles_noise.py [--size 127] [--views 4] [--reference-samples 256]

Each setting renders the same objects, cameras and light rigs (shared meshes and procedural objects) with
the Cycles renderer at its default supersampling (2x2, so the output pixel gets samples x 4); noise is
measured against a reference rendered with ``--reference-samples`` per rendered pixel, over the object
pixels: the RMS luma difference and the share of "speckles" (pixels more than 20 of 255 away). Medians
over views; views/s is the median rate per object. The machine's load is printed with the date.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

MESHES = ["meshes/modelnet/ModelNet10/bathtub/train/bathtub_0001.off",
          "shapenetcore_v2/03001627/341fcdd8a40a2612456cbf78e1e89022/models/model_normalized.obj",
          "meshes/damaged_helmet_gltf/DamagedHelmet.gltf", "meshes/trimesh/bunny.ply"]


def objects(shared: Path):
    from test_blender_renderer import load_object

    from voxforge.pipeline.meshes import flatten, validate_and_normalize
    from voxforge.pipeline.sources.procedural import ProceduralSource

    found = [(name, *load_object(shared / name)[:2]) for name in MESHES]
    for category in ("chair", "car"):
        scene, _ = validate_and_normalize(ProceduralSource.load_record(ProceduralSource().record(category, 0)))
        found.append((f"procedural {category}", scene, flatten(scene)[0]))
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=127)
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--reference-samples", type=int, default=256)
    args = parser.parse_args()
    print(f"{time.strftime('%Y-%m-%d %H:%M')}, load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs, "
          f"{args.size} px, {args.views} views per object")

    from test_blender_renderer import cameras_for

    from voxforge.renderers import sample_lighting
    from voxforge.renderers.agreement import COVERED, luma
    from voxforge.renderers.blender.renderer import BlenderRenderer

    shared = HERE.parent.parent / "shared" / "data"
    scenes = objects(shared)
    settings = [("default: 4 samples, no denoising", dict(samples=4)),
                ("4 samples + OpenImageDenoise", dict(samples=4, denoise=True)),
                ("16 samples", dict(samples=16)),
                ("16 samples + OpenImageDenoise", dict(samples=16, denoise=True))]
    reference_renderer = BlenderRenderer(args.size, samples=args.reference_samples)
    references, jobs = [], []
    for index, (name, scene, vertices) in enumerate(scenes):
        cameras = cameras_for(vertices, args.views, args.size, seed=index)
        lights = sample_lighting(args.views, np.random.default_rng(index))
        jobs.append((scene, cameras, lights))
        references.append(reference_renderer.render(scene, cameras, lights))
    reference_renderer.close()
    for label, options in settings:
        renderer = BlenderRenderer(args.size, **options)
        renderer.render(*jobs[0])  # warm-up: the first render sets Blender up
        rates, rms, speckles = [], [], []
        for job, reference in zip(jobs, references):
            began = time.perf_counter()
            result = renderer.render(*job)
            rates.append(args.views / (time.perf_counter() - began))
            for view in range(args.views):
                region = (result.alpha[view] >= COVERED) & (reference.alpha[view] >= COVERED)
                difference = luma(result.color[view][region]) - luma(reference.color[view][region])
                rms.append(float(np.sqrt(np.mean(difference ** 2))))
                speckles.append(float(np.mean(np.abs(difference) > 20)))
        renderer.close()
        print(f"  {label:<34} {statistics.median(rates):6.2f} views/s   RMS luma error "
              f"{statistics.median(rms):5.2f}   speckles {100 * statistics.median(speckles):5.2f}%")


if __name__ == "__main__":
    main()
