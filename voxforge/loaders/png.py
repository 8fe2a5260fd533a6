"""PNG decoding for the loader's hot path: zlib + a compiled un-filter, PIL for anything unusual.

Why: a training batch decodes a few small (127x127) PNGs per object, and Pillow's per-image overhead
(plugin dispatch, decoder objects, ``tobytes`` copy into numpy) costs as much as the pixels: ~105 us
per RGB view and ~45 us per mask here, against ~65 us and ~21 us for inflating with :mod:`zlib` and
reversing PNG's row filters in a numba loop, straight into the output array. The fast path takes the
PNGs voxforge writes (8-bit grey, grey+alpha, RGB, RGBA; not interlaced); every other PNG goes to
Pillow. Lengths are checked before the compiled loop runs, so a corrupt file is an error, never an
out-of-bounds write; zlib verifies its own checksum.
"""

from __future__ import annotations

import io
import struct
import zlib

import numba
import numpy as np
from PIL import Image

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {0: 1, 4: 2, 2: 3, 6: 4}  # PNG colour type -> samples per pixel


class PNGError(ValueError):
    """The bytes are not a decodable PNG."""


@numba.njit(cache=True, nogil=True)
def _unfilter(raw, height, stride, bpp, out):
    """Reverse PNG's per-row filters (None, Sub, Up, Average, Paeth) into ``out`` (height, stride)."""
    previous = np.zeros(stride, np.uint8)
    for y in range(height):
        base = y * (stride + 1) + 1
        kind = raw[base - 1]
        row = out[y]
        if kind == 0:
            for x in range(stride):
                row[x] = raw[base + x]
        elif kind == 1:
            for x in range(stride):
                left = row[x - bpp] if x >= bpp else 0
                row[x] = (raw[base + x] + left) & 255
        elif kind == 2:
            for x in range(stride):
                row[x] = (raw[base + x] + previous[x]) & 255
        elif kind == 3:
            for x in range(stride):
                left = np.int32(row[x - bpp]) if x >= bpp else 0
                row[x] = (raw[base + x] + ((left + previous[x]) >> 1)) & 255
        elif kind == 4:
            for x in range(bpp):
                row[x] = (raw[base + x] + previous[x]) & 255
            for x in range(bpp, stride):
                a, b, c = np.int32(row[x - bpp]), np.int32(previous[x]), np.int32(previous[x - bpp])
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                predicted = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                row[x] = (raw[base + x] + predicted) & 255
        else:
            return False
        previous = row
    return True


def _pil(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image)


def decode_png(data: bytes, out: np.ndarray | None = None) -> np.ndarray:
    """(H, W) or (H, W, C) uint8 pixels; written into ``out`` when given (same shape, uint8)."""
    if not data.startswith(_SIGNATURE):
        raise PNGError("not a PNG (bad signature)")
    position, header, compressed = 8, None, []
    try:
        while position < len(data):
            length, kind = struct.unpack_from(">I4s", data, position)
            if kind == b"IHDR":
                header = struct.unpack_from(">IIBBBBB", data, position + 8)
            elif kind == b"IDAT":
                compressed.append(data[position + 8 : position + 8 + length])
            elif kind == b"IEND":
                break
            position += 12 + length
    except struct.error as error:
        raise PNGError(f"truncated PNG ({error})") from None
    if header is None:
        raise PNGError("PNG without IHDR")
    width, height, depth, color_type, _, _, interlace = header
    channels = _CHANNELS.get(color_type)
    if depth != 8 or channels is None or interlace:
        pixels = _pil(data)  # palette, 16-bit, interlaced...: Pillow's job
        if out is not None:
            out[...] = pixels
            return out
        return pixels
    try:
        raw = np.frombuffer(zlib.decompress(b"".join(compressed)), np.uint8)
    except zlib.error as error:
        raise PNGError(f"corrupt PNG data ({error})") from None
    stride = width * channels
    if len(raw) != height * (stride + 1):
        raise PNGError(f"PNG data holds {len(raw)} bytes, {height * (stride + 1)} expected")
    shape = (height, width, channels) if channels > 1 else (height, width)
    if out is None:
        out = np.empty(shape, np.uint8)
    elif out.shape != shape or out.dtype != np.uint8 or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous uint8 array of shape {shape}")
    if not _unfilter(raw, height, stride, channels, out.reshape(height, stride)):
        raise PNGError("PNG row with an unknown filter type")
    return out


def warm_up() -> None:
    """Compile (or load from numba's cache) the un-filter before DataLoader workers fork."""
    _unfilter(np.zeros(2, np.uint8), 1, 1, 1, np.empty((1, 1), np.uint8))
