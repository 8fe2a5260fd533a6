"""The Ray actor that runs shard tasks: it makes each object's sample and commits the shard itself.

``ShardWorker`` is a callable class Ray Data runs as an actor pool (``map_batches(ShardWorker,
concurrency=N)``): the renderer is set up once per worker process and kept between tasks. For each
task it downloads the meshes a few objects ahead (``--downloads`` threads, on the node that renders
them), makes the samples into a local tar, then commits: the shard manifest first, then the tar
(a rename on a local folder, one upload on an object store). The driver only receives a small summary
per shard. A bad object becomes a failed row with its reason; a crash or hang is survived through
:mod:`voxforge.pipeline.isolation`.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from voxforge.loaders import format as fmt
from voxforge.meshio import set_limits
from voxforge.loaders.shards import TarBuilder, shard_name
from voxforge.pipeline.config import RunConfig
from voxforge.pipeline.isolation import AttemptGuard
from voxforge.pipeline.manifest import ShardManifest, manifest_row, shard_manifest_path
from voxforge.pipeline.plan import ShardTask
from voxforge.pipeline.recycling import WorkerRecycler
from voxforge.pipeline.sources import ObjectRecord
from voxforge.pipeline.stages import SampleError, make_sample
from voxforge.storage import location, storage_problem

COMMIT_ATTEMPTS = 4  # writes of a shard (manifest + tar) before the task reports it could not commit
RECYCLE_JOURNAL = f"{fmt.WORK_DIR}/recycled_workers.jsonl"


class Prefetcher:
    """A task's meshes downloaded ``downloads`` at a time, at most that many objects ahead of rendering;
    each mesh is evicted once its sample is made (unless ``keep_meshes``)."""

    def __init__(self, records: list[ObjectRecord], downloads: int, keep_meshes: bool) -> None:
        self.queue = [r for r in records if r.fetch]
        self.position = {r.object_id: i for i, r in enumerate(self.queue)}
        self.ahead = max(1, downloads)
        self.keep_meshes = keep_meshes
        self.pool = ThreadPoolExecutor(self.ahead, thread_name_prefix="voxforge-fetch") if self.queue else None
        self.futures: dict[str, Future] = {}
        self.submitted = 0

    def _top_up(self, position: int) -> None:
        from voxforge.pipeline.downloads.materialize import ensure_local

        while self.submitted < len(self.queue) and self.submitted <= position + self.ahead:
            record = self.queue[self.submitted]
            self.futures[record.object_id] = self.pool.submit(ensure_local, record.fetch)
            self.submitted += 1

    def wait(self, record: ObjectRecord) -> str:
        """Fetch ``record``'s mesh (if it has one to fetch); returns the failure reason, or "" when fine."""
        if not record.fetch:
            return ""
        from voxforge.pipeline.downloads.hub import redact

        self._top_up(self.position[record.object_id])
        try:
            self.futures[record.object_id].result()
        except Exception as error:  # one object's download never stops the run
            return redact(f"download: {error}")
        return ""

    def release(self, record: ObjectRecord) -> None:
        """The sample is made (or failed): evict the mesh this task downloaded."""
        future = self.futures.pop(record.object_id, None)
        if future is None or self.keep_meshes or not future.done() or future.exception() is not None:
            return
        _, downloaded = future.result()
        if downloaded:
            from voxforge.pipeline.downloads.cache import evict
            from voxforge.pipeline.downloads.materialize import cached_path

            evict(str(cached_path(record.fetch)))

    def close(self) -> None:
        if self.pool is not None:
            for future in self.futures.values():
                future.cancel()
            self.pool.shutdown(wait=True)
            for record in [r for r in self.queue if r.object_id in self.futures]:
                self.release(record)


def cap_private_memory(gigabytes: float) -> None:
    """Cap this process's private writable memory (RLIMIT_DATA, Linux 4.7+: heap and anonymous mappings,
    not shared memory such as Ray's object store) at ``gigabytes`` in all: allocations past it fail with
    MemoryError in Python and numpy, so one object cannot take the node's memory (0: no cap)."""
    if not gigabytes:
        return
    import resource

    limit = int(gigabytes * 2**30)
    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))


