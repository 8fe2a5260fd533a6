"""An object's deadline enforced from outside the worker process.

The worker's own watchdog thread (:class:`voxforge.pipeline.isolation.AttemptGuard`) ends an object
that overruns ``--timeout`` with a clear reason, but it runs inside the process: a worker that is
stopped (``SIGSTOP``, a debugger, a frozen container) or stuck in native code holding the GIL never
gives it a turn. So each worker also starts one small watchdog *process* that reads the current
deadline from a file the worker rewrites (wall-clock seconds, ``0`` between objects) and sends
``SIGKILL`` (which ends a stopped process too) once the deadline is ``grace`` seconds past: Ray then
restarts the actor and retries the shard task, whose marker names the object as timed out. The
watchdog exits when the worker is gone.

    python -m voxforge.pipeline.deadline WORKER_PID DEADLINE_FILE GRACE_SECONDS
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

POLL_S = 0.5


def watch(worker: int, deadline_file: Path, grace_s: float) -> None:
    """Until ``worker`` is gone: kill it when the deadline in ``deadline_file`` is ``grace_s`` past."""
    while True:
        time.sleep(POLL_S)
        if os.getppid() != worker:  # the worker died and this process was handed to another parent
            return
        try:
            deadline = float(deadline_file.read_text() or 0)
        except (OSError, ValueError):  # gone, or caught mid-write: look again next time
            continue
        if deadline and time.time() > deadline + grace_s:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker, signal.SIGKILL)
            return


class ExternalDeadline:
    """The worker's side: starts the watchdog process and tells it each object's deadline."""

    def __init__(self, grace_s: float) -> None:
        handle, name = tempfile.mkstemp(prefix="voxforge-deadline-", suffix=".txt")
        os.close(handle)
        self.path = Path(name)
        self.set(None)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "voxforge.pipeline.deadline", str(os.getpid()), str(self.path), str(grace_s)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def set(self, deadline: float | None) -> None:
        """``deadline`` in ``time.time()`` seconds, or None when no object is in progress."""
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(repr(deadline or 0.0))
        os.replace(temporary, self.path)  # the watchdog never reads half a number

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.process.kill()
        with contextlib.suppress(OSError):
            self.path.unlink()


if __name__ == "__main__":
    watch(int(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3]))
