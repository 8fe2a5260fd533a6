"""Untrusted zip archives and ids: nothing may land outside its folder, link elsewhere, or fill the disk.

An archive member is extracted only when its name is a plain relative path (no ``..``, no absolute
path, no drive letter, no backslash, no NUL), it is not a symbolic link, and the object's members
together stay under a size limit (and a sane compression ratio: zip bombs). Ids from annotation
files pass :func:`safe_id` before they become part of a path.
"""

from __future__ import annotations

import re
import stat
import zipfile
from pathlib import Path, PurePosixPath

from voxforge.pipeline.downloads.cache import filled_atomically, path_lock

SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
MAX_RATIO = 500  # uncompressed / compressed size above which a large member is treated as a bomb
RATIO_APPLIES_ABOVE = 16 << 20


class ArchiveError(ValueError):
    """An archive (or one object in it) that is unsafe or broken."""


def safe_id(value: str, what: str = "id") -> str:
    """``value`` when it can be used as one path component as it is, else ArchiveError."""
    if not isinstance(value, str) or not SAFE_ID.match(value) or value in (".", ".."):
        raise ArchiveError(f"unsafe {what} {value!r}")
    return value


def safe_member_path(name: str) -> PurePosixPath:
    """A member name as a relative path that stays inside the extraction folder, else ArchiveError."""
    if not name or "\x00" in name or "\\" in name or name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise ArchiveError(f"unsafe archive member name {name!r}")
    path = PurePosixPath(name)
    if any(part in ("..", "") for part in path.parts) or path.is_absolute():
        raise ArchiveError(f"archive member {name!r} points outside its folder")
    return path


def is_symlink(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


def check_members(infos: list[zipfile.ZipInfo], max_bytes: int) -> None:
    """Refuse links, escaping names, and members that would decompress to too much."""
    total = 0
    for info in infos:
        safe_member_path(info.filename)
        if is_symlink(info):
            raise ArchiveError(f"archive member {info.filename!r} is a symbolic link")
        if info.file_size > RATIO_APPLIES_ABOVE and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise ArchiveError(f"archive member {info.filename!r} expands {info.file_size // max(info.compress_size, 1)}x "
                               "(zip bomb?)")
        total += info.file_size
    if total > max_bytes:
        raise ArchiveError(f"the object's archive members hold {total} bytes, over the limit of {max_bytes} (zip bomb?)")


def extract_prefix(archive: zipfile.ZipFile, prefix: str, dest: str | Path, max_bytes: int) -> list[str]:
    """Members under ``prefix`` into ``dest`` (prefix removed), all at once: written to a temporary
    folder and renamed when complete. Returns the extracted relative names. Holds ``dest``'s lock."""
    dest = Path(dest)
    infos = [i for i in archive.infolist() if i.filename.startswith(prefix) and not i.is_dir()]
    if not infos:
        raise ArchiveError(f"no archive members under {prefix!r}")
    check_members(infos, max_bytes)
    relative = [safe_member_path(i.filename[len(prefix):]) for i in infos]
    with path_lock(dest):
        if dest.is_dir():
            return [str(r) for r in relative]
        with filled_atomically(dest) as temporary:
            written = 0
            for info, rel in zip(infos, relative):
                target = temporary.joinpath(*rel.parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as source, open(target, "wb") as out:
                    while block := source.read(1 << 20):
                        written += len(block)
                        if written > max_bytes:
                            raise ArchiveError(f"archive members under {prefix!r} expand past {max_bytes} bytes")
                        out.write(block)
    return [str(r) for r in relative]
