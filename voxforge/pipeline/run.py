"""A pipeline run: select records, plan shard tasks, run them on Ray, merge what they committed.

The driver turns the selection into shard tasks (:mod:`voxforge.pipeline.plan`), skipping objects
that committed shards already hold, and runs them on a Ray Data actor pool of
:class:`voxforge.pipeline.worker.ShardWorker`. Each worker writes its shard and the shard's manifest
straight to the output (a local folder or any fsspec URL); the driver receives one small summary per
shard, then merges the shard manifests into ``manifest.jsonl`` and ``dataset.json``.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import platform
import posixpath
import sys
import tempfile
import time
import uuid
from array import array
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import IO

from voxforge import __version__
from voxforge.loaders import format as fmt
from voxforge.loaders.shards import remove_partial_shards
from voxforge.pipeline.config import SAMPLE_DEFINING, RunConfig
from voxforge.pipeline.isolation import ATTEMPTS_DIR
from voxforge.pipeline.lease import OutputBusyError, hold_output
from voxforge.pipeline.manifest import MergedCounts, count_safely_written, merge_manifests
from voxforge.pipeline.plan import Planner
from voxforge.pipeline.sources import SourceError, create_source
from voxforge.pipeline.splits import SPLITS, assign_split
from voxforge.storage import Location, StorageError, output_location, storage_problem, writable_location, write_problem

log = logging.getLogger("voxforge")
ATTRIBUTION_FILE = "attribution.csv"  # id, author, licence, source URL of downloaded objects
FAILURES_SHOWN = 20
TASK_READERS = 2  # processes reading shard tasks from the plan file
PLANS_DIR = f"{fmt.WORK_DIR}/plans"  # <run>.jsonl: the run's shard tasks, one JSON line each


class RunError(RuntimeError):
    """The run cannot start or go on (bad output, incompatible resume, output busy, writes refused)."""


@dataclass
class RunSummary:
    out: str
    selected: int = 0
    skipped: int = 0
    ok: int = 0
    failed: int = 0
    shards: int = 0
    seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)  # the first few, with reasons

    def report(self) -> str:
        rate = self.ok / self.seconds if self.seconds > 0 else 0.0
        lines = [
            f"done: {self.ok} ok, {self.failed} failed, {self.skipped} already done "
            f"({self.selected} selected) in {self.seconds:.1f} s, {rate:.2f} objects/s",
        ]
        for object_id, reason in self.failures[:FAILURES_SHOWN]:
            lines.append(f"  failed {object_id}: {reason}")
        if self.failed > FAILURES_SHOWN:
            lines.append(f"  ... and {self.failed - FAILURES_SHOWN} more failures (see manifest.jsonl)")
        lines.append(f"dataset: {self.out}")
        return "\n".join(lines)


def _check_output_is_ours(where: Location) -> None:
    """Refuse an ``--out`` that holds other files and is not a voxforge dataset (the two would mix)."""
    try:
        names = {posixpath.basename(str(name).rstrip("/")) for name in where.fs.ls(where.root, detail=False)}
    except (FileNotFoundError, NotADirectoryError):
        names = set()
    except OSError as error:
        raise RunError(f"--out {where.url}: cannot list it ({storage_problem(error)})") from None
    if where.is_local and os.path.exists(where.root) and not os.path.isdir(where.root):
        raise RunError(f"--out {where.url} is a file, not a folder")
    if names and not names & {fmt.DATASET_FILE, fmt.WORK_DIR}:
        shown = ", ".join(sorted(names)[:4]) + (", ..." if len(names) > 4 else "")
        raise RunError(f"--out {where.url} holds other files ({shown}) and is not a voxforge dataset; choose a new "
                       "or empty folder")


def _has_committed_shards(where: Location) -> bool:
    return any(where.list_files(f"{fmt.SHARD_MANIFESTS}/{split}") or where.list_files(split) for split in SPLITS)


def _check_resume_compatible(where: Location, config: RunConfig) -> None:
    """A dataset that holds shards must be continued with the settings that made them; one that holds none
    (an earlier run stopped before its first shard) takes the new settings."""
    if not _has_committed_shards(where):
        return
    try:
        previous = json.loads(where.read_text(fmt.DATASET_FILE)).get("config", {})
    except FileNotFoundError:
        return
    current = RunConfig.from_dict(config.as_dict()).as_dict()
    changed = [
        name for name in SAMPLE_DEFINING
        if name in previous and json.dumps(previous[name]) != json.dumps(current[name])
    ]
    if changed:
        details = ", ".join(f"{n}: {previous[n]!r} -> {current[n]!r}" for n in changed)
        raise RunError(f"{where.url} holds a dataset made with other settings ({details}); use another --out")


def software_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {"voxforge": __version__, "python": platform.python_version()}
    for package in ("numpy", "trimesh", "pyrender", "ray", "pillow", "scipy"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            pass
    return versions


def write_dataset_info(where: Location, config: RunConfig) -> MergedCounts:
    """Merge the committed shard manifests into ``manifest.jsonl`` (and ``attribution.csv``), then write
    ``dataset.json``: format version, the full config, counts, software versions. Returns the counts,
    with the state a resume needs."""
    counts = merge_manifests(where, ATTRIBUTION_FILE)
    info = {
        "format_version": fmt.FORMAT_VERSION,
        "name": posixpath.basename(where.url.rstrip("/")),
        "frame": "object frame: bbox centred at origin, unit diagonal, +Y up; cameras OpenCV (see docs/FORMAT.md)",
        "config": config.as_dict(),
        "counts": {
            "objects": counts.objects,
            "failed": counts.failed,
            "per_split": {s: counts.per_split[s] for s in SPLITS},
            "per_category": dict(sorted(counts.per_category.items())),
            "shards": counts.shards,
        },
        "licenses": dict(sorted(counts.licenses.items())),
        "attribution": {"file": ATTRIBUTION_FILE, "objects": counts.credited, "authors": len(counts.authors)}
        if counts.credited else None,
        "software": software_versions(),
        "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    where.write_text(fmt.DATASET_FILE, json.dumps(info, indent=2, sort_keys=True))
    return counts


def check_renderer(config: RunConfig) -> None:
    """Start the renderer once here, so a missing GL stack is one clear error, not a crash per worker."""
    from voxforge.renderers import get_renderer

    try:
        get_renderer(config.renderer)(config.size, supersample=config.supersample, **config.renderer_options()).close()
    except ImportError as error:  # a missing extra (bpy): its message says what to install
        raise RunError(f"renderer {config.renderer!r} cannot start on this machine: {error}") from None
    except Exception as error:
        raise RunError(
            f"renderer {config.renderer!r} cannot start on this machine: {type(error).__name__}: {error}. "
            "Headless rendering needs Mesa's EGL (Debian: libegl1 libegl-mesa0 libgl1-mesa-dri) or an "
            "NVIDIA driver; PYOPENGL_PLATFORM, if set, must be egl or osmesa"
        ) from error


def init_ray(config: RunConfig) -> None:
    """Local Ray with ``--workers`` CPUs (or join ``--address``), quiet and without usage stats."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    if not config.address:
        # a one-machine Ray stays on the loopback interface (Ray's own switch for single-node clusters)
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray
    import ray.data

    if not ray.is_initialized():  # a Ray the caller already started is used as it is
        quiet = dict(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=True)
        if config.address:
            ray.init(address=config.address, **quiet)
        else:
            temp_dir = os.path.join(tempfile.gettempdir(), "voxforge-ray")
            ray.init(num_cpus=config.workers, _temp_dir=temp_dir, **quiet)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.execution_options.preserve_order = False  # shard numbers come from the plan, not the order of results
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)


