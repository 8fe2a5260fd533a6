"""Downloads streaming into rendering vs. downloading everything first, against a slow loopback Hub.

Every GLB answers after ``--latency`` seconds (a distant or busy server). Compared, wall time of
``pipeline run objaverse`` on the same objects (Ray already started, so start-up is not counted):

- streaming with ``--downloads 4`` (the default) and ``--downloads 1``;
- the obvious alternative: fetch every file first (4 threads), then run on the warm cache.

    python bench/bench_downloads.py [--latency 1.0] [--repeats 2]

Needs ../shared/data (the GLBs served) and a working renderer.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from http_fixtures import LoopbackServer, objaverse_files  # noqa: E402

from voxforge.pipeline.config import RunConfig  # noqa: E402
from voxforge.pipeline.downloads.materialize import ensure_local  # noqa: E402
from voxforge.pipeline.run import init_ray, run  # noqa: E402
from voxforge.pipeline.sources import create_source  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    shared = ROOT.parent / "shared" / "data"
    server = LoopbackServer(slow_s=args.latency)
    files, _ = objaverse_files(shared)
    server.add_repo("allenai/objaverse", files)
    for name in files:
        if name.startswith("glbs/"):
            server.fault(f"allenai/objaverse/{name}", "always:slow")
    os.environ["HF_ENDPOINT"] = server.url
    work = Path(tempfile.mkdtemp(prefix="vf-bench-"))
    base = dict(source="objaverse", categories=["chair", "bus", "duck"], views=12, size=127, points=4096, workers=2,
                progress=False, download_backoff=0.05, download_timeout=args.latency + 10)
    init_ray(RunConfig(workers=2))

    def fresh(tag: str, **values) -> RunConfig:
        for folder in ("out", "glbs"):
            shutil.rmtree(work / tag / folder, ignore_errors=True)
        # annotations stay cached between repeats; meshes never do
        shutil.rmtree(work / tag / "cache" / "objaverse" / "hf-objaverse-v1" / "glbs", ignore_errors=True)
        return RunConfig(**{**base, "out": str(work / tag / "out"), "cache": str(work / tag / "cache"), **values})

    def streaming(downloads: int) -> float:
        config = fresh(f"stream{downloads}", downloads=downloads)
        started = time.perf_counter()
        summary = run(config)
        assert summary.failed == 0, summary.report()
        return time.perf_counter() - started

    def download_first() -> float:
        config = fresh("first", downloads=4)
        started = time.perf_counter()
        records = create_source("objaverse", config=config).select(config.categories, None)
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda record: ensure_local(record.fetch), records))
        summary = run(config)
        assert summary.failed == 0, summary.report()
        return time.perf_counter() - started

    objects = len([n for n in files if n.startswith("glbs/")])
    results = {"streaming, --downloads 4": [], "streaming, --downloads 1": [], "download all first (4 threads)": []}
    for _ in range(args.repeats):
        results["streaming, --downloads 4"].append(streaming(4))
        results["streaming, --downloads 1"].append(streaming(1))
        results["download all first (4 threads)"].append(download_first())
    reference = statistics.median(results["download all first (4 threads)"])
    print(f"{objects} objects, {args.latency:g} s per GLB request, 12 views, 2 render workers; "
          f"median of {args.repeats} (Ray start-up excluded)")
    for name, times in results.items():
        median = statistics.median(times)
        print(f"  {name:<34} {median:6.1f} s   x{reference / median:.2f} vs download-first")
    server.close()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
