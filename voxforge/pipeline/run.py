"""A pipeline run: select records, skip finished ones, stream them through Ray, write shards.

The driver builds one Ray Data pipeline (records -> ObjectWorker actor pool) and consumes its output
as a stream, appending each finished sample to the shard of its split. Only the driver writes, so
shard numbering, the manifest and ``dataset.json`` need no coordination; workers do all the heavy
work (loading, rendering, voxelizing, PNG encoding).
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from voxforge import __version__
from voxforge.loaders import format as fmt
from voxforge.loaders.shards import ShardWriter, remove_partial_shards
from voxforge.pipeline.config import SAMPLE_DEFINING, RunConfig
from voxforge.pipeline.manifest import Manifest, manifest_row, recover_orphan_shards
from voxforge.pipeline.sources import SourceError, create_source
from voxforge.pipeline.splits import SPLITS, assign_split

log = logging.getLogger("voxforge")
ATTRIBUTION_FILE = "attribution.csv"  # id, author, licence, source URL of downloaded objects


class RunError(RuntimeError):
    """The run cannot start or go on (bad output folder, incompatible resume, full disk)."""


@dataclass
class RunSummary:
    out: Path
    selected: int = 0
    skipped: int = 0
    ok: int = 0
    failed: int = 0
    seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)

    def report(self) -> str:
        rate = self.ok / self.seconds if self.seconds > 0 else 0.0
        lines = [
            f"done: {self.ok} ok, {self.failed} failed, {self.skipped} already done "
            f"({self.selected} selected) in {self.seconds:.1f} s, {rate:.2f} objects/s",
        ]
        for object_id, reason in self.failures[:20]:
            lines.append(f"  failed {object_id}: {reason}")
        if len(self.failures) > 20:
            lines.append(f"  ... and {len(self.failures) - 20} more failures (see manifest.jsonl)")
        lines.append(f"dataset: {self.out.resolve()}")
        return "\n".join(lines)


def _prepare_output(out: Path) -> Path:
    """Create the output folder and prove it is writable before any work starts."""
    try:
        (out / fmt.WORK_DIR).mkdir(parents=True, exist_ok=True)
        probe = out / fmt.WORK_DIR / "write-test"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as error:
        raise RunError(f"--out {out}: cannot write there ({error.strerror or error})") from error
    return out


def _lock(out: Path):
    handle = open(out / fmt.WORK_DIR / "lock", "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        handle.close()
        raise RunError(f"another run is writing to {out}; wait for it or choose another --out") from error
    return handle


def _check_resume_compatible(out: Path, config: RunConfig) -> None:
    info_path = out / fmt.DATASET_FILE
    if not info_path.exists():
        return
    previous = json.loads(info_path.read_text()).get("config", {})
    current = RunConfig.from_dict(config.as_dict()).as_dict()
    changed = [
        name for name in SAMPLE_DEFINING
        if name in previous and json.dumps(previous[name]) != json.dumps(current[name])
    ]
    if changed:
        details = ", ".join(f"{n}: {previous[n]!r} -> {current[n]!r}" for n in changed)
        raise RunError(f"{out} holds a dataset made with other settings ({details}); use another --out")


def software_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {"voxforge": __version__, "python": platform.python_version()}
    for package in ("numpy", "trimesh", "pyrender", "ray", "pillow", "scipy"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            pass
    return versions


def write_dataset_info(out: Path, config: RunConfig, manifest: Manifest) -> dict:
    """``dataset.json``: format version, the full config, counts, software versions (atomic write)."""
    rows = manifest.rows().values()
    ok = [r for r in rows if r["status"] == "ok"]
    counts = {
        "objects": len(ok),
        "failed": sum(r["status"] == "failed" for r in rows),
        "per_split": {s: sum(r["split"] == s for r in ok) for s in SPLITS},
        "per_category": dict(sorted(Counter(r["category"] for r in ok).items())),
        "shards": {s: sorted({r["shard"] for r in ok if r["split"] == s}) for s in SPLITS},
    }
    info = {
        "format_version": fmt.FORMAT_VERSION,
        "name": out.name,
        "frame": "object frame: bbox centred at origin, unit diagonal, +Y up; cameras OpenCV (see docs/FORMAT.md)",
        "config": config.as_dict(),
        "counts": counts,
        "licenses": dict(sorted(Counter(r.get("license", "") for r in ok).items())),
        "attribution": write_attribution(out, ok),
        "software": software_versions(),
        "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    temporary = out / (fmt.DATASET_FILE + ".partial")
    temporary.write_text(json.dumps(info, indent=2, sort_keys=True))
    os.replace(temporary, out / fmt.DATASET_FILE)
    return info


def write_attribution(out: Path, ok_rows: list[dict]) -> dict | None:
    """``attribution.csv`` (id, author, licence, source URL) of the objects that carry one (downloads)."""
    import csv
    import io

    credited = sorted((r for r in ok_rows if r.get("source_url")), key=lambda r: r["id"])
    if not credited:
        return None
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["id", "author", "license", "source_url"])
    writer.writerows([r["id"], r.get("author", ""), r.get("license", ""), r["source_url"]] for r in credited)
    temporary = out / (ATTRIBUTION_FILE + ".partial")
    temporary.write_text(buffer.getvalue())
    os.replace(temporary, out / ATTRIBUTION_FILE)
    return {"file": ATTRIBUTION_FILE, "objects": len(credited),
            "authors": len({r.get("author", "") for r in credited if r.get("author")})}


def check_renderer(config: RunConfig) -> None:
    """Start the renderer once here, so a missing GL stack is one clear error, not a crash per worker."""
    from voxforge.renderers import get_renderer

    try:
        get_renderer(config.renderer)(config.size, supersample=config.supersample).close()
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
    context.execution_options.preserve_order = True  # same inputs -> same shards
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)


def report_selection(source, records) -> None:
    """How the categories resolved and what each filter kept, then objects per category, before any work."""
    for line in source.selection_notes():
        print(line, file=sys.stderr)
    counts = Counter(r.category for r in records)
    print(f"selected {len(records)} objects: " + ", ".join(f"{c} {n}" for c, n in counts.items()), file=sys.stderr)


def run(config: RunConfig) -> RunSummary:
    config.validate()
    out = Path(config.out)
    source = create_source(config.source, path=config.path, category_map=config.category_map, seed=config.seed,
                           config=config)
    records = source.select(config.categories, config.limit)
    if not records:
        raise SourceError(f"source {config.source!r} has no objects for categories {config.categories or 'all'}")
    report_selection(source, records)
    _prepare_output(out)
    lock = _lock(out)
    try:
        _check_resume_compatible(out, config)
        return _run_locked(config, out, records)
    finally:
        lock.close()


def add_fetch_stage(dataset, config: RunConfig, out: Path, run_token: str, count: int):
    """Downloads as one Ray actor that holds no CPU (the render actors hold them all) running ``--downloads``
    calls at once in threads, streaming into the render actors; at most ``2 x workers + downloads``
    fetched objects wait on disk (``StagingGate``)."""
    import ray.data

    from voxforge.pipeline.fetch_stage import Downloader, staging_dir

    shutil.rmtree(staging_dir(out, run_token).parent, ignore_errors=True)  # slots a killed run never freed
    calls = min(config.downloads, count)
    return dataset.map_batches(
        Downloader,
        fn_constructor_kwargs={"out": str(out), "run_token": run_token,
                               "staged_limit": 2 * config.workers + config.downloads, "keep_meshes": config.keep_meshes},
        batch_size=1,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=1, max_concurrent_calls_per_actor=calls, enable_true_multi_threading=True,
                                           max_tasks_in_flight_per_actor=2 * calls),
        num_cpus=0,
    )


def _run_locked(config: RunConfig, out: Path, records) -> RunSummary:
    started = time.perf_counter()
    manifest = Manifest(out)
    for split in SPLITS:
        remove_partial_shards(out / split)
    if recovered := recover_orphan_shards(manifest):
        log.warning("restored %d manifest rows from shards a killed run had finished", recovered)
    finished = {
        object_id for object_id, row in manifest.rows().items()
        if row["status"] == "ok" or not config.retry_failed
    }
    todo = [r for r in records if r.object_id not in finished]
    summary = RunSummary(out=out, selected=len(records), skipped=len(records) - len(todo))
    write_dataset_info(out, config, manifest)
    if not todo:
        summary.seconds = time.perf_counter() - started
        return summary
    if not config.address:  # on a cluster the driver's node may have no GL; workers report per object
        check_renderer(config)
    print(f"{len(todo)} objects to process ({summary.skipped} already done) with {config.workers} workers",
          file=sys.stderr)
    init_ray(config)
    import ray

    from voxforge.pipeline.stages import ObjectWorker, unpack_members

    run_token = uuid.uuid4().hex
    rows = [{"record": json.dumps(r.to_row()), "split": r.split or assign_split(r.object_id, config.split_ratios)}
            for r in todo]
    dataset = ray.data.from_items(rows, override_num_blocks=len(rows))
    if any(r.fetch for r in todo):
        dataset = add_fetch_stage(dataset, config, out, run_token, len(rows))
    dataset = dataset.map_batches(
        ObjectWorker,
        fn_constructor_kwargs={"config": config.as_dict(), "run_token": run_token},
        batch_size=1,
        batch_format="numpy",
        concurrency=min(config.workers, len(rows)),
        num_cpus=1,
    )
    writers = {split: ShardWriter(out / split, config.shard_size) for split in SPLITS}
    pending: dict[str, list[dict]] = {split: [] for split in SPLITS}
    meta_by_id = {r.object_id: r for r in todo}

    def record_commit(split: str, committed) -> None:
        if committed:
            shard_name, _ = committed
            for row in pending[split]:
                row["shard"] = f"{split}/{shard_name}"
            manifest.append(pending[split])
            pending[split] = []

    from tqdm import tqdm

    progress = tqdm(total=len(todo), unit="obj", disable=not config.progress, dynamic_ncols=True, file=sys.stderr)
    try:
        for row in dataset.iter_rows():
            record = meta_by_id[row["object_id"]]
            base = {"id": record.object_id, "category": record.category, "source": record.source,
                    "split": row["split"], "license": record.license, "extra": record.extra}
            if row["status"] == "ok":
                split = row["split"]
                pending[split].append(manifest_row(base, "ok", key=row["key"]))
                record_commit(split, writers[split].add(row["key"], unpack_members(row["members"])))
                summary.ok += 1
            else:
                manifest.append([manifest_row(base, "failed", error=row["error"])])
                summary.failed += 1
                summary.failures.append((record.object_id, row["error"]))
                log.warning("failed %s: %s", record.object_id, row["error"])
            progress.update(1)
            progress.set_postfix(ok=summary.ok, failed=summary.failed, refresh=False)
        for split in SPLITS:
            record_commit(split, writers[split].commit())
    except OSError as error:
        for writer in writers.values():
            writer.abort()
        if error.errno == errno.ENOSPC:
            raise RunError(f"disk full while writing to {out}: free space, then run the same command to resume "
                           f"({summary.ok} objects were safely written)") from error
        raise
    except KeyboardInterrupt:  # keep every finished sample: commit the open shards, then stop
        for split in SPLITS:
            record_commit(split, writers[split].commit())
        raise
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    finally:
        progress.close()
        write_dataset_info(out, config, manifest)
    summary.seconds = time.perf_counter() - started
    return summary
