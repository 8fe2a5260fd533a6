"""PyTorch streaming over voxforge shards: rank/worker splitting, shuffling, 3D-R2N2 style batches.

``ShardDataset`` yields decoded sample dicts (numpy) from local shards or remote ones (``s3://``,
``gs://``, ``hf://``, http(s), ...; streamed: :mod:`voxforge.loaders.remote`). Shards are divided among
``world_size x num_workers`` readers, so each sample is read exactly once per epoch; with fewer shards
than readers, samples are divided instead (``pipeline run --min-shards`` writes enough shards to avoid
reading them several times). ``ViewBatcher`` is the collate function: it draws one view
count per batch (3D-R2N2 trains on 1..5 views), a random subset of views per object, re-composites
backgrounds from the stored alpha, augments, and returns tensors.

Speed: tar members are read by a header loop (:mod:`voxforge.loaders.tar_stream`), PNGs decoded by
zlib + a compiled un-filter (:mod:`voxforge.loaders.png`), and each view's re-compositing, flip,
colour changes, normalization and CHW copy happen in one compiled pass (:mod:`voxforge.loaders.augment`);
``bench/bench_loader.py`` measures it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
try:
    import torch
except ImportError as error:  # the core install builds datasets without PyTorch
    raise ImportError(f"voxforge.loaders.torch needs PyTorch ({error}); install the train extra, from the "
                      "voxforge folder: python -m pip install -e '.[train]'") from error
from torch.utils.data import IterableDataset, get_worker_info

from voxforge.loaders import format as fmt
from voxforge.loaders.augment import compose_view
from voxforge.loaders.augment import warm_up as augment_warm_up
from voxforge.loaders.dataset import (  # noqa: F401 (plain_background_of, resolve_shards re-exported)
    decode_sample, iter_any_shard, plain_background_of, resolve_shards,
)
from voxforge.loaders.png import warm_up as png_warm_up

log = logging.getLogger(__name__)

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
# ImageNet RGB covariance eigen-decomposition used by AlexNet-style "PCA lighting" noise
PCA_EIGENVALUES = np.array([0.2175, 0.0188, 0.0045], np.float32)
PCA_EIGENVECTORS = np.array(
    [[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]], np.float32
)


def _rank_and_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


class ShardDataset(IterableDataset):
    """Decoded samples from shards; each sample read by exactly one (rank, worker) reader per epoch.

    Shards are divided among the ``world_size x num_workers`` readers. When there are fewer shards than
    readers, every reader streams every shard and keeps every ``readers``-th sample instead, so small
    datasets still give each reader its share (at the price of reading the shards several times). A
    reader that would get no sample at all (fewer samples than readers) stops with a clear error
    rather than leaving its rank waiting forever.
    """

    def __init__(self, source, split: str | None = None, shuffle_buffer: int = 0, seed: int = 0,
                 max_views: int | None = None) -> None:
        """``max_views``: decode only a random subset of this many views per sample (all when None)."""
        super().__init__()
        self.max_views = max_views
        self.shards = resolve_shards(source, split)
        if not self.shards:
            raise FileNotFoundError(f"{source}: no shards{f' in split {split}' if split else ''}")
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self.epoch = 0
        png_warm_up()

    def set_epoch(self, epoch: int) -> None:
        """Call before each epoch: shard order and the shuffle buffer are seeded by (seed, epoch)."""
        self.epoch = epoch

    @staticmethod
    def reader() -> tuple[int, int]:
        """(this reader's number, number of readers) over ranks x DataLoader workers."""
        rank, world = _rank_and_world()
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        return rank * workers + worker, world * workers

    def my_shards(self) -> list[Path | str]:
        """The shards this reader streams this epoch (all of them when there are fewer than readers)."""
        reader, readers = self.reader()
        order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.shards)) \
            if self.shuffle_buffer else np.arange(len(self.shards))
        if len(self.shards) < readers:
            return [self.shards[i] for i in order]
        return [self.shards[i] for i in order[reader::readers]]

    def _my_samples(self) -> Iterator[dict[str, bytes]]:
        reader, readers = self.reader()
        by_sample = len(self.shards) < readers
        position = 0
        for shard in self.my_shards():
            for _, members in iter_any_shard(shard):
                if not by_sample or position % readers == reader:
                    yield members
                position += 1
        if by_sample and position <= reader:
            raise ValueError(f"{position} samples for {readers} readers (ranks x DataLoader workers): reader "
                             f"{reader} gets none. Use fewer ranks or DataLoader workers, or a larger dataset")

    def __iter__(self) -> Iterator[dict]:
        rank, _ = _rank_and_world()
        info = get_worker_info()
        rng = np.random.default_rng([self.seed, self.epoch, rank, info.id if info else 0])
        buffer: list[dict] = []
        for members in self._my_samples():
            meta = json.loads(members[fmt.META])
            views = None
            if self.max_views is not None:
                available = meta["views"]
                views = sorted(rng.choice(available, size=min(self.max_views, available), replace=False))
            sample = decode_sample(members, views, meta)
            if self.shuffle_buffer <= 1:
                yield sample
                continue
            buffer.append(sample)
            if len(buffer) >= self.shuffle_buffer:
                yield buffer.pop(int(rng.integers(len(buffer))))
        rng.shuffle(buffer)
        yield from buffer


