"""Reading the uncompressed OpenEXR files Blender writes for each view (no OpenEXR library needed).

Blender saves a multi-layer EXR as a multi-part file: one part per pass (``ViewLayer.Combined`` with
R, G, B, A and ``ViewLayer.Depth`` with Z). The renderer asks for ``NONE`` compression and 32-bit
floats, so every chunk is one scanline of plain little-endian values, channel after channel in name
order. Reading the floats ourselves keeps the premultiplied linear colour, the exact coverage and the
depth of the same frame, which an 8-bit PNG would not.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

MAGIC = b"\x76\x2f\x31\x01"
MULTIPART_FLAG = 0x1000
NO_COMPRESSION = 0
PIXEL_TYPES = {0: np.dtype("<u4"), 1: np.dtype("<f2"), 2: np.dtype("<f4")}


class ExrError(ValueError):
    """The file is not an EXR this reader handles (compressed, tiled, truncated)."""


def _read_string(data: bytes, pos: int) -> tuple[str, int]:
    end = data.index(b"\0", pos)
    return data[pos:end].decode("latin-1"), end + 1


def _read_headers(data: bytes, pos: int, multipart: bool) -> tuple[list[dict[str, tuple[str, bytes]]], int]:
    """Attribute dictionaries of every part (one for a single-part file) and the offset after them."""
    parts = []
    while True:
        header: dict[str, tuple[str, bytes]] = {}
        while data[pos] != 0:
            name, pos = _read_string(data, pos)
            kind, pos = _read_string(data, pos)
            (size,) = struct.unpack_from("<i", data, pos)
            pos += 4
            header[name] = (kind, data[pos:pos + size])
            pos += size
        pos += 1
        if not header:  # an empty header ends the list of a multi-part file
            break
        parts.append(header)
        if not multipart:
            break
    return parts, pos


def _channels(raw: bytes) -> list[tuple[str, np.dtype]]:
    channels, pos = [], 0
    while raw[pos] != 0:
        name, pos = _read_string(raw, pos)
        (pixel_type,) = struct.unpack_from("<i", raw, pos)
        pos += 16  # pixel type, pLinear + reserved, x and y sampling
        if pixel_type not in PIXEL_TYPES:
            raise ExrError(f"channel {name!r} has unknown pixel type {pixel_type}")
        channels.append((name, PIXEL_TYPES[pixel_type]))
    return channels


def read_exr(path: str | Path) -> dict[str, np.ndarray]:
    """Every channel of an uncompressed scanline EXR as float32 (H, W) arrays, row 0 at the top."""
    data = Path(path).read_bytes()
    if data[:4] != MAGIC:
        raise ExrError(f"{path}: not an OpenEXR file")
    (flags,) = struct.unpack_from("<I", data, 4)
    multipart = bool(flags & MULTIPART_FLAG)
    if flags & 0x200:
        raise ExrError(f"{path}: tiled EXR files are not supported")
    parts, pos = _read_headers(data, 8, multipart)
    layouts = []
    for header in parts:
        if header["compression"][1][0] != NO_COMPRESSION:
            raise ExrError(f"{path}: compressed EXR (codec {header['compression'][1][0]}); save with codec NONE")
        x0, y0, x1, y1 = struct.unpack("<4i", header["dataWindow"][1])
        height = y1 - y0 + 1
        chunks = struct.unpack("<i", header["chunkCount"][1])[0] if "chunkCount" in header else height
        offsets = np.frombuffer(data, "<u8", chunks, pos).astype(np.int64)
        pos += 8 * chunks
        layouts.append((_channels(header["channels"][1]), x1 - x0 + 1, height, y0, offsets))
    result: dict[str, np.ndarray] = {}
    for channels, width, height, y0, offsets in layouts:
        planes = {name: np.zeros((height, width), np.float32) for name, _ in channels}
        for offset in offsets:
            pos = int(offset) + (4 if multipart else 0)  # a multi-part chunk starts with its part number
            y, size = struct.unpack_from("<ii", data, pos)
            pos += 8
            if pos + size > len(data):
                raise ExrError(f"{path}: truncated scanline {y}")
            for name, dtype in channels:
                planes[name][y - y0] = np.frombuffer(data, dtype, width, pos)
                pos += width * dtype.itemsize
        result.update(planes)
    return result
