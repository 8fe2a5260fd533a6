"""Surviving objects that crash or hang a worker, with Ray's own actor restarts.

Before a worker starts an object it records an attempt in a marker file under the output folder; a
watchdog thread kills the worker process when the object overruns its time limit. If the process
dies (segfault in a GL driver, time-out, out of memory), Ray restarts the actor and retries the task;
the restarted worker finds the marker and, once the object has used up its attempts, reports it as
failed with the reason instead of trying again. Markers carry the run's token, so those left by an
earlier, killed run never count.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path

TIMEOUT_EXIT_CODE = 75


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

    def begin(self, object_id: str) -> str | None:
        """Start an attempt; returns the failure reason instead when the object has no attempts left."""
        marker = self._marker(object_id)
        previous = self._read(marker)
        attempts = int(previous.get("attempts", 0))
        if attempts >= self.max_attempts:
            marker.unlink(missing_ok=True)
            reason = previous.get("reason") or "the worker process died while processing it (crash or out of memory)"
            return f"{reason}; gave up after {attempts} attempt(s)"
        self._write(marker, {"run": self.run_token, "object_id": object_id, "attempts": attempts + 1, "reason": ""})
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
                data["reason"] = f"timed out: took longer than {self.timeout_s:g} s (renderer hung?)"
                self._write(marker, data)
                os._exit(TIMEOUT_EXIT_CODE)  # Ray restarts the actor and retries the task
