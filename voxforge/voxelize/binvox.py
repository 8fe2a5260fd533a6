"""The classic binvox format (Patrick Min's binvox; ShapeNet and 3D-R2N2 ship their voxels in it).

Layout: a text header (``#binvox 1``, ``dim``, ``translate``, ``scale``, ``data``) followed by
run-length pairs of bytes (value, count <= 255) over the voxels in x-z-y order (y varies fastest).
A voxel index ``i`` maps to model coordinates ``(i + 0.5) / dim * scale + translate``.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from voxforge.voxelize.grid import VoxelGrid


class BinvoxError(ValueError):
    """The bytes are not a readable binvox file."""


def encode_binvox(grid: VoxelGrid) -> bytes:
    """binvox bytes for ``grid`` (translate = grid origin, scale = cube edge)."""
    occupancy = np.asarray(grid.occupancy, bool)
    dim = occupancy.shape
    if len(set(dim)) != 1:
        raise BinvoxError(f"binvox grids are cubes, got shape {dim}")
    flat = np.ascontiguousarray(occupancy.transpose(0, 2, 1)).reshape(-1).view(np.uint8)
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    starts = np.concatenate([[0], change])
    lengths = np.diff(np.concatenate([starts, [flat.size]]))
    values = flat[starts]
    full, rest = np.divmod(lengths, 255)
    runs = full + (rest > 0)
    counts = np.full(runs.sum(), 255, np.uint8)
    last = np.cumsum(runs) - 1
    counts[last[rest > 0]] = rest[rest > 0]
    body = np.empty(2 * counts.size, np.uint8)
    body[0::2] = np.repeat(values, runs)
    body[1::2] = counts
    origin = np.asarray(grid.origin, float)
    scale = grid.voxel_size * dim[0]
    header = (
        f"#binvox 1\ndim {dim[0]} {dim[1]} {dim[2]}\n"
        f"translate {origin[0]:.9g} {origin[1]:.9g} {origin[2]:.9g}\nscale {scale:.9g}\ndata\n"
    )
    return header.encode("ascii") + body.tobytes()


def decode_binvox(data: bytes) -> VoxelGrid:
    """Parse binvox bytes; header lines may come in any order and ``#`` comments are skipped."""
    stream = io.BytesIO(data)
    first = stream.readline().strip()
    if not first.startswith(b"#binvox"):
        raise BinvoxError("not a binvox file (missing '#binvox' line)")
    dim, translate, scale = None, np.zeros(3), 1.0
    while True:
        line = stream.readline()
        if not line:
            raise BinvoxError("header ended without a 'data' line")
        words = line.strip().split()
        if not words or words[0].startswith(b"#"):
            continue
        key = words[0].lower()
        try:
            if key == b"data":
                break
            if key == b"dim":
                dim = tuple(int(w) for w in words[1:4])
            elif key == b"translate":
                translate = np.array([float(w) for w in words[1:4]])
            elif key == b"scale":
                scale = float(words[1])
        except (ValueError, IndexError) as error:
            raise BinvoxError(f"bad header line {line!r}") from error
    if dim is None or len(dim) != 3 or min(dim) <= 0:
        raise BinvoxError("missing or bad 'dim' line")
    body = np.frombuffer(stream.read(), np.uint8)
    if body.size % 2:
        body = body[:-1]  # some writers leave a trailing newline
    values, counts = body[0::2], body[1::2]
    total = int(counts.sum(dtype=np.int64))
    expected = dim[0] * dim[1] * dim[2]
    if total < expected:
        raise BinvoxError(f"truncated voxel data: {total} of {expected} voxels")
    flat = np.repeat(values.astype(bool), counts)[:expected]
    occupancy = flat.reshape(dim[0], dim[2], dim[1]).transpose(0, 2, 1)
    return VoxelGrid(occupancy=np.ascontiguousarray(occupancy), origin=translate, voxel_size=scale / dim[0])


def write_binvox(grid: VoxelGrid, path: str | Path) -> None:
    Path(path).write_bytes(encode_binvox(grid))


def read_binvox(path: str | Path) -> VoxelGrid:
    return decode_binvox(Path(path).read_bytes())
