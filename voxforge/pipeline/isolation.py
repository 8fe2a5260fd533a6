"""Surviving objects that crash or hang a worker, with Ray's own actor restarts.

Before a worker starts an object it records an attempt in a marker file under the output folder; a
watchdog thread kills the worker process when the object overruns its time limit. If the process
dies (segfault in a GL driver, time-out, out of memory), Ray restarts the actor and retries the task;
the restarted worker finds the marker and, once the object has used up its attempts, reports it as
failed with the reason instead of trying again. Markers carry the run's token, so those left by an
earlier, killed run never count. A renderer with a log of its own (Blender's output) names it in the
marker, and the end of that log is kept in the reason: the backend's own words about the crash or hang.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import threading
import time
from pathlib import Path

TIMEOUT_EXIT_CODE = 75
LOG_TAIL_CHARS = 1500
MODULE_LIST = re.compile(r"Extension modules:|(?:[\w.]+, ){8,}")
CRASH_DUMP = re.compile(r"^PC: @|\*\*\* SIG[A-Z]+ received|^Fatal Python error|^Stack \(most recent call first\)")


def log_tail(path: str | None, chars: int = LOG_TAIL_CHARS) -> str:
    """The last lines (at most ``chars`` characters) of a log file, joined by " | "; empty when none.

    When the process died with a crash dump (Python's faulthandler, Ray's signal handler), the dump's
    stack and module list say nothing about the object: what the backend wrote before it is kept,
    followed by the dump's one-line verdict ("Fatal Python error: Segmentation fault").
    """
    if not path:
        return ""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 8 * chars))
            lines = handle.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    if size > 8 * chars and len(lines) > 1:
        lines = lines[1:]  # the first line was cut
    lines = [line.strip() for line in lines if line.strip()]
    dump = next((i for i, line in enumerate(lines) if CRASH_DUMP.search(line)), None)
    if dump is not None:
        verdict = [line for line in lines[dump:] if line.startswith("Fatal Python error")][:1]
        lines = lines[:dump] + verdict
    text = " | ".join(line for line in lines if not MODULE_LIST.search(line))
    return text[-chars:] if len(text) > chars else text


def with_log(reason: str, path: str | None) -> str:
    tail = log_tail(path)
    return f"{reason}; last renderer output: {tail}" if tail else reason


class AttemptGuard:
    def __init__(self, directory: str | Path, run_token: str, max_attempts: int, timeout_s: float) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.run_token = run_token
        self.max_attempts = max_attempts
        self.timeout_s = timeout_s
        self._deadline: float | None = None
        self._current: Path | None = None
        self._lock = threading.Lock()
        threading.Thread(target=self._watch, daemon=True, name="voxforge-watchdog").start()

    def _marker(self, object_id: str) -> Path:
        return self.directory / (hashlib.sha1(object_id.encode()).hexdigest() + ".json")

    def _read(self, marker: Path) -> dict:
        try:
            data = json.loads(marker.read_text())
        except (OSError, ValueError):
            return {}
        return data if data.get("run") == self.run_token else {}

    def begin(self, object_id: str, log: str | None = None) -> str | None:
        """Start an attempt; returns the failure reason instead when the object has no attempts left.

        ``log``: a file the renderer writes its backend's output to (kept in the reason on a crash).
        """
        marker = self._marker(object_id)
        previous = self._read(marker)
        attempts = int(previous.get("attempts", 0))
        if attempts >= self.max_attempts:
            marker.unlink(missing_ok=True)
            reason = previous.get("reason") or with_log(
                "the worker process died while processing it (crash or out of memory)", previous.get("log"))
            return f"{reason}; gave up after {attempts} attempt(s)"
        self._write(marker, {"run": self.run_token, "object_id": object_id, "attempts": attempts + 1, "reason": "",
                             "log": str(log) if log else ""})
        if log:  # from here on the renderer's log is about this object only
            with contextlib.suppress(OSError):
                Path(log).write_bytes(b"")
        with self._lock:
            self._current, self._deadline = marker, time.monotonic() + self.timeout_s
        return None

    def end(self, object_id: str) -> None:
        with self._lock:
            self._current, self._deadline = None, None
        self._marker(object_id).unlink(missing_ok=True)

    @staticmethod
    def _write(marker: Path, data: dict) -> None:
        temporary = marker.with_suffix(".tmp")
        temporary.write_text(json.dumps(data))
        os.replace(temporary, marker)

    def _watch(self) -> None:
        while True:
            time.sleep(0.25)
            with self._lock:
                overdue = self._deadline is not None and time.monotonic() > self._deadline
                marker = self._current
            if overdue and marker is not None:
                data = self._read(marker)
                data["reason"] = with_log(f"timed out: took longer than {self.timeout_s:g} s (renderer hung?)",
                                          data.get("log"))
                self._write(marker, data)
                os._exit(TIMEOUT_EXIT_CODE)  # Ray restarts the actor and retries the task
