"""The loader's fast paths agree with the slow, obvious ones: tar headers vs tarfile, PNG vs Pillow,
the fused view kernel vs step-by-step numpy."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest
from PIL import Image

from voxforge.loaders.augment import compose_view, reference_view
from voxforge.loaders.png import PNGError, decode_png
from voxforge.loaders.tar_stream import TarFormatError, group_samples, iter_tar_members


def _tar(members: dict[str, bytes], fmt=tarfile.PAX_FORMAT) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        directory = tarfile.TarInfo("a-folder")
        directory.type = tarfile.DIRTYPE
        tar.addfile(directory)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_tar_members_match_tarfile(fmt):
    rng = np.random.default_rng(0)
    long_prefix = "deep/" * 20 if fmt != tarfile.USTAR_FORMAT else "deep/"
    members = {f"{long_prefix}k{i}.{name}": rng.bytes(int(size))
               for i in range(3) for name, size in (("json", 10), ("rgb_00.png", 512), ("points.npy", 1500))}
    members["ünïcode-ß.json"] = b"{}"
    data = _tar(members, fmt)
    assert dict(iter_tar_members(io.BytesIO(data))) == members
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert [m.name for m in tar if m.isfile()] == list(members)
    samples = list(group_samples(iter_tar_members(io.BytesIO(data))))
    assert [key for key, _ in samples] == ["k0", "k1", "k2", "ünïcode-ß"]
    assert set(samples[1][1]) == {"json", "rgb_00.png", "points.npy"}


def test_corrupt_and_truncated_tars_are_clear_errors():
    data = bytearray(_tar({"k.json": b"x" * 700}))
    data[10] ^= 0xFF
    with pytest.raises(TarFormatError, match="checksum"):
        list(iter_tar_members(io.BytesIO(bytes(data))))
    whole = _tar({"k.json": b"x" * 700}, tarfile.USTAR_FORMAT)
    with pytest.raises(TarFormatError, match="truncated"):
        list(iter_tar_members(io.BytesIO(whole[:512 + 300])))


class _Trickle(io.RawIOBase):
    """A stream that returns at most 100 bytes per read, like a slow network response."""

    def __init__(self, data: bytes) -> None:
        self.data, self.position = data, 0

    def read(self, size=-1):
        size = 100 if size < 0 else min(size, 100)
        chunk = self.data[self.position:self.position + size]
        self.position += len(chunk)
        return chunk


def test_short_reads_from_a_network_stream_are_handled():
    members = {f"k{i}.rgb_00.png": bytes([i]) * 1000 for i in range(3)}
    assert dict(iter_tar_members(_Trickle(_tar(members)))) == members


@pytest.mark.parametrize("mode,channels", [("L", 1), ("LA", 2), ("RGB", 3), ("RGBA", 4)])
@pytest.mark.parametrize("level", [0, 1, 9])
def test_png_decoding_matches_pillow(mode, channels, level):
    rng = np.random.default_rng(level + channels)
    shape = (37, 53, channels) if channels > 1 else (37, 53)
    smooth = np.cumsum(rng.integers(0, 4, shape), axis=1).astype(np.uint8)  # gives every filter type a use
    for pixels in (smooth, rng.integers(0, 256, shape, dtype=np.uint8)):
        buffer = io.BytesIO()
        Image.fromarray(pixels, mode).save(buffer, format="PNG", compress_level=level)
        assert np.array_equal(decode_png(buffer.getvalue()), pixels)
        out = np.empty(shape, np.uint8)
        assert decode_png(buffer.getvalue(), out) is out and np.array_equal(out, pixels)


def test_other_pngs_go_to_pillow_and_bad_ones_fail_cleanly():
    palette = Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).convert("P")
    buffer = io.BytesIO()
    palette.save(buffer, format="PNG")
    assert decode_png(buffer.getvalue()).shape == (8, 8)
    good = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(good, format="PNG")
    data = bytearray(good.getvalue())
    data[45:50] = b"\0" * 5  # inside the compressed stream
    with pytest.raises(PNGError):
        decode_png(bytes(data))
    with pytest.raises(PNGError):
        decode_png(b"GIF89a")
    with pytest.raises(PNGError):
        decode_png(good.getvalue()[:20])


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("background", ["keep", "color", "photo"])
def test_fused_view_kernel_matches_numpy(flip, background):
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (31, 29, 3), dtype=np.uint8)
    alpha = rng.integers(0, 256, (31, 29), dtype=np.uint8)
    old = np.array([255, 250, 245], np.float32)
    color = np.array([230, 240, 250], np.float32)
    photo = rng.uniform(0, 255, (31, 29, 3)).astype(np.float32)
    order, scale, offset = np.array([2, 0, 1]), np.array([1.2, 0.8, 1.0], np.float32), np.array([30, -20, 5], np.float32)
    norm_scale, norm_offset = np.array([0.017, 0.018, 0.019], np.float32), np.array([-2.1, -2.0, -1.8], np.float32)
    out, mask = np.empty((3, 31, 29), np.float32), np.empty((31, 29), bool)
    compose_view(image, alpha, old, color, photo if background == "photo" else np.zeros((1, 1, 3), np.float32),
                 background == "photo", background != "keep", flip, order, scale, offset, norm_scale, norm_offset, out, mask)
    new = {"keep": None, "color": color, "photo": photo}[background]
    expected, expected_mask = reference_view(image, alpha, old, new, flip, order, scale, offset, norm_scale, norm_offset)
    assert np.abs(out - expected).max() < 1e-5 and np.array_equal(mask, expected_mask)
    assert out.min() >= norm_offset.min() - 1e-6  # clipping happened before normalization
