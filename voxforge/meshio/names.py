"""Finding the files a mesh file names (material libraries, textures) when the names do not match byte
for byte: written in another encoding than the file system's, in another letter case, or with a
Windows folder.

OBJ and MTL files carry no encoding: many were written on Windows in cp1252/latin-1, so
``mtllib café.mtl`` may name a file whose bytes are ``caf\\xe9.mtl`` while trimesh decoded the line as
UTF-8 or guessed another encoding. Candidates are tried in order: the name as given, its bytes under
each plausible encoding, the base name alone, and a case-insensitive match in the folder. Nothing
outside the file's folder, or the folder above it (where ShapeNetCore v2 keeps ``../images/``; the
Blender renderer allows the same), is ever returned.
"""

from __future__ import annotations

import os
from pathlib import Path

import trimesh

from voxforge.meshio.images import texture_problem

ENCODINGS = ("utf-8", "cp1252", "latin-1")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tga", ".tif", ".tiff", ".gif", ".webp", ".dds", ".ppm"}


def portable_name(name: str) -> str:
    """A file name as text every output can hold: bytes that are not UTF-8 (a ``caf\\xe9.obj`` written on
    a latin-1 system reaches Python as a lone surrogate) become ``%E9``, so ids, categories and manifests
    encode; the record's ``uri`` keeps the real name for opening the file."""
    if not any("\udc80" <= c <= "\udcff" for c in name):
        return name
    return "".join(f"%{ord(c) - 0xDC00:02X}" if "\udc80" <= c <= "\udcff" else c for c in name)


def name_candidates(name: str | bytes) -> list[str]:
    """File-system names (``os.fsdecode`` form) a referenced name may stand for, most likely first."""
    found: list[str] = []
    if isinstance(name, bytes):
        found.append(os.fsdecode(name))
        found += [_decoded(name, encoding) for encoding in ENCODINGS]
    else:
        found.append(name)
        for encoding in ENCODINGS[1:]:  # a name trimesh decoded with a single-byte guess: its original bytes
            try:
                found.append(os.fsdecode(name.encode(encoding)))
            except UnicodeEncodeError:
                pass
    found = [n.strip().replace("\\", "/") for n in found if n]
    found += [n.rsplit("/", 1)[-1] for n in found]
    return list(dict.fromkeys(n for n in found if n))


def _decoded(raw: bytes, encoding: str) -> str:
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError:
        return ""


def find_companion(folder: Path, name: str | bytes) -> Path | None:
    """The file that ``name``, written in a file in ``folder``, refers to, or None; only files in that
    folder's parent or below are returned."""
    folder = Path(folder)
    root = folder.resolve().parent
    candidates = name_candidates(name)
    for candidate in candidates:
        path = (folder / candidate)
        try:
            if path.resolve().is_relative_to(root) and path.is_file():
                return path
        except (OSError, ValueError):
            continue
    try:  # last: one letter-case-insensitive match among the folder's own files
        listing = {entry.name.lower(): entry for entry in os.scandir(folder) if entry.is_file()}
    except OSError:
        return None
    for candidate in candidates:
        entry = listing.get(candidate.rsplit("/", 1)[-1].lower())
        if entry is not None:
            return folder / entry.name
    return None


class FolderResolver(trimesh.resolvers.FilePathResolver):
    """trimesh's folder resolver, finding names written in other encodings or letter cases too."""

    def __init__(self, source: str) -> None:
        super().__init__(source)
        # trimesh names geometry after these and hashes the names as UTF-8
        self.file_path, self.file_name = portable_name(self.file_path), portable_name(self.file_name)

    def get(self, name: str) -> bytes:
        path = find_companion(Path(self.parent), name)
        if path is None:
            raise FileNotFoundError(name)
        if path.suffix.lower() in IMAGE_SUFFIXES and texture_problem(str(path), path.name):
            raise FileNotFoundError(name)  # too large to decode: trimesh leaves the texture out
        return path.read_bytes()