def report_selection(source, per_category: Counter) -> None:
    """How the categories resolved and what each filter kept, then objects per category, before any work."""
    for line in source.selection_notes():
        print(line, file=sys.stderr)
    print(f"selected {sum(per_category.values())} objects: " + ", ".join(f"{c} {n}" for c, n in per_category.items()),
          file=sys.stderr)


def run(config: RunConfig) -> RunSummary:
    """Build (or resume) the dataset ``config`` describes; raises RunError, SourceError, ValueError for
    problems a user can fix, before any work where they can be known then."""
    config.validate()
    if config.backgrounds:  # checked here once, before anything is written (not in every worker)
        from voxforge.renderers.backgrounds import list_background_images

        list_background_images(config.backgrounds)
    if not config.address:  # before anything is written; on a cluster the driver's node may have no GL
        check_renderer(config)
    try:
        _check_output_is_ours(output_location(config.out))  # before the (possibly long) selection
    except StorageError as error:
        raise RunError(str(error)) from None
    source = create_source(config.source, path=config.path, category_map=config.category_map, seed=config.seed,
                           config=config)
    records = iter(source.stream(config.categories, config.limit))
    first = next(records, None)  # unknown categories and empty selections fail here, before anything is written
    if first is None:
        raise SourceError(f"source {config.source!r} has no objects for categories {config.categories or 'all'}")
    try:
        where = writable_location(config.out)
        lock = hold_output(where)
    except (StorageError, OutputBusyError) as error:
        raise RunError(str(error)) from None
    config = replace(config, out=where.url)  # workers on any node get the same absolute place
    where = replace(where, keep_root=True)  # a folder removed under the run is not made again
    try:
        _check_resume_compatible(where, config)
        return _run_locked(config, where, source, itertools.chain([first], records), lock)
    finally:
        lock.release()


