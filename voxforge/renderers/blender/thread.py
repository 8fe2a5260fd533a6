"""The one thread that owns Blender in a process.

Blender's context (window, screen: what operators' ``poll`` checks) belongs to the thread that
imported bpy, and its shutdown must run there too (run on the main thread at exit, it crashes the
interpreter with a segmentation fault). Ray calls actor methods from threads of its own, so bpy is
imported on this daemon thread and every call into Blender is handed to it. A plain thread with a
queue, not a ``ThreadPoolExecutor``: executors refuse work once the interpreter starts exiting, and
Blender's shutdown is exactly such work.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future


class BlenderThread:
    def __init__(self) -> None:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="voxforge-blender", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            future, function, args, kwargs = self._queue.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(function(*args, **kwargs))
            except BaseException as error:  # handed to the caller, who re-raises it
                future.set_exception(error)

    def call(self, function: Callable, *args, **kwargs):
        """Run ``function`` here (directly when already on this thread) and return its result."""
        if threading.get_ident() == self._thread.ident:
            return function(*args, **kwargs)
        future: Future = Future()
        self._queue.put((future, function, args, kwargs))
        return future.result()


_instance: BlenderThread | None = None
_lock = threading.Lock()


def blender_thread() -> BlenderThread:
    """This process's Blender thread (started on first use)."""
    global _instance
    with _lock:
        if _instance is None:
            _instance = BlenderThread()
        return _instance
