"""The files a ``.blend`` file makes Blender read besides itself, found before Blender opens it.

Blender reads a file's linked libraries (other ``.blend`` files named in its Library blocks) while it
loads the file, so containment has to happen before Blender sees it: checking ``bpy.data.libraries``
afterwards is too late, the outside file has been read. The file's blocks are read here with Blender
Studio's blender-asset-tracer (BAT), which parses the file's own DNA (its struct layout) without Blender,
for every reference BAT knows of: libraries, images, fonts, sounds, movie clips, cache and volume files,
external mesh data, modifier caches, sequencer strips. Compressed files (zstd since Blender 3.0, gzip
before) are decompressed first into a temporary file, at most :data:`MAX_DECOMPRESSED_BYTES` (BAT's own
decompression has no bound).

What is done with what is found (:func:`check_references`): a library outside the object's folder (the
file's folder or the one above it, as for every importer; symlinks resolved), or one that is not a regular
file, refuses the whole file; libraries inside are checked in turn (at most :data:`MAX_LIBRARIES` files).
Images are left to :func:`voxforge.renderers.blender.importers.drop_unsafe_images`, which drops outside
ones with a warning before Blender decodes any pixel. Any other reference to an existing file outside the
folder refuses the file; one to a file that does not exist, or to a folder (an unset path is saved as
one), is harmless: Blender finds nothing to read.
"""

from __future__ import annotations

import gzip
import logging
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

MAX_DECOMPRESSED_BYTES = 2 << 30  # a compressed .blend expanding past this is refused (decompression bomb)
MAX_LIBRARIES = 64  # .blend files followed through library links, the first one included
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_GZIP_MAGIC = b"\x1f\x8b"
_IMAGE_CODES = {b"IM"}
NUL = b"\0"
_KINDS = {b"LI": "library", b"IM": "image", b"VF": "font", b"SO": "sound", b"MC": "movie clip",
          b"CF": "cache file", b"VO": "volume", b"ME": "external mesh data", b"OB": "modifier cache",
          b"SC": "sequencer strip", b"LA": "light profile"}

log = logging.getLogger(__name__)


class BlendReferenceError(RuntimeError):
    """The ``.blend`` file would make Blender read files it must not, or its references cannot be listed."""


@contextmanager
def _uncompressed(path: Path):
    """``path`` itself when it is a plain .blend, else a bounded decompressed copy (removed afterwards)."""
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic[:2] == _GZIP_MAGIC:
        opener = lambda: gzip.open(path, "rb")  # noqa: E731
    elif magic == _ZSTD_MAGIC:
        import zstandard

        def opener():
            return zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True)
    else:
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="voxforge-blend-") as folder:
        plain = Path(folder) / "plain.blend"
        try:
            with opener() as source, open(plain, "wb") as target:
                written = 0
                while chunk := source.read(1 << 20):
                    written += len(chunk)
                    if written > MAX_DECOMPRESSED_BYTES:
                        raise BlendReferenceError(f"{path.name} decompresses to more than "
                                                  f"{MAX_DECOMPRESSED_BYTES:,} bytes (a decompression bomb?)")
                    target.write(chunk)
        except BlendReferenceError:
            raise
        except Exception as error:  # a truncated or corrupt stream
            raise BlendReferenceError(f"{path.name} cannot be decompressed: {error}") from error
        yield plain


def references(path: str | Path) -> list[tuple[bytes, bytes]]:
    """``(block code, path as written)`` of every file ``path`` refers to, packed data excepted.

    Paths are bytes as stored (``//`` starts a path relative to the file's folder). Raises
    :class:`BlendReferenceError` when the file is not a .blend file BAT can read."""
    from blender_asset_tracer import blendfile
    from blender_asset_tracer.trace import asset_holding_blocks, blocks2assets

    path = Path(path)
    found: list[tuple[bytes, bytes]] = []
    with _uncompressed(path) as plain:
        try:
            bfile = blendfile.BlendFile(plain)
        except Exception as error:
            raise BlendReferenceError(f"{path.name} is not a .blend file Blender Asset Tracer can read: "
                                      f"{error}") from error
        try:
            for block in asset_holding_blocks(bfile.blocks):
                for usage in blocks2assets.iter_assets(block):
                    found.append((bytes(block.code), bytes(usage.asset_path)))
        except Exception as error:
            raise BlendReferenceError(f"cannot list the files {path.name} refers to: "
                                      f"{type(error).__name__}: {error}") from error
        finally:
            bfile.close()
    return found


def resolve(written: bytes, blend_folder: Path) -> str:
    """The real path (symlinks resolved) Blender would read for a reference written in a .blend file in
    ``blend_folder``: ``//`` is that folder; backslashes are separators, as Blender reads them."""
    text = written.rstrip(NUL).replace(b"\\", b"/")
    if text.startswith(b"//"):
        location = os.fsencode(blend_folder) + b"/" + text[2:]
    elif text.startswith(b"/"):
        location = text
    else:  # a drive letter, or a bare relative path: Blender reads it from its working folder
        location = os.fsencode(os.getcwd()) + b"/" + text
    return os.fsdecode(os.path.realpath(location))


def _readable(location: str) -> bool:
    """Something Blender could read bytes from: a file, a FIFO or a device (a folder is not; an unset path
    is saved relative to the file and resolves to one)."""
    return os.path.exists(location) and not os.path.isdir(location)


def check_references(path: str | Path, root: str | Path | None = None) -> None:
    """Raise :class:`BlendReferenceError` when opening ``path`` in Blender would read a file outside
    ``root`` (default: the file's folder or the one above it): any library outside it or not a regular
    file, any existing non-image file outside it, in ``path`` or in the libraries it links, followed up to
    :data:`MAX_LIBRARIES` files. Nothing outside ``root`` is opened to find out."""
    path = Path(path)
    root = os.path.realpath(root if root is not None else path.parent.parent)

    def inside(location: str) -> bool:
        return location == root or location.startswith(root + os.sep)

    pending, seen = [os.path.realpath(path)], set()
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        if len(seen) > MAX_LIBRARIES:
            raise BlendReferenceError(f"{path.name} links more than {MAX_LIBRARIES} library files")
        outside = []
        for code, written in references(current):
            location = resolve(written, Path(current).parent)
            kind = _KINDS.get(code, code.decode(errors="replace"))
            shown = f"{os.fsdecode(written.rstrip(NUL))} ({kind})"
            if code == b"LI":
                if not inside(location) or (os.path.exists(location) and not os.path.isfile(location)):
                    outside.append(shown)
                elif os.path.isfile(location):
                    pending.append(location)
            elif code not in _IMAGE_CODES and not inside(location) and _readable(location):
                outside.append(shown)
        if outside:
            which = path.name if current == os.path.realpath(path) else f"{path.name} (through {Path(current).name})"
            raise BlendReferenceError(f"{which} would make Blender read files outside the object's folder: "
                                      f"{', '.join(outside[:3])}" + (f" and {len(outside) - 3} more"
                                                                     if len(outside) > 3 else ""))

