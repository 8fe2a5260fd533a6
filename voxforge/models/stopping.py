"""Training that never silently loses or destroys work, shared by every model family (through the engine).

- :func:`prepare_run_dir`: ``pipeline train --out RUN`` checks RUN before anything is written: a
  folder holding files is refused unless the run is continued (``--resume``) or its files are deleted
  first (``--overwrite``).
- :class:`Stopper`: the loop's clock and stop flag. SIGTERM, SIGINT and SIGUSR1 only set a flag; the
  trainer stops at the next iteration boundary and saves its checkpoint (model, optimizer, schedule,
  RNG states, iteration and data position, so ``--resume`` continues exactly), as it does once
  ``--time-limit`` minutes have passed. It also says when ``--checkpoint-minutes`` of wall-clock time
  call for a checkpoint between the iteration-interval ones. Under DDP the ranks agree on the
  iteration to stop at (one small all_reduce per iteration, shared with the end-of-data check).
- :func:`quiet_worker`: part of the DataLoader workers' ``worker_init_fn``
  (:func:`voxforge.models.threads.worker_init`), so a signal sent to every process
  (a terminal's Ctrl-C, SLURM) is acted on by the training process alone.
- :func:`report_stop`: the command's message and exit status after a stop.

Exit status of ``pipeline train`` after a clean stop: 128 + the signal's number for SIGTERM (143) and
SIGINT (130), the shell's convention for a process ended by that signal; 0 for SIGUSR1 (SLURM's warning
before a time limit or pre-emption) and for ``--time-limit``, which are planned stops.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Self

log = logging.getLogger(__name__)

STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
PLANNED_STOP_SIGNALS = (signal.SIGUSR1,)  # a clean stop after these exits 0, after the others 128 + number

# what ``pipeline train`` (and ``eval`` / ``predict`` with their default outputs) write into a run folder
RUN_FILES = ("checkpoint.pt", "checkpoint.partial", "config.json", "metrics.csv", "metrics.csv.partial",
             "tensorboard", "eval.json", "eval.json.partial", "gallery.png", "gallery.png.partial", "predict", "ray")

_TIME_LIMIT = 1  # stop code of the time limit; a signal's code is 100 + its number (under DDP the largest wins)


class RunFolderError(ValueError):
    """The run folder cannot be trained into as asked (it holds files and neither resume nor overwrite was given)."""


def prepare_run_dir(run_dir: str | Path, resume: bool = False, overwrite: bool = False) -> tuple[list[str], list[str]]:
    """Check ``run_dir`` before a training run writes into it; returns (deleted, kept) entry names.

    A missing or empty folder is trained into as it is. A folder with anything in it needs ``resume``
    (continue the run there from its ``checkpoint.pt``) or ``overwrite`` (delete the run's files first:
    checkpoint, config.json, metrics.csv, TensorBoard events, eval.json, gallery.png, predictions, Ray
    logs; anything else in the folder is kept, never deleted). Otherwise :class:`RunFolderError`, and
    nothing is touched.
    """
    if resume and overwrite:
        raise RunFolderError("--resume and --overwrite exclude each other")
    path = Path(run_dir)
    if path.exists() and not path.is_dir():
        raise RunFolderError(f"{path} exists and is not a folder")
    entries = sorted(entry.name for entry in path.iterdir()) if path.is_dir() else []
    if not entries or resume:
        return [], []
    if not overwrite:
        shown = ", ".join(entries[:4]) + (", ..." if len(entries) > 4 else "")
        raise RunFolderError(f"{path} is not empty ({shown}); add --resume to continue the run there, "
                             "or --overwrite to delete its files and train from scratch")
    deleted = [name for name in entries if name in RUN_FILES]
    for name in deleted:
        target = path / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink()
    return deleted, [name for name in entries if name not in RUN_FILES]


def quiet_worker(worker_id: int) -> None:
    """In the training DataLoaders' workers (:func:`voxforge.models.threads.worker_init` calls it): the stop
    signals are the training process's business.

    SIGINT and SIGUSR1 are ignored; SIGTERM ends the worker quietly (exit status 0, as PyTorch's own
    handler does for its parent's SIGTERM) instead of killing it, which would raise an error in the
    training process at an arbitrary point. The training process stops at the next iteration boundary
    and shuts its workers down.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda signum, frame: os._exit(0))


def _minutes(value: float | None, name: str) -> float:
    if value is None:
        return 0.0
    value = float(value)
    if not value >= 0:  # also NaN
        raise ValueError(f"{name} must be a number of minutes >= 0, got {value}")
    return value


