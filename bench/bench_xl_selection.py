"""Driver memory and time of selecting from Objaverse-XL-sized annotation tables.

Synthetic tables shaped like ``allenai/objaverse-xl``'s GitHub table (file URL at a commit, licence,
file type, sha256, a metadata JSON string), N rows each size, written once to a temporary folder.
Each measurement runs in a fresh process:

- ``stream``: voxforge's selection (``XLSelection``: pyarrow batches, memory-mapped kept rows), every
  loadable row selected (no categories: the worst case), then every selected row read back as records
  are, 4096 at a time;
- ``stream, 1 category``: the same with ``--categories chair --match-keywords`` (about 1 row in 12 kept);
- ``pandas``: the obvious alternative and what the ``objaverse`` package's ``get_annotations`` does:
  ``pandas.read_parquet`` of the table (nothing selected yet).

Printed per size: peak resident memory (VmHWM, which also counts the mapped files' pages the read
touched: they are page cache, given back under pressure), the peak of anonymous memory (sampled
every 20 ms from /proc/self/status: the process's own allocations), and wall time.

    python bench/bench_xl_selection.py [--sizes 100000,1000000,3000000,8000000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORDS = ["chair", "table", "lamp", "car", "bus", "tree", "house", "robot", "sword", "cup", "shoe", "bottle"]


def make_table(path: Path, rows: int) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    index = pa.array(np.arange(rows).astype(str))
    rng = np.random.default_rng(0)
    words = pa.array(np.array(WORDS)[rng.integers(0, len(WORDS), rows)])
    identifiers = pc.binary_join_element_wise(
        "https://github.com/some-organisation/some-repository-name/blob/0123456789abcdef0123456789abcdef01234567/models/",
        words, "_", index, ".obj", "")
    metadata = pc.binary_join_element_wise('{"repo_stars": 12, "topics": ["3d", "', words, '"], "id": ', index, "}", "")
    table = pa.table({
        "fileIdentifier": identifiers,
        "license": pa.array(np.array(["MIT License", "Apache License 2.0", "GNU General Public License v3.0"])[
            rng.integers(0, 3, rows)]),
        "fileType": pa.array(np.array(["obj", "glb", "fbx", "stl"])[rng.integers(0, 4, rows)]),
        "sha256": pc.binary_join_element_wise(pc.utf8_lpad(index, 64, "0"), ""),
        "metadata": metadata,
    })
    pq.write_table(table, path, row_group_size=100_000)


class AnonPeak:
    """The highest RssAnon seen, sampled in a thread."""

    def __init__(self) -> None:
        self.peak, self.running = 0, True
        self.thread = threading.Thread(target=self.sample, daemon=True)
        self.thread.start()

    @staticmethod
    def now(field: str = "RssAnon") -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
        return 0

    def sample(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.now())
            time.sleep(0.02)

    def stop(self) -> int:
        self.running = False
        self.thread.join()
        return max(self.peak, self.now())


def child(kind: str, table: Path, work: Path) -> None:
    sys.path.insert(0, str(ROOT))
    import itertools

    import pyarrow  # noqa: F401  (imports are not what is measured)

    from voxforge.pipeline.sources.xl_tables import Query, XLSelection

    peak = AnonPeak()
    started = time.perf_counter()
    rows = 0
    if kind == "pandas":
        import pandas as pd

        frame = pd.read_parquet(table)
        rows = len(frame)
    else:
        queries = [Query("chair", frozenset(), ("chair",))] if kind == "category" else None
        selection = XLSelection({"github": table}, {}, ["glb", "gltf", "obj", "stl", "ply", "off"], None, queries,
                                True, 0, work)
        selection.scan()
        chosen = selection.chosen(None)
        while batch := list(itertools.islice(chosen, 4096)):
            rows += len(selection.rows(batch))
    wall = time.perf_counter() - started
    print(json.dumps({"rows": rows, "wall": wall, "anon_mb": peak.stop() / 2**20,
                      "max_rss_mb": AnonPeak.now("VmHWM") / 2**20}))


def measure(kind: str, table: Path, work: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", kind, str(table), str(work)], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000,3000000,8000000")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, table, work = args.child
        child(kind, Path(table), Path(work))
        return
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        print(f"{'rows':>10} {'what':<22} {'selected':>10} {'peak RSS MB':>12} {'peak anon MB':>13} {'wall s':>8}")
        for size in (int(s) for s in args.sizes.split(",")):
            table = folder / f"github-{size}.parquet"
            make_table(table, size)
            for kind, name in (("stream", "stream, everything"), ("category", "stream, 1 category"),
                               ("pandas", "pandas.read_parquet")):
                result = measure(kind, table, folder / "work")
                print(f"{size:>10} {name:<22} {result['rows']:>10} {result['max_rss_mb']:>12.0f} "
                      f"{result['anon_mb']:>13.0f} {result['wall']:>8.2f}", flush=True)
            table.unlink()


if __name__ == "__main__":
    main()
