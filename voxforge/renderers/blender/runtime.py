"""Blender as a Python module, once per process: environment, safe preferences, output capture, reset.

``import bpy`` loads all of Blender into the process (about 1 s, 300+ MB). A worker keeps it loaded
and empties the scene between objects instead of starting a Blender per object. bpy is imported on,
and only ever called from, one dedicated thread (:mod:`.thread`, :func:`call`); at exit Blender is
shut down on that thread too. Blender writes its messages (importer warnings, render errors) with C
stdio to file descriptors 1 and 2, so they are captured by redirecting those descriptors into a
per-process log file around every call into Blender: the pipeline keeps the tail of that file as the
reason when an object fails, crashes or hangs.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from voxforge.pipeline.isolation import log_tail
from voxforge.renderers.blender.thread import blender_thread

# ID collections an object import can fill; they are emptied between objects (the scene, its view
# layer, the window manager and workspaces stay, so the render settings survive)
OBJECT_DATA = (
    "objects", "meshes", "materials", "textures", "images", "node_groups", "lights", "cameras", "curves",
    "armatures", "actions", "collections", "worlds", "texts", "grease_pencils", "lattices", "metaballs",
    "particles", "volumes", "pointclouds", "hair_curves", "fonts", "movieclips", "sounds", "speakers",
    "lightprobes", "cache_files", "masks", "palettes", "libraries",
)  # (shape keys go with their meshes)
LOG_TAIL_CHARS = 2000
MAX_LOG_BYTES = 1 << 20

EXIT_CAPSULE = "_bpy_detect_exit_singleton"  # Blender shuts down when this object is freed
BLENDER_MODULES = ("bpy", "_bpy", "addon_utils", "cycles", "bl_", "io_", "nodeitems_utils")

_bpy = None
_log_path: Path | None = None


def call(function: Callable, *args, **kwargs):
    """Run ``function`` on the Blender thread (directly when already there) and return its result."""
    return blender_thread().call(function, *args, **kwargs)


def cache_home() -> Path:
    """A persistent cache folder: Mesa's shader cache lives there (first frame 20-50 s without it)."""
    home = Path.home() / ".cache"
    try:
        home.mkdir(parents=True, exist_ok=True)
        if os.access(home, os.W_OK):
            return home
    except OSError:
        pass
    fallback = Path(tempfile.gettempdir()) / "voxforge-cache"
    fallback.mkdir(parents=True, exist_ok=True)
    return fallback


def load_bpy():
    """Import bpy once per process (on the Blender thread), with the environment and preferences voxforge
    relies on."""
    if _bpy is not None:
        return _bpy
    return call(_import_bpy)


def _import_bpy():
    global _bpy
    if _bpy is not None:
        return _bpy
    os.environ.setdefault("XDG_CACHE_HOME", str(cache_home()))
    blender_exit_work: list[tuple] = []
    register = atexit.register

    def hold_blenders_own(function, *args, **kwargs):  # Blender's exit work must run on this thread
        if (getattr(function, "__module__", None) or "").startswith(BLENDER_MODULES):
            blender_exit_work.append((function, args, kwargs))
        else:
            register(function, *args, **kwargs)
        return function

    atexit.register = hold_blenders_own
    try:
        import bpy
    except ImportError as error:
        raise ImportError(
            f"the Blender renderer needs the bpy module ({error}); install it with: pip install -e '.[blender]'"
        ) from error
    finally:
        atexit.register = register
    register(_exit_blender, blender_exit_work)
    if bpy.context.window is None:
        raise RuntimeError("bpy was imported on another thread before voxforge's Blender renderer started: "
                           "Blender's context belongs to that thread, so importers would refuse to run here. "
                           "Let voxforge import bpy (do not import it yourself first)")
    _bpy = bpy
    forbid_scripts()
    return bpy


def _exit_blender(blender_exit_work: list[tuple]) -> None:
    """At interpreter exit: Blender's own exit work, then its shutdown, on the Blender thread.

    Blender shuts down when the ``_bpy`` module's exit capsule is freed; left to the interpreter's
    final clean-up, that happens on the main thread, without Blender's context, and segfaults.
    """
    def shut_down() -> None:
        with blender_output():
            for function, args, kwargs in reversed(blender_exit_work):
                with contextlib.suppress(Exception):
                    function(*args, **kwargs)
            for name in ("_bpy", "bpy.types"):  # the capsule's holders: freed with the last reference
                module = sys.modules.get(name)
                if module is not None and EXIT_CAPSULE in getattr(module, "__dict__", {}):
                    delattr(module, EXIT_CAPSULE)

    with contextlib.suppress(Exception):
        call(shut_down)


def forbid_scripts() -> None:
    """Never run Python stored in a file (registered text blocks, driver expressions)."""
    _bpy.context.preferences.filepaths.use_scripts_auto_execute = False
    if _bpy.context.preferences.filepaths.use_scripts_auto_execute:
        raise RuntimeError("could not turn Blender's Python auto-execution off")


def log_path() -> Path:
    """This process's Blender log (Blender's own stdout/stderr while voxforge calls into it)."""
    global _log_path
    if _log_path is None:
        folder = Path(tempfile.gettempdir()) / "voxforge-blender-logs"
        folder.mkdir(parents=True, exist_ok=True)
        _log_path = folder / f"blender-{os.getpid()}.log"
        _log_path.write_bytes(b"")
    return _log_path


def log_size() -> int:
    try:
        return log_path().stat().st_size
    except OSError:
        return 0


def bound_log() -> None:
    """Empty the log when it has grown large (the pipeline also empties it at every object's start)."""
    if log_size() > MAX_LOG_BYTES:
        log_path().write_bytes(b"")


def blender_said(since: int = 0, chars: int = LOG_TAIL_CHARS) -> str:
    """The last lines Blender wrote in this process after byte offset ``since`` of its log."""
    if log_size() <= since:
        return ""
    return log_tail(str(log_path()), min(chars, log_size() - since))


def _flush_c_stdio() -> None:
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).fflush(None)


@contextlib.contextmanager
def blender_output() -> Iterator[None]:
    """Send file descriptors 1 and 2 (Blender's C output and Python's) to the log file meanwhile."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    _flush_c_stdio()
    saved = [os.dup(1), os.dup(2)]
    log = os.open(log_path(), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.dup2(log, 1)
        os.dup2(log, 2)
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        _flush_c_stdio()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for descriptor in (*saved, log):
            os.close(descriptor)


def clear_object_data() -> None:
    """Remove every object, mesh, material, image, ... and purge what they leave behind.

    Cheaper than ``read_factory_settings`` (which also throws away the render settings); the worker
    is recycled after a number of objects anyway, for the leaks no purge reaches.
    """
    bpy = _bpy
    for scene in [s for s in bpy.data.scenes if s != bpy.context.scene]:  # appended from a .blend file
        bpy.data.scenes.remove(scene)
    for name in OBJECT_DATA:
        collection = getattr(bpy.data, name, None)
        if collection is None:
            continue
        items = list(collection)
        if items:
            bpy.data.batch_remove(items)
    bpy.data.orphans_purge(do_local_ids=True, do_linked_ids=True, do_recursive=True)