def stopped_on_storage(where: Location, problem: str) -> str:
    """The one line a run that the output refused ends with: the cause, and how many objects are safely
    written, counted from the committed shards (never from what the workers reported)."""
    if where.is_local and not os.path.isdir(where.root):
        return (f"{where.url} was removed while the run was writing to it; stopped, and nothing was written "
                "anywhere else. Run the same command to start again")
    safe = count_safely_written(where)
    written = (f"{safe} objects are safely written there (counted from its committed shards)" if safe is not None
               else "what was written so far cannot be read back to count it")
    return (f"{problem}; stopped. {written}; once it accepts writes again (space freed, permissions or mount "
            "fixed), run the same command to resume")


def _remove_leftovers(where: Location) -> None:
    """What killed runs left: half-written files (local folders), plan files and attempt markers."""
    if where.is_local:
        for folder in ["", fmt.WORK_DIR, *SPLITS, *(f"{fmt.SHARD_MANIFESTS}/{split}" for split in SPLITS)]:
            remove_partial_shards(where.local_path(folder))
    _remove_folder(where, PLANS_DIR)
    _remove_folder(where, ATTEMPTS_DIR)


def _remove_folder(where: Location, relative: str) -> None:
    try:
        where.fs.rm(where.path(relative), recursive=True)
    except FileNotFoundError:
        pass


def plan_run(config: RunConfig, committed, records: Iterable, plan_file: IO[bytes]) -> tuple[Planner, array]:
    """Stream the selection through the planner, writing each shard task as one JSON line to ``plan_file``;
    returns the planner (counts) and where each line starts (then the file's size): the plan never sits
    in the driver's memory whole."""
    split_ratios = config.split_ratios
    planner = Planner(lambda r: r.split or assign_split(r.object_id, split_ratios),
                      committed.finished(config.retry_failed), committed.taken, config.shard_size, config.min_shards)
    starts, position = array("Q"), 0

    def write(tasks) -> None:
        nonlocal position
        for task in tasks:
            line = (json.dumps(task.to_row()) + "\n").encode()
            starts.append(position)
            plan_file.write(line)
            position += len(line)

    for record in records:
        write(planner.add(record))
    write(planner.finish())
    starts.append(position)
    return planner, starts


