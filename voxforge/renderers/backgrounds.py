"""Background photos (e.g. PASCAL VOC ``JPEGImages``) cropped and composited under rendered objects."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def list_background_images(directory: str | Path) -> list[Path]:
    """Every image file under ``directory`` (sorted, so the same seed picks the same photos)."""
    root = Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"--backgrounds {root}: not a directory")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise FileNotFoundError(f"--backgrounds {root}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found")
    return files


class BackgroundPool:
    """Random square crops of photos, or a plain colour when there are no photos.

    Decoded photos are cached (they are small and reused across thousands of views); a photo that
    cannot be decoded is dropped from the pool with a warning instead of failing objects.
    """

    def __init__(self, files: list[Path] | None = None, color: tuple[int, int, int] = (255, 255, 255), cache_size: int = 64):
        self.files = list(files or [])
        self.color = np.array(color, np.uint8)
        self._cache: dict[Path, np.ndarray] = {}
        self._cache_size = cache_size

    def _decode(self, path: Path) -> np.ndarray | None:
        if path in self._cache:
            return self._cache[path]
        try:
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB"))
        except (OSError, UnidentifiedImageError) as error:
            log.warning("background %s cannot be read (%s); dropping it", path, error)
            self.files.remove(path)
            return None
        if len(self._cache) >= self._cache_size:
            self._cache.pop(next(iter(self._cache)))
        self._cache[path] = pixels
        return pixels

    def sample(self, size: int, rng: np.random.Generator) -> np.ndarray:
        """One (size, size, 3) uint8 background."""
        while self.files:
            photo = self._decode(self.files[int(rng.integers(len(self.files)))])
            if photo is not None:
                return random_square_crop(photo, size, rng)
        return np.broadcast_to(self.color, (size, size, 3)).copy()


def random_square_crop(photo: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random square crop (side between ``size`` and the photo's short side), resized to ``size``."""
    height, width = photo.shape[:2]
    short = min(height, width)
    side = int(rng.integers(min(size, short), short + 1))
    top = int(rng.integers(0, height - side + 1))
    left = int(rng.integers(0, width - side + 1))
    crop = photo[top : top + side, left : left + side]
    if side != size:
        crop = np.asarray(Image.fromarray(crop).resize((size, size), Image.BILINEAR))
    return crop


def composite(color: np.ndarray, alpha: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Straight-alpha colour over a background: ``c * a + bg * (1 - a)`` per pixel."""
    a = alpha.astype(np.float32)[..., None] / 255.0
    out = color.astype(np.float32) * a + background.astype(np.float32) * (1.0 - a)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
