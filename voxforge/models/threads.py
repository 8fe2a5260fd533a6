"""CPU threads of training that hold up on shared machines.

torch's own default is one intra-op thread per core it sees, whoever else uses them. On a shared
machine that oversubscribes: the training process's OpenMP team, its DataLoader workers (processes that
decode views) and everybody else's processes all want the same cores, and an OpenMP team is only as
fast as its slowest thread, since every operator ends at a barrier that waits for a thread the kernel
may have descheduled. The README's tiny 3D-R2N2 run went from 2.21 it/s on 2 idle cores to 0.2-0.35 it/s
at load average 5-11. So the trainers (``pipeline train``, :func:`voxforge.models.r2n2.train.train`,
:func:`voxforge.models.reconstnet.train.train_reconstnet`) size their intra-op threads with
:func:`intra_op_threads`:

- an explicit choice wins: ``--threads N`` (``TrainConfig.threads``), else ``OMP_NUM_THREADS`` or
  ``MKL_NUM_THREADS`` in the environment (torch follows those itself at start-up, so they are left alone);
- otherwise ``max(1, usable CPUs // local ranks - DataLoader workers)``. Usable CPUs are those this process
  may run on: its CPU affinity (``taskset``, SLURM, ``docker --cpuset-cpus``) and its cgroup's CPU quota
  (``docker --cpus``, Kubernetes limits), rounded down, since a team that outruns its quota is throttled
  for the rest of each period. Each DataLoader worker is given a core of its own, because when the loader
  keeps up those processes are busy decoding whenever the model computes; the training process's team takes
  the rest, and under ``torchrun`` each local rank its share (torchrun itself sets ``OMP_NUM_THREADS=1``
  when it starts several, which then wins). The rule holds whatever the OpenMP wait policy (below) and
  spends the least CPU per iteration. Its cost, measured on 2 cores with the README's tiny run and 2
  workers: 1 thread instead of 2 is about 10% slower on an idle machine, 8% faster beside 2 busy
  processes and 14% slower beside 4 (all with the passive wait policy); ``--threads N`` overrides it.

DataLoader workers run one torch thread each (:func:`worker_init`; torch's worker loop does the same).

OpenMP's busy-waiting: torch's Linux CPU wheels use GNU OpenMP (``libgomp.so.1`` in ``torch/lib``, the
only OpenMP runtime a torch 2.13 CPU process maps; MKL is linked in statically and oneDNN runs on the same
runtime: ``torch.__config__.parallel_info()`` says "ATen parallel backend: OpenMP"). Unless
``OMP_WAIT_POLICY`` says otherwise, libgomp's idle threads spin for a while after each parallel region
(``GOMP_SPINCOUNT``, 300,000 spins by default), burning a core that other processes, our own DataLoader
workers included, could use: with 2 threads beside 2 busy processes the tiny run above made 0.34 it/s
spinning and 1.22 it/s passive.
:func:`quiet_openmp_waits` sets ``OMP_WAIT_POLICY=PASSIVE`` (idle threads sleep at once) unless the user
set ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT``. libgomp reads its environment once, when it is loaded, i.e.
at ``import torch``: setting it later does nothing, so :mod:`voxforge.models` calls it when imported,
which ``pipeline`` does before torch. ``KMP_BLOCKTIME`` is the same knob for Intel's and LLVM's OpenMP
runtimes, which these wheels do not load, so it is not set.

``TrainConfig.threads = -1`` (``--threads -1``) leaves torch's thread count as it is (the old behaviour).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")
EXPLICIT_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")  # torch sizes its pool from these itself
WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def quiet_openmp_waits(environ: os._Environ | dict = os.environ) -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless the user chose a wait policy; True when it was set here.

    Only takes effect in this process when called before torch (libgomp) is loaded; processes started
    from it inherit it.
    """
    if any(environ.get(name) for name in WAIT_VARIABLES):
        return False
    environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return True


def _cgroup_paths(cgroup_file: Path) -> tuple[str | None, str | None]:
    """This process's cgroup v2 path and its cgroup v1 ``cpu`` controller path (None where absent)."""
    v2 = v1 = None
    try:
        lines = Path(cgroup_file).read_text().splitlines()
    except OSError:
        return None, None
    for line in lines:
        number, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if number == "0" and controllers == "":
            v2 = path
        elif "cpu" in controllers.split(","):
            v1 = path
    return v2, v1


