"""Replacing a long-lived worker before it degrades, with the same Ray actor restart that isolates crashes.

Blender slows down and grows in memory over hundreds of objects (3D-R2N2's renderer rebuilt its process
pool every 200 models). Between two shard tasks, once the worker has done ``after_objects`` or its resident
memory is above ``memory_limit_bytes``, it ends its own process. No attempt marker is open at that
moment, so nothing is counted against any object: Ray restarts the actor (``max_restarts=-1``) and
retries the task it was handed, which the fresh process then renders.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from collections.abc import Callable

RECYCLE_EXIT_CODE = 76

log = logging.getLogger(__name__)


def resident_memory_bytes() -> int:
    """Resident memory of this process (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class WorkerRecycler:
    """Counts the objects of this process and says when it should be replaced (0 = no limit)."""

    def __init__(self, after_objects: int = 0, memory_limit_bytes: int = 0,
                 journal: Callable[[dict], None] | None = None) -> None:
        self.after_objects = after_objects
        self.memory_limit_bytes = memory_limit_bytes
        self.journal = journal  # called with one entry per replaced worker
        self.objects = 0
        self.requested: str | None = None  # a reason to be replaced after this task, whatever the counts

    def object_done(self) -> None:
        self.objects += 1

    def reason(self) -> str | None:
        """Why this worker should be replaced now, or None."""
        if self.requested:
            return self.requested
        if self.after_objects and self.objects >= self.after_objects:
            return f"it has processed {self.objects} objects (limit {self.after_objects})"
        if self.memory_limit_bytes:
            resident = resident_memory_bytes()
            if resident > self.memory_limit_bytes:
                return (f"it holds {resident / 2**30:.2f} GiB of memory "
                        f"(limit {self.memory_limit_bytes / 2**30:.2f} GiB) after {self.objects} objects")
        return None

    def request(self, reason: str) -> None:
        """Be replaced at the next chance (e.g. after an object ran out of memory: the heap may stay
        fragmented)."""
        self.requested = reason

    def recycle_if_due(self) -> None:
        """End this process when it is due; call only between objects (no attempt open)."""
        reason = self.reason()
        if reason is None:
            return
        print(f"voxforge: replacing worker {os.getpid()}: {reason}", file=sys.stderr, flush=True)
        if self.journal is not None:
            entry = {"pid": os.getpid(), "host": socket.gethostname(), "objects": self.objects,
                     "resident_bytes": resident_memory_bytes(), "reason": reason, "time": time.time()}
            try:
                self.journal(entry)
            except Exception:  # noqa: BLE001 (the journal is informative; recycling must not depend on it)
                pass
        os._exit(RECYCLE_EXIT_CODE)