class ShardWorker:
    """A Ray Data actor: one renderer per worker process, one shard task per call."""

    def __init__(self, config: dict, run_token: str) -> None:
        from voxforge.renderers import get_renderer
        from voxforge.renderers.backgrounds import BackgroundPool, list_background_images

        self.config = RunConfig.from_dict(config)
        self.run_token = run_token
        # one worker per CPU is the parallelism; Mesa's software rasterizer would add a thread per core
        os.environ.setdefault("LP_NUM_THREADS", "1")
        self.renderer = get_renderer(self.config.renderer)(self.config.size, supersample=self.config.supersample,
                                                           **self.config.renderer_options())
        photos = list_background_images(self.config.backgrounds) if self.config.backgrounds else None
        self.backgrounds = BackgroundPool(photos, color=self.config.background_color)
        self.where = replace(location(self.config.out), keep_root=True)  # a removed --out is not made again
        self.guard = AttemptGuard(self.where, run_token, self.config.max_attempts, self.config.timeout)
        self.recycler = WorkerRecycler(
            self.renderer.recycle_after_objects if self.config.recycle_after is None else self.config.recycle_after,
            self.renderer.memory_limit_bytes if self.config.worker_memory_gb is None
            else int(self.config.worker_memory_gb * 2**30),
            journal=self._journal,
        )
        cap_private_memory(self.config.object_memory_gb)
        # what the mesh readers refuse before reading
        set_limits(self.config.max_triangles, self.config.max_texture_pixels)

    def _journal(self, entry: dict) -> None:
        """Note a replaced worker under the output (appended locally, one object per entry elsewhere)."""
        line = json.dumps(entry) + "\n"
        if self.where.is_local:
            with open(self.where.local_path(RECYCLE_JOURNAL), "a") as handle:
                handle.write(line)
        else:
            self.where.write_text(f"{fmt.WORK_DIR}/recycled/{entry['host']}-{entry['pid']}-{entry['time']:.0f}.json",
                                  line)

    def __call__(self, batch: dict) -> dict:
        self.recycler.recycle_if_due()  # between tasks: Ray restarts this actor and retries the task
        summaries = []
        for i in range(len(batch["split"])):
            if batch["error"][i]:  # the task could not be read: the output went bad
                summaries.append({"split": "", "index": -1, "objects": 0, "ok": 0, "failed": 0, "failures": [],
                                  "bytes": 0, "error": str(batch["error"][i]), "seconds": 0.0})
                continue
            task = ShardTask.from_row({k: batch[k][i] for k in ("split", "index", "records")})
            summaries.append(self.run_task(task))
        return {"summary": [json.dumps(summary) for summary in summaries]}

    def run_task(self, task: ShardTask) -> dict:
        """Make the task's samples and commit its shard; returns the summary the driver receives.

        A write the output refuses (full, read-only, removed) ends the task with ``error`` set and nothing
        of it committed: the driver stops the run there, and a later run makes the task again."""
        started = time.perf_counter()
        tar_name = f"{task.split}/{shard_name(task.index)}"
        manifest = ShardManifest(task.split, task.index, run=self.run_token)
        builder = fetcher = None
        try:
            self.guard.start_task(task.key, log=self.renderer.log_path)
            builder = TarBuilder(self.where.staging_file(tar_name))
            fetcher = Prefetcher(task.records, self.config.downloads, self.config.keep_meshes)
            for record in task.records:
                self._make(record, task.split, tar_name, builder, fetcher, manifest)
            self.guard.between()
            if manifest.ok:
                manifest.bytes, manifest.sha256 = builder.finish()
            else:
                builder.abort()
            error = self._commit(manifest, builder.path, tar_name)
        except OSError as problem:  # every object's own errors are caught in _make: this is the output's
            if builder is not None:
                builder.abort()
            manifest.rows = []
            error = f"cannot write to {self.where.url}: {storage_problem(problem)}"
        except BaseException:
            if builder is not None:
                builder.abort()
            raise
        finally:
            if fetcher is not None:
                fetcher.close()
        if not error:
            self.guard.finish_task()
        failures = [[r["id"], r["error"]] for r in manifest.rows if r["status"] != "ok"]
        return {"split": task.split, "index": task.index, "objects": len(task.records), "ok": manifest.ok,
                "failed": len(failures), "failures": failures, "bytes": manifest.bytes, "error": error,
                "seconds": time.perf_counter() - started}

    def _make(self, record: ObjectRecord, split: str, tar_name: str, builder: TarBuilder, fetcher: Prefetcher,
              manifest: ShardManifest) -> None:
        """One object: its sample into the shard's tar and an ok row, or a failed row with the reason."""
        row = {"id": record.object_id, "category": record.category, "source": record.source,
               "split": split, "license": record.license, "extra": record.extra}
        reason = fetcher.wait(record) or self.guard.begin(record.object_id)
        if not reason:
            try:
                members = make_sample(record, split, self.renderer, self.backgrounds, self.config,
                                      on_stage=self.guard.stage)
                key = fmt.sample_key(record.object_id)
                builder.add(key, members)
                meta = json.loads(members[fmt.META])
                manifest.rows.append(manifest_row(row, "ok", shard=tar_name, key=key, warnings=meta.get("warnings", []),
                                                  object_luma=meta.get("object_luma")))
            except SampleError as error:
                reason = str(error)
                if isinstance(error.__cause__, MemoryError):
                    self.recycler.request(f"an object ran out of memory ({record.object_id})")
            finally:
                self.guard.end()
                self.recycler.object_done()
        if reason:
            manifest.rows.append(manifest_row(row, "failed", error=reason))
        fetcher.release(record)

    def _commit(self, manifest: ShardManifest, tar_file: Path, tar_name: str) -> str:
        """Manifest first, then the tar; retried on storage errors. Returns "" or why it could not commit."""
        problem = ""
        try:
            for attempt in range(COMMIT_ATTEMPTS):
                try:
                    self.where.write_bytes(shard_manifest_path(manifest.split, manifest.index), manifest.to_json())
                    if manifest.ok:
                        self.where.put_file(tar_file, tar_name)
                    return ""
                except Exception as error:  # noqa: BLE001 (any backend's error: retried, then reported)
                    problem = storage_problem(error)
                    time.sleep(min(8.0, 0.5 * 2**attempt))
        finally:
            Path(tar_file).unlink(missing_ok=True)
        return f"cannot write {tar_name} to {self.where.url}: {problem} (tried {COMMIT_ATTEMPTS} times)"
