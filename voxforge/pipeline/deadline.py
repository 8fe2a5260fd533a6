"""An object's deadline enforced from outside the worker process.

The worker's own watchdog thread (:class:`voxforge.pipeline.isolation.AttemptGuard`) ends an object
that overruns ``--timeout`` with a clear reason, but it runs inside the process: a worker that is
stopped (``SIGSTOP``, a debugger, a frozen container) or stuck in native code holding the GIL never
gives it a turn. So each worker also starts one small watchdog *process* that reads the current
deadline from a file the worker rewrites (JSON: wall-clock deadline, ``0`` between objects, and the
task's attempt marker) and, once the deadline is ``grace`` seconds past, writes the time-out reason
into that marker and sends ``SIGKILL`` (which ends a stopped process too): Ray then restarts the actor
and retries the shard task, which reads the reason from the marker. The watchdog exits when the
worker is gone.

    python -m voxforge.pipeline.deadline WORKER_PID DEADLINE_FILE GRACE_SECONDS
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

POLL_S = 0.5


def watch(worker: int, deadline_file: Path, grace_s: float) -> None:
    """Until ``worker`` is gone: kill it when the deadline in ``deadline_file`` is ``grace_s`` past. The
    file is removed when this returns (a killed worker cannot remove it)."""
    try:
        _watch(worker, deadline_file, grace_s)
    finally:
        with contextlib.suppress(OSError):
            deadline_file.unlink()


def _watch(worker: int, deadline_file: Path, grace_s: float) -> None:
    while True:
        time.sleep(POLL_S)
        if os.getppid() != worker:  # the worker died and this process was handed to another parent
            return
        try:
            current = json.loads(deadline_file.read_text())
        except (OSError, ValueError):  # gone: look again next time
            continue
        if current.get("deadline") and time.time() > current["deadline"] + grace_s:
            with contextlib.suppress(Exception):  # the kill must happen even if the note cannot be written
                record_reason(current)
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker, signal.SIGKILL)
            return


def record_reason(current: dict) -> None:
    """Write the time-out reason into the task's attempt marker (on any storage the run writes to), so
    the retried task reports a time-out, not a crash."""
    from voxforge.pipeline.isolation import with_log
    from voxforge.storage import location

    if not current.get("output") or not current.get("marker"):
        return
    where = location(current["output"])
    state = json.loads(where.read_bytes(current["marker"]))
    reason = f"{current['stage']}: {current['reason']}" if current.get("stage") else current["reason"]
    state["reason"] = with_log(reason, current.get("log"))
    where.write_bytes(current["marker"], json.dumps(state).encode())


class ExternalDeadline:
    """The worker's side: starts the watchdog process and tells it each object's deadline."""

    def __init__(self, grace_s: float) -> None:
        # in memory where the system has it: rewritten several times per object, never worth a disk write
        folder = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        self._handle, name = tempfile.mkstemp(prefix="voxforge-deadline-", suffix=".json", dir=folder)
        self.path = Path(name)
        self.set(None)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "voxforge.pipeline.deadline", str(os.getpid()), str(self.path), str(grace_s)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def set(self, deadline: float | None, output: str = "", marker: str = "", reason: str = "", log: str = "") -> None:
        """``deadline`` in ``time.time()`` seconds (None: no object in progress); past it, ``reason`` (with
        the end of the renderer's ``log``, if any) is written into ``marker`` (a path under the location
        ``output``) before the worker is killed."""
        self._write({"deadline": deadline or 0.0, "output": output, "marker": marker, "reason": reason, "log": log})

    def stage(self, name: str) -> None:
        """The object in progress entered stage ``name`` (load, render, ...): the reason names it."""
        if self._current.get("deadline"):
            self._write({**self._current, "stage": name})

    def _write(self, current: dict) -> None:
        """Rewrite the file in place (no new file per write: a few hundred microseconds less each time). The
        watchdog may read it between the two calls; it then fails to parse it and reads again next poll."""
        self._current = current
        data = json.dumps(current).encode()
        os.pwrite(self._handle, data, 0)
        os.ftruncate(self._handle, len(data))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.process.kill()
        with contextlib.suppress(OSError):
            os.close(self._handle)
        with contextlib.suppress(OSError):
            self.path.unlink()


if __name__ == "__main__":
    watch(int(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3]))
