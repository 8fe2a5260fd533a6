"""Shared fixtures: the real data in ../shared/data (skipped when absent) and one Ray per session."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# Tests talk to loopback servers only. Any request for another host goes to a closed local port and fails
# at once instead of reaching the internet (requests and huggingface_hub read these variables, and Ray's
# workers and the tests' subprocesses inherit them).
for _variable in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
    os.environ[_variable] = "http://127.0.0.1:9"
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"

# Object storage: an S3-compatible server on loopback (the ``s3`` fixture starts it on this port), test
# credentials, and no instance-metadata probing. Set before any Ray starts, so every worker inherits them.
from s3_fixtures import TEST_CREDENTIALS, free_port  # noqa: E402

S3_PORT = free_port()
os.environ.update(TEST_CREDENTIALS, AWS_ENDPOINT_URL=f"http://127.0.0.1:{S3_PORT}", AWS_EC2_METADATA_DISABLED="true")
for _variable in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
    os.environ.pop(_variable, None)


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


gpu_only = [pytest.mark.gpu, pytest.mark.skipif(not _has_cuda(), reason="needs an NVIDIA GPU (CUDA)")]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


@pytest.fixture(scope="session")
def s3():
    """The loopback S3 store every test and Ray worker reaches through ``AWS_ENDPOINT_URL``."""
    pytest.importorskip("s3fs")
    pytest.importorskip("moto")
    from s3_fixtures import S3Store

    store = S3Store(S3_PORT)
    yield store
    store.stop()


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for all in-process pipeline runs (start-up costs seconds)."""
    from voxforge.pipeline.config import RunConfig
    from voxforge.pipeline.run import init_ray

    init_ray(RunConfig(workers=2))
    import ray

    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def split_dataset(tmp_path_factory, ray_local) -> Path:
    """12 procedural objects (4 views, 512 points, at most 2 per shard) in all three splits (9/2/1 with seed 0),
    made once for the publishing and remote-loading tests."""
    from voxforge.pipeline.run import run

    out = tmp_path_factory.mktemp("split-dataset")
    run(small_config(out, limit=12, views=4, points=512, shard_size=2))
    return out


def small_config(out: Path, **overrides):
    """A quick run: few views, few points, no progress bar."""
    from voxforge.pipeline.config import RunConfig

    values = dict(source="procedural", limit=6, views=6, points=4096, out=str(out), workers=2, progress=False,
                  shard_size=4)
    values.update(overrides)
    return RunConfig(**values)


from voxforge.pipeline.alignment import projection_hits  # noqa: E402,F401  (tests import it from here)


def mask_coverage(points: np.ndarray, K: np.ndarray, world_to_camera: np.ndarray, mask: np.ndarray) -> float:
    """Share of mask pixels with a projected point within 1 px."""
    from voxforge.renderers.cameras import project

    pixels = np.rint(project(points, K, world_to_camera)[0]).astype(int)
    height, width = mask.shape
    inside = (pixels[:, 0] >= 0) & (pixels[:, 0] < width) & (pixels[:, 1] >= 0) & (pixels[:, 1] < height)
    hit = np.zeros_like(mask)
    hit[pixels[inside, 1], pixels[inside, 0]] = True
    return float((ndimage.binary_dilation(hit) & mask).sum() / max(mask.sum(), 1))


os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture(scope="module")
def pyrender_no_aa():
    """pyrender at 127 px without anti-aliasing (the reference Blender's renders are compared with)."""
    from voxforge.renderers import get_renderer

    renderer = get_renderer("pyrender")(127, supersample=1)
    yield renderer
    try:
        renderer.close()
    except Exception:  # noqa: BLE001 - Blender's Workbench used EGL in this process too: its context
        pass  # teardown can fail at the very end (a pipeline worker never holds both renderers)


class PeakMemory:
    """The peak resident memory (bytes) of this process and all its descendants (Ray's raylet and workers
    among them), sampled from ``/proc`` every 50 ms by a thread while the ``with`` block runs. RSS counts
    memory shared between processes once per process, so the figure is an upper bound."""

    def __enter__(self) -> "PeakMemory":
        import threading

        self.baseline = self.peak = self.tree_rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self.tree_rss())

    @staticmethod
    def tree_rss() -> int:
        page = os.sysconf("SC_PAGE_SIZE")
        parents, rss = {}, {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry)], rss[int(entry)] = int(fields[1]), int(fields[21]) * page
        tree, frontier = {os.getpid()}, [os.getpid()]
        while frontier:
            parent = frontier.pop()
            children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in tree]
            tree.update(children)
            frontier += children
        return sum(rss.get(pid, 0) for pid in tree)
