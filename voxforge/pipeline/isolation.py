"""Surviving objects that crash or hang a worker, with Ray's own actor restarts, inside shard tasks.

A shard task renders its objects one after another in one worker process. Before each object the
worker records, in the task's marker file under the output (``.voxforge/attempts/<run>/``, on any
filesystem or object store, so a task retried on another node finds it), which object it is on; a
watchdog thread kills the process when the object overruns its time limit, and a watchdog process
outside it (:mod:`voxforge.pipeline.deadline`) does so a few seconds later if the thread could not
(a stopped worker, or one stuck in native code holding the GIL). If the process dies
(segfault in a GL driver, time-out, out of memory), Ray restarts the actor and retries the task; the
retried task reads the marker, counts a crash against the object that was running, and skips any
object that has used up its attempts, recording it as failed with the reason. Other objects of the
shard are made again, and the shard is written whole. Markers live under the run's token, so those
of an earlier, killed run never count. A renderer with a log of its own (Blender's output) names it
in the marker, and the end of that log is kept in the reason: the backend's own words about the crash.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import time
from pathlib import Path

from voxforge.pipeline.deadline import ExternalDeadline

TIMEOUT_EXIT_CODE = 75
EXTERNAL_GRACE_S = 5.0  # the in-process watchdog, which records the reason itself, gets the first chance
ATTEMPTS_DIR = ".voxforge/attempts"
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
    """One per worker process: the marker of the shard task in hand, and the watchdog of its objects.

    ``where``: the run's output location; ``max_attempts``: crashes or time-outs of one object before it
    is failed; ``timeout_s``: seconds an object may take.
    """

    def __init__(self, where, run_token: str, max_attempts: int, timeout_s: float) -> None:
        self.where = where
        self.folder = f"{ATTEMPTS_DIR}/{run_token}"
        self.max_attempts = max_attempts
        self.timeout_s = timeout_s
        self._marker: str | None = None
        self._state: dict = {}
        self._deadline: float | None = None
        self._stage = ""
        self._lock = threading.Lock()
        threading.Thread(target=self._watch, daemon=True, name="voxforge-watchdog").start()
        # the backstop for a worker whose thread never runs (stopped, or stuck holding the GIL)
        self.external = ExternalDeadline(grace_s=EXTERNAL_GRACE_S)

    def start_task(self, task_key: str, log: str | None = None) -> None:
        """Begin (or, after a crash, resume) the task ``task_key``: a crash during its last object counts."""
        self._marker = f"{self.folder}/{task_key}.json"
        try:
            state = json.loads(self.where.read_bytes(self._marker))
        except (FileNotFoundError, ValueError):
            state = {}
        crashes, reasons = state.get("crashes", {}), state.get("reasons", {})
        victim = state.get("current")
        if victim:  # the process died while this object was being made
            crashes[victim] = crashes.get(victim, 0) + 1
            reasons[victim] = state.get("reason") or with_log(
                "the worker process died while processing it (crash or out of memory)", state.get("log"))
        self._state = {"crashes": crashes, "reasons": reasons, "current": None, "reason": "",
                       "log": str(log) if log else ""}

    def begin(self, object_id: str) -> str | None:
        """Start an attempt; returns the failure reason instead when the object has no attempts left."""
        crashes = self._state["crashes"].get(object_id, 0)
        if crashes >= self.max_attempts:
            return f"{self._state['reasons'].get(object_id, 'the worker died')}; gave up after {crashes} attempt(s)"
        self._state.update(current=object_id, reason="")
        self._write()
        self.external.set(time.time() + self.timeout_s, self.where.url, self._marker,
                          f"timed out: took longer than {self.timeout_s:g} s (--timeout) and the worker was ended "
                          "from outside (stopped, or hung without letting its watchdog run)", self._state.get("log", ""))
        log = self._state["log"]
        if log:  # from here on the renderer's log is about this object only
            with contextlib.suppress(OSError):
                Path(log).write_bytes(b"")
        with self._lock:
            self._deadline = time.monotonic() + self.timeout_s
            self._stage = ""
        return None

    def stage(self, name: str) -> None:
        """The object in progress entered stage ``name`` (load, render, voxelize, ...): a time-out names it."""
        with self._lock:
            self._stage = name
        self.external.stage(name)

    def end(self) -> None:
        """The object is done (made or failed in an orderly way): its deadline no longer applies."""
        with self._lock:
            self._deadline = None
        self.external.set(None)

    def between(self) -> None:
        """Record that no object is in progress (before the shard is written): a death now blames nobody."""
        if self._state.get("current"):
            self._state["current"] = None
            self._write()

    def finish_task(self) -> None:
        """The shard is committed: its marker is no longer needed."""
        if self._marker:
            self.where.remove(self._marker)
        self._marker, self._state = None, {}

    def _write(self) -> None:
        self.where.write_bytes(self._marker, json.dumps(self._state).encode())

    def _watch(self) -> None:
        while True:
            time.sleep(0.25)
            with self._lock:
                overdue = self._deadline is not None and time.monotonic() > self._deadline
                stage = f"{self._stage}: " if self._stage else ""
            if overdue and self._state.get("current"):
                self._state["reason"] = with_log(
                    f"{stage}timed out: took longer than {self.timeout_s:g} s (--timeout)", self._state.get("log"))
                with contextlib.suppress(Exception):
                    self._write()
                os._exit(TIMEOUT_EXIT_CODE)  # Ray restarts the actor and retries the task
