"""WebDataset tar shards, written atomically: a loader never sees a half-written shard.

A shard is written under a temporary name and renamed to ``shard-NNNNNN.tar`` only once complete and
flushed to disk. Members are stored in a fixed order with fixed metadata, so the same samples give
byte-identical shards.
"""

from __future__ import annotations

import io
import os
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path

from voxforge.loaders.format import SHARD_PREFIX, SHARD_SUFFIX
from voxforge.loaders.tar_stream import group_samples, iter_tar_members

TEMPORARY_SUFFIX = ".tar.partial"
_SHARD_NAME = re.compile(rf"^{SHARD_PREFIX}-(\d+){re.escape(SHARD_SUFFIX)}$")


def shard_paths(directory: str | Path) -> list[Path]:
    """Complete shards in a folder, in order."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if _SHARD_NAME.match(p.name))


def remove_partial_shards(directory: str | Path) -> list[Path]:
    """Delete shards a killed run left half-written; returns what was removed."""
    directory = Path(directory)
    removed = sorted(directory.glob(f"*{TEMPORARY_SUFFIX}")) if directory.is_dir() else []
    for path in removed:
        path.unlink()
    return removed


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ShardWriter:
    """Appends samples to numbered shards of at most ``max_count`` samples each."""

    def __init__(self, directory: str | Path, max_count: int) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_count = max_count
        existing = [int(_SHARD_NAME.match(p.name).group(1)) for p in shard_paths(self.directory)]
        self.next_index = max(existing, default=-1) + 1
        self._tar: tarfile.TarFile | None = None
        self._file = None
        self._keys: list[str] = []

    @property
    def current_name(self) -> str:
        return f"{SHARD_PREFIX}-{self.next_index:06d}{SHARD_SUFFIX}"

    def add(self, key: str, members: dict[str, bytes]) -> tuple[str, list[str]] | None:
        """Write one sample; returns (shard name, keys) when this filled and committed a shard."""
        if self._tar is None:
            self._file = open(self.directory / (self.current_name + ".partial"), "wb")
            self._tar = tarfile.open(fileobj=self._file, mode="w", format=tarfile.PAX_FORMAT)
        for name in sorted(members):
            info = tarfile.TarInfo(f"{key}.{name}")
            info.size, info.mode, info.mtime = len(members[name]), 0o644, 0
            self._tar.addfile(info, io.BytesIO(members[name]))
        self._keys.append(key)
        return self.commit() if len(self._keys) >= self.max_count else None

    def commit(self) -> tuple[str, list[str]] | None:
        """Finish the open shard (flush, fsync, rename); None if nothing is open."""
        if self._tar is None:
            return None
        self._tar.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        name, keys = self.current_name, self._keys
        os.replace(self.directory / (name + ".partial"), self.directory / name)
        _fsync_directory(self.directory)
        self._tar, self._file, self._keys = None, None, []
        self.next_index += 1
        return name, keys

    def abort(self) -> None:
        """Drop the open shard (its samples were never recorded as done, so a resume redoes them)."""
        if self._tar is not None:
            try:
                self._tar.close()
                self._file.close()
            except OSError:
                pass
            (self.directory / (self.current_name + ".partial")).unlink(missing_ok=True)
        self._tar, self._file, self._keys = None, None, []


def iter_shard(path: str | Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {member name: bytes}) per sample, in the order written (a fast header loop, not tarfile)."""
    with open(path, "rb", buffering=1 << 20) as stream:
        yield from group_samples(iter_tar_members(stream, str(path)))