def _run_locked(config: RunConfig, where: Location, source, records: Iterable, lock) -> RunSummary:
    started = time.perf_counter()
    _remove_leftovers(where)
    try:
        before = write_dataset_info(where, config)
    except OSError as error:
        raise RunError(f"cannot write to {where.url}: {storage_problem(error)}") from None
    run_token = uuid.uuid4().hex
    plan_name = f"{PLANS_DIR}/{run_token}.jsonl"
    staged = where.staging_file(plan_name)
    try:
        with open(staged, "wb") as plan_file:
            planner, starts = plan_run(config, before.state, records, plan_file)
        report_selection(source, planner.per_category)
        summary = RunSummary(out=where.url, selected=planner.selected, skipped=planner.skipped)
        if not planner.tasks:
            summary.seconds = time.perf_counter() - started
            return summary
        where.put_file(staged, plan_name)  # workers on any node read their task from here
    finally:
        staged.unlink(missing_ok=True)
    init_ray(config)
    import ray.data

    from voxforge.pipeline.task_source import ShardTaskSource
    from voxforge.pipeline.worker import ShardWorker

    workers = config.workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
    where_workers = f" on the cluster at {config.address}" if config.address else ""
    if where.is_local and sum(node["Alive"] for node in ray.nodes()) > 1:
        print(f"note: --out {where.url} is a local folder; every node of the cluster must see it at that path "
              "(a shared filesystem), or use an object store URL", file=sys.stderr)
    print(f"{planner.objects} objects to process ({summary.skipped} already done) in {planner.tasks} shards "
          f"with {workers} workers{where_workers}", file=sys.stderr)
    # reading a task is one ranged read: it takes no CPU from the workers, and a few reader processes keep up
    # with any pool (without a limit, Ray would start a process per pending read)
    tasks = ray.data.read_datasource(ShardTaskSource(where.url, plan_name, starts), override_num_blocks=planner.tasks,
                                     num_cpus=0, concurrency=TASK_READERS)
    dataset = tasks.map_batches(
        ShardWorker,
        fn_constructor_kwargs={"config": config.as_dict(), "run_token": run_token},
        batch_size=1,
        batch_format="numpy",
        concurrency=min(workers, planner.tasks),
        num_cpus=1,
    )
    from tqdm import tqdm

    progress = tqdm(total=planner.objects, unit="obj", disable=not config.progress, dynamic_ncols=True, file=sys.stderr)
    unwritten: list[str] = []
    try:
        for row in dataset.iter_rows():
            shard = json.loads(row["summary"])
            if shard["error"]:
                unwritten.append(shard["error"])
                break  # the output refuses writes: stop here, keep what is committed
            summary.shards += 1
            summary.ok += shard["ok"]
            summary.failed += shard["failed"]
            for object_id, reason in shard["failures"]:
                if len(summary.failures) < FAILURES_SHOWN:
                    summary.failures.append((object_id, reason))
                log.warning("failed %s: %s", object_id, reason)
            progress.update(shard["objects"])
            progress.set_postfix(ok=summary.ok, failed=summary.failed, refresh=False)
            if lock.lost:
                break
    except Exception:  # a Ray task failed: when the output went bad under it, say that, in one line
        problem = write_problem(where)
        if not problem:
            raise
        unwritten.append(f"cannot write to {where.url}: {problem}")
    finally:
        progress.close()
        if lock.lost:  # the output is another run's now: leave it alone
            raise RunError(f"another run took over {where.url} (this run's lease had expired); stopped. "
                           f"{summary.ok} objects were safely written")
        try:
            _remove_folder(where, ATTEMPTS_DIR)
            where.remove(plan_name)
            after = write_dataset_info(where, config)
        except OSError as error:
            unwritten.append(f"cannot write the dataset's manifest to {where.url}: {storage_problem(error)}")
    if unwritten:
        raise RunError(stopped_on_storage(where, unwritten[0]))
    if after.objects < before.objects + summary.ok:  # workers wrote where this machine cannot see
        raise RunError(f"the workers made {summary.ok} samples but only {after.objects - before.objects} are in "
                       f"{where.url} as this machine sees it: on a cluster, --out must be an object store URL or a "
                       "shared filesystem mounted at the same path on every node")
    summary.seconds = time.perf_counter() - started
    return summary