def _ancestors(base: Path, path: str | None) -> list[Path]:
    """``base/path`` and its parents up to ``base`` (a limit anywhere above applies too); ``base`` alone
    when the process's own folder is not visible (a cgroup namespace shows its root as ``/``)."""
    folders = [base]
    if path and path != "/":
        parts = Path(path.lstrip("/")).parts
        own = [base.joinpath(*parts[:end]) for end in range(1, len(parts) + 1)]
        if own[-1].is_dir():
            folders += own
    return folders


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def cgroup_cpu_limit(root: str | Path = CGROUP_ROOT, cgroup_file: str | Path = PROC_CGROUP) -> float | None:
    """CPUs' worth of time this process's cgroup may use per period (e.g. 1.5), or None without a quota.

    cgroup v2: ``cpu.max`` ("QUOTA PERIOD" or "max PERIOD"); cgroup v1: ``cpu.cfs_quota_us`` (-1: none)
    over ``cpu.cfs_period_us``, in the ``cpu`` (or ``cpu,cpuacct``) hierarchy. The smallest quota of the
    process's cgroup and its ancestors counts.
    """
    root = Path(root)
    v2, v1 = _cgroup_paths(Path(cgroup_file))
    limits = []
    for folder in _ancestors(root, v2):  # cgroup v2 (mounted at root; hybrid systems have none of its files there)
        quota, _, period = (_read(folder / "cpu.max") or "max").partition(" ")
        if quota != "max" and float(quota) > 0 and float(period or 100000) > 0:
            limits.append(float(quota) / float(period or 100000))
    for name in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        base = root / name
        if not base.is_dir():
            continue
        for folder in _ancestors(base, v1):
            quota, period = _read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us")
            if quota and period and float(quota) > 0 and float(period) > 0:
                limits.append(float(quota) / float(period))
        break
    return min(limits) if limits else None


def usable_cpus(affinity: set[int] | None = None, root: str | Path = CGROUP_ROOT,
                cgroup_file: str | Path = PROC_CGROUP) -> int:
    """CPUs this process can actually use: its affinity mask, capped by its cgroup quota rounded down (>= 1)."""
    if affinity is None:
        affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    cpus = max(1, len(affinity))
    limit = cgroup_cpu_limit(root, cgroup_file)
    if limit is not None:
        cpus = min(cpus, max(1, math.floor(limit + 1e-9)))
    return cpus


def intra_op_threads(loader_workers: int = 0, requested: int | None = 0, environ: Mapping[str, str] = os.environ,
                     cpus: int | None = None) -> int | None:
    """The training process's torch intra-op threads, or None to leave torch's setting alone.

    ``requested`` > 0: that many. ``requested`` < 0 (or None): leave torch alone. 0 (the default): leave
    torch alone when ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` is set (torch already follows it), else
    ``max(1, cpus // local ranks - loader_workers)`` with ``cpus`` from :func:`usable_cpus` and the local
    ranks from ``LOCAL_WORLD_SIZE`` (torchrun). Why: see the module's docstring.
    """
    if requested is None or requested < 0:
        return None
    if requested > 0:
        return int(requested)
    if any(environ.get(name, "").strip() for name in EXPLICIT_THREAD_VARIABLES):
        return None
    cpus = usable_cpus() if cpus is None else cpus
    ranks = max(1, int(environ.get("LOCAL_WORLD_SIZE") or 1))
    return max(1, cpus // ranks - max(0, int(loader_workers)))


@contextlib.contextmanager
def training_threads(loader_workers: int = 0, requested: int | None = 0) -> Iterator[int]:
    """Inside: torch runs :func:`intra_op_threads` threads (yields the count); afterwards the caller's
    setting comes back, so that calling a trainer from a notebook or a test changes nothing for later."""
    import torch

    previous = torch.get_num_threads()
    chosen = intra_op_threads(loader_workers, requested)
    if chosen is not None and chosen != previous:
        torch.set_num_threads(chosen)
    log.info("torch intra-op threads: %d (%s; %d DataLoader workers, OMP_WAIT_POLICY=%s)", torch.get_num_threads(),
             "torch's setting kept" if chosen is None else "chosen", loader_workers,
             os.environ.get("OMP_WAIT_POLICY", "unset"))
    try:
        yield torch.get_num_threads()
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)


def worker_init(worker_id: int) -> None:
    """``worker_init_fn`` of the training DataLoaders: :func:`voxforge.models.stopping.quiet_worker`'s signal
    handling, and one torch thread (the workers are processes: parallelism comes from their number)."""
    import torch

    from voxforge.models.stopping import quiet_worker

    quiet_worker(worker_id)
    torch.set_num_threads(1)
