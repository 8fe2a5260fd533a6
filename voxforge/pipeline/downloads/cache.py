"""The download cache: one folder shared by every run on the machine, safe for two runs at once.

Each cached path has its own lock file beside it (``.<name>.lock``, flock): a download or extraction
holds it exclusively and writes to a private temporary name first, renaming into place only when the
content is complete and verified, so no partial file ever sits under a final name. Readers hold it
shared while they load, and eviction only takes it when nobody is reading.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path


def default_cache_dir() -> Path:
    """``$VOXFORGE_CACHE``, else ``$XDG_CACHE_HOME/voxforge``, else ``~/.cache/voxforge``."""
    if os.environ.get("VOXFORGE_CACHE"):
        return Path(os.environ["VOXFORGE_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "voxforge"


def lock_path(target: Path) -> Path:
    return target.parent / f".{target.name}.lock"


@contextmanager
def path_lock(target: str | Path, shared: bool = False, blocking: bool = True):
    """Hold the lock of ``target``; yields False (and holds nothing) when not blocking and it is taken."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle = open(lock_path(target), "a+")
    try:
        flags = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if blocking else fcntl.LOCK_NB)
        try:
            fcntl.flock(handle, flags)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        handle.close()  # closing releases the lock


def temporary_sibling(target: Path, suffix: str = ".partial") -> Path:
    """A private name in the same folder (same file system, so the final rename is atomic)."""
    return target.parent / f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{suffix}"


@contextmanager
def filled_atomically(target: Path):
    """A private temporary path beside ``target`` to fill (a file or a folder), renamed to ``target``
    when the block ends without an error and removed otherwise. Call while holding ``target``'s lock:
    orphans of killed writers are cleared first."""
    remove_stale_temporaries(target)
    temporary = temporary_sibling(target)
    try:
        yield temporary
        os.rename(temporary, target)
    finally:
        if temporary.exists():
            remove_path(temporary)


def remove_stale_temporaries(target: Path) -> None:
    """Temporaries of ``target`` left by a killed process; call only while holding ``target``'s lock
    (every writer holds it while its temporary exists, so any that remain are orphans)."""
    for orphan in target.parent.glob(f".{glob_escape(target.name)}.*.partial"):
        remove_path(orphan)


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def evict(target: str | Path) -> bool:
    """Delete a cached file or folder unless another process is reading or writing it right now."""
    target = Path(target)
    with path_lock(target, blocking=False) as held:
        if not held or not target.exists():
            return False
        remove_path(target)
        return True


def write_atomic(target: Path, data: bytes) -> None:
    """``data`` under ``target``, appearing all at once (used for small index files)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_sibling(target)
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, target)
