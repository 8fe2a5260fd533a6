"""WebDataset tar shards, written atomically: a loader never sees a half-written shard.

A shard is written under a temporary name and appears as ``shard-NNNNNN.tar`` only once complete
(renamed on a filesystem, one committed upload on an object store). Members are stored in a fixed
order with fixed metadata, so the same samples give byte-identical shards.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path

from voxforge.loaders.format import SHARD_PREFIX, SHARD_SUFFIX
from voxforge.loaders.tar_stream import group_samples, iter_tar_members
from voxforge.storage import fsync_directory

TEMPORARY_SUFFIX = ".partial"
SHARD_NAME = re.compile(rf"^{SHARD_PREFIX}-(\d+){re.escape(SHARD_SUFFIX)}$")


def shard_name(index: int) -> str:
    """``shard-000042.tar``: the file name of a split's shard number ``index``."""
    return f"{SHARD_PREFIX}-{index:06d}{SHARD_SUFFIX}"


def shard_index(name: str) -> int | None:
    """The number in a shard file name, or None when ``name`` is not a shard."""
    match = SHARD_NAME.match(name)
    return int(match.group(1)) if match else None


def shard_paths(directory: str | Path) -> list[Path]:
    """Complete shards in a folder, in order."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if SHARD_NAME.match(p.name))


def remove_partial_shards(directory: str | Path) -> list[Path]:
    """Delete files a killed run left half-written (``*.partial``); returns what was removed."""
    directory = Path(directory)
    removed = sorted(directory.glob(f"*{TEMPORARY_SUFFIX}")) if directory.is_dir() else []
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


class _HashingFile:
    """A write-only file that also computes the sha256 and size of what passes through it."""

    def __init__(self, handle) -> None:
        self.handle = handle
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.handle.write(data)

    def tell(self) -> int:
        return self.size


class TarBuilder:
    """One shard's tar, written sample by sample to a local file; ``finish`` returns (bytes, sha256).

    Fixed member order (sorted names) and metadata (mode 0644, mtime 0) make the bytes depend on the
    samples alone.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "wb")
        self._hashing = _HashingFile(self._file)
        self._tar = tarfile.open(fileobj=self._hashing, mode="w", format=tarfile.PAX_FORMAT)
        self.keys: list[str] = []

    def add(self, key: str, members: dict[str, bytes]) -> None:
        for name in sorted(members):
            info = tarfile.TarInfo(f"{key}.{name}")
            info.size, info.mode, info.mtime = len(members[name]), 0o644, 0
            self._tar.addfile(info, io.BytesIO(members[name]))
        self.keys.append(key)

    def finish(self) -> tuple[int, str]:
        """Close the tar, flush it to disk; returns its size in bytes and its sha256 (hex)."""
        self._tar.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        return self._hashing.size, self._hashing.digest.hexdigest()

    def abort(self) -> None:
        """Drop the file (nothing of it was published). Never raises: it runs after a failed write, whose
        error is the one worth reporting (a ``.partial`` file left behind is removed by the next run)."""
        for close in (self._tar.close, self._file.close, lambda: self.path.unlink(missing_ok=True)):
            try:
                close()
            except OSError:
                pass


class ShardWriter:
    """Appends samples to numbered shards of at most ``max_count`` samples each, in one local folder
    (for datasets made in one process; pipeline runs commit one shard per Ray task instead)."""

    def __init__(self, directory: str | Path, max_count: int) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_count = max_count
        existing = [shard_index(p.name) for p in shard_paths(self.directory)]
        self.next_index = max(existing, default=-1) + 1
        self._builder: TarBuilder | None = None

    @property
    def current_name(self) -> str:
        return shard_name(self.next_index)

    def add(self, key: str, members: dict[str, bytes]) -> tuple[str, list[str]] | None:
        """Write one sample; returns (shard name, keys) when this filled and committed a shard."""
        if self._builder is None:
            self._builder = TarBuilder(self.directory / (self.current_name + TEMPORARY_SUFFIX))
        self._builder.add(key, members)
        return self.commit() if len(self._builder.keys) >= self.max_count else None

    def commit(self) -> tuple[str, list[str]] | None:
        """Finish the open shard (flush, fsync, rename); None if nothing is open."""
        if self._builder is None:
            return None
        self._builder.finish()
        name, keys = self.current_name, self._builder.keys
        os.replace(self._builder.path, self.directory / name)
        fsync_directory(self.directory)
        self._builder = None
        self.next_index += 1
        return name, keys

    def abort(self) -> None:
        """Drop the open shard."""
        if self._builder is not None:
            self._builder.abort()
        self._builder = None


def iter_shard(path: str | Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {member name: bytes}) per sample, in the order written (a fast header loop, not tarfile)."""
    with open(path, "rb", buffering=1 << 20) as stream:
        yield from group_samples(iter_tar_members(stream, str(path)))