class Stopper:
    """When a training loop checkpoints and when it stops.

    ``checkpoint_minutes``: minutes of wall-clock time between checkpoints, besides every
    ``checkpoint_every`` iterations (0 or None: iterations only). ``time_limit``: minutes of wall-clock
    time after which the run stops with a checkpoint (None or 0: no limit), counted from when the Stopper
    is made (the trainer makes it first thing). ``signals``: caught inside ``with stopper:`` (default
    SIGTERM, SIGINT, SIGUSR1); their handler only sets a flag, and a second SIGINT raises
    KeyboardInterrupt (Ctrl-C twice: stop at once). Handlers are installed from the main thread only
    (elsewhere, e.g. in a Ray Train worker, only the time limit and the timed checkpoints apply) and
    the previous ones are put back on leaving the ``with`` block.
    """

    def __init__(self, checkpoint_minutes: float | None = 10.0, time_limit: float | None = None,
                 signals: Iterable[int] = STOP_SIGNALS, clock: Callable[[], float] = time.monotonic) -> None:
        self.checkpoint_minutes = _minutes(checkpoint_minutes, "checkpoint_minutes")
        self.time_limit = _minutes(time_limit, "time_limit")
        self.signals = tuple(signals)
        self._clock = clock
        self._started = self._last_checkpoint = clock()
        self._signal: int | None = None
        self._previous: dict[int, object] = {}
        self.code = 0  # why the run stopped: 0 (it did not), _TIME_LIMIT or 100 + a signal's number
        self.fetch_seconds = 0.0  # time the last next_batch spent reading the batch

    def __enter__(self) -> Self:
        if threading.current_thread() is threading.main_thread():
            try:
                for number in self.signals:
                    self._previous[number] = signal.signal(number, self._handle)
            except BaseException:
                self.__exit__()
                raise
        return self

    def __exit__(self, *exc) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()

    def _handle(self, number: int, frame) -> None:
        if self._signal == signal.SIGINT and number == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C
        if self._signal is None:
            self._signal = number

    def _asked(self) -> int:
        """This process's stop code now: a signal came, or the time limit has passed (0: go on)."""
        if self._signal is not None:
            return 100 + int(self._signal)
        if self.time_limit and self._clock() - self._started >= self.time_limit * 60:
            return _TIME_LIMIT
        return 0

    def next_batch(self, stream: Iterator[dict], state=None) -> dict | None:
        """The next batch for the next iteration, or None where the loop must end: a stop was asked (see
        :attr:`reason`) or the stream ended. Asked before each iteration, so a stop falls between two.

        ``state``: the :class:`voxforge.models.distributed.Distributed` of a DDP run; its ranks stop
        together, at the same iteration, when any one of them is asked to stop or runs out of batches.
        A rank asked to stop reads no further batch; a read that fails once a stop was asked (a worker
        process ended by the same signal) counts as that stop.
        """
        code = self._asked()
        began = time.perf_counter()
        batch = None
        if not code:
            try:
                batch = next(stream, None)
            except Exception as error:
                code = self._asked()
                if not code:
                    raise
                log.warning("reading the next batch failed after a stop was asked (%s); stopping", error)
        self.fetch_seconds = time.perf_counter() - began
        have = batch is not None or bool(code)
        if state is not None and state.world_size > 1:
            from voxforge.models.distributed import agree

            have, code = agree(have, code, state)
        self.code = code
        return batch if have and not code else None

    def checkpoint_due(self, done: int, every: int | None) -> bool:
        """Whether to checkpoint after ``done`` iterations: a multiple of ``every`` or
        ``checkpoint_minutes`` since the last checkpoint (call :meth:`checkpointed` after saving)."""
        if every and done % every == 0:
            return True
        return bool(self.checkpoint_minutes) and self._clock() - self._last_checkpoint >= self.checkpoint_minutes * 60

    def checkpointed(self) -> None:
        self._last_checkpoint = self._clock()

    @property
    def reason(self) -> str | None:
        """Why the loop stopped early: "SIGTERM", "SIGINT", "SIGUSR1", "time limit", or None."""
        if not self.code:
            return None
        if self.code == _TIME_LIMIT:
            return "time limit"
        return signal.Signals(self.code - 100).name

    @property
    def exit_status(self) -> int:
        """0 after no stop, a planned one (SIGUSR1, the time limit); 128 + the signal's number otherwise."""
        if self.code <= _TIME_LIMIT or self.code - 100 in PLANNED_STOP_SIGNALS:
            return 0
        return 128 + self.code - 100

    def summary(self, done: int, iterations: int) -> dict | None:
        """The trainers' ``result["stopped"]``: None after no stop, else reason, exit status, iteration."""
        if not self.code:
            return None
        return {"reason": self.reason, "exit_status": self.exit_status, "iteration": done, "iterations": iterations,
                "time_limit": self.time_limit or None}


def report_stop(stopped: dict, run_dir: str | Path, quiet: bool = False) -> int:
    """Say (on stderr) why a run stopped early, where its checkpoint is and how to continue; returns the
    exit status of ``pipeline train`` (see the module docstring)."""
    if not quiet:
        import sys

        why = (f"the time limit ({stopped['time_limit']:g} minutes)" if stopped["reason"] == "time limit"
               else stopped["reason"])
        print(f"stopped by {why} after iteration {stopped['iteration']} of {stopped['iterations']}: checkpoint in "
              f"{Path(run_dir) / 'checkpoint.pt'}; to continue, run the same command with --resume",
              file=sys.stderr)
    return stopped["exit_status"]