def recomposite(image: np.ndarray, alpha: np.ndarray, old_background, new_background) -> np.ndarray:
    """Swap the background under a rendered view using its stored alpha (exact for plain old colours).

    ``new_background``: an (H, W, 3) image or one RGB colour. Returns float32 in 0..255.
    """
    uncovered = 1.0 - alpha.astype(np.float32)[..., None] * np.float32(1 / 255)
    change = np.asarray(new_background, np.float32) - np.asarray(old_background, np.float32)
    return image.astype(np.float32) + change * uncovered


MAIN_PROCESS = 2**32 - 1  # the worker number in ViewBatcher's seed when batches are made without workers


class ViewBatcher:
    """Collate function turning sample dicts into a 3D-R2N2 training batch.

    One view count per batch, drawn from ``views = (min, max)``; each object gets that many distinct
    random views. Backgrounds: ``"keep"`` (as rendered), ``"random_color"`` (3D-R2N2's released code:
    a random grey-ish colour in [225, 255] per channel when training), ``"fixed_color"`` (240), or a
    :class:`voxforge.renderers.backgrounds.BackgroundPool` of photos (PASCAL VOC crops, the paper).
    ``old_background`` is the dataset's plain colour (see :func:`plain_background_of`).
    """

    def __init__(self, views: tuple[int, int] = (1, 5), background="keep", old_background=(255, 255, 255),
                 flip: bool = False, color_jitter: float = 0.0, pca_noise: float = 0.0, permute_rgb: bool = False,
                 normalize: bool = False, seed: int = 0) -> None:
        if background != "keep" and old_background is None:
            raise ValueError("re-compositing needs a dataset rendered over a plain colour (no --backgrounds)")
        self.views = views
        self.background = background
        self.old_background = old_background
        self.flip, self.color_jitter, self.pca_noise = flip, color_jitter, pca_noise
        self.permute_rgb, self.normalize = permute_rgb, normalize
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        # output = clipped value in 0..255 times norm_scale plus norm_offset, per channel
        self._norm_scale = (1 / (255 * IMAGENET_STD) if normalize else np.full(3, 1 / 255)).astype(np.float32)
        self._norm_offset = (-IMAGENET_MEAN / IMAGENET_STD if normalize else np.zeros(3)).astype(np.float32)
        augment_warm_up()
        self.epoch = 0
        self._stream: tuple[int | None, int] | None = None  # (worker, epoch) the random stream was seeded for

    def set_epoch(self, epoch: int) -> None:
        """Draw other views and augmentations in each epoch, the same ones for the same (seed, epoch)."""
        self.epoch = epoch

    def _reseed_per_worker(self) -> None:
        """DataLoader workers get copies of this object: give each its own random stream, per epoch, so
        that an epoch's draws depend only on (seed, epoch, worker) and a resumed run can start there."""
        info = get_worker_info()
        worker = info.id if info else None
        if (worker, self.epoch) != self._stream:
            self._stream = (worker, self.epoch)
            key = [self.seed, MAIN_PROCESS if worker is None else worker] + ([self.epoch] if self.epoch else [])
            # epoch 0 without workers keeps the stream the batcher was made with
            self.rng = np.random.default_rng(self.seed if key == [self.seed, MAIN_PROCESS] else key)

    def _new_background(self, size: int) -> tuple[np.ndarray, np.ndarray | None]:
        """(colour, photo or None) to put behind one view."""
        if self.background == "random_color":
            return self.rng.uniform(225, 255, size=3).astype(np.float32), None
        if self.background == "fixed_color":
            return np.full(3, 240.0, np.float32), None
        return _NO_COLOR, np.ascontiguousarray(self.background.sample(size, self.rng), dtype=np.float32)

    def _colour_transform(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-channel (order, scale, offset) of one view: RGB permutation, colour jitter, PCA lighting."""
        scale = np.ones(3, np.float32)
        offset = np.zeros(3, np.float32)
        order = np.arange(3)
        if self.color_jitter:
            scale = self.rng.uniform(1 - self.color_jitter, 1 + self.color_jitter, size=3).astype(np.float32)
        if self.pca_noise:
            weights = self.rng.normal(0, self.pca_noise, size=3).astype(np.float32)
            offset = (255.0 * PCA_EIGENVECTORS @ (weights * PCA_EIGENVALUES)).astype(np.float32)
        if self.permute_rgb:
            order = self.rng.permutation(3)
        return order, scale, offset

    def __call__(self, samples: list[dict]) -> dict:
        self._reseed_per_worker()
        count = int(self.rng.integers(self.views[0], self.views[1] + 1))
        batch = len(samples)
        height, width = samples[0]["images"].shape[1:3]
        images = np.empty((batch, count, 3, height, width), np.float32)
        masks = np.empty((batch, count, height, width), bool)
        intrinsics = np.empty((batch, count, 3, 3), np.float32)
        poses = np.empty((batch, count, 3, 4), np.float32)
        old = np.asarray(self.old_background if self.old_background is not None else (0, 0, 0), np.float32)
        recomposite_views = self.background != "keep"
        for b, sample in enumerate(samples):
            chosen = self.rng.choice(len(sample["images"]), size=count, replace=count > len(sample["images"]))
            for index, view in enumerate(chosen):
                K, pose = sample["K"][view], sample["world_to_camera"][view]
                color, photo = self._new_background(height) if recomposite_views else (_NO_COLOR, None)
                flip = bool(self.flip and self.rng.random() < 0.5)
                if flip:
                    K, pose = flip_camera(K, pose, width)
                order, scale, offset = self._colour_transform()
                compose_view(sample["images"][view], sample["alphas"][view], old, color,
                             _NO_PHOTO if photo is None else photo, photo is not None, recomposite_views, flip,
                             order, scale, offset, self._norm_scale, self._norm_offset, images[b, index],
                             masks[b, index])
                intrinsics[b, index], poses[b, index] = K, pose
        return {
            "images": torch.from_numpy(images),
            "masks": torch.from_numpy(masks),
            "K": torch.from_numpy(intrinsics),
            "world_to_camera": torch.from_numpy(poses),
            "voxels": torch.from_numpy(np.stack([s["voxels"] for s in samples])),
            "points": torch.from_numpy(np.stack([s["points"] for s in samples])),
            "id": [s["id"] for s in samples],
            "category": [s["category"] for s in samples],
        }


_NO_COLOR = np.zeros(3, np.float32)
_NO_PHOTO = np.zeros((1, 1, 3), np.float32)


def flip_camera(K: np.ndarray, world_to_camera: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The camera of a horizontally mirrored image: camera x negated, principal point mirrored.

    The new ``world_to_camera`` has determinant -1 (a mirror); projecting with it lands every point
    on the flipped image exactly where its mirror image is.
    """
    mirror = np.diag([-1.0, 1.0, 1.0])
    K = K.copy()
    K[0, 2] = (width - 1) - K[0, 2]
    return K, mirror @ world_to_camera
