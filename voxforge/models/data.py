"""Endless training batches from a voxforge dataset (sharded loader) or the 3D-R2N2 folder layout."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from voxforge.loaders.r2n2 import is_r2n2_layout, iter_r2n2
from voxforge.loaders.torch import recomposite


def crop_views(images: np.ndarray, size: int, rng: np.random.Generator | None) -> np.ndarray:
    """Random (training) or centred crop to ``size`` (3D-R2N2 renders are 137, the network takes 127)."""
    extra = images.shape[1] - size
    if extra <= 0:
        return images
    top, left = (rng.integers(0, extra + 1, size=2) if rng is not None else (extra // 2, extra // 2))
    return images[:, top : top + size, left : left + size]


def r2n2_batches(root: str | Path, batch_size: int, views: tuple[int, int], image_size: int = 127,
                 seed: int = 0, split: str | None = "train") -> Iterator[dict]:
    """Endless batches from the 3D-R2N2 layout, one random view count per batch, random crops."""
    rng = np.random.default_rng(seed)
    epoch = 0
    while True:
        samples = list(iter_r2n2(root, split=split)) or list(iter_r2n2(root))  # no split lists: use all
        order = rng.permutation(len(samples))
        for start in range(0, len(order) - batch_size + 1 if len(order) >= batch_size else 1, batch_size):
            chosen = [samples[i] for i in order[start : start + batch_size]]
            count = int(rng.integers(views[0], views[1] + 1))
            images, voxels = [], []
            for sample in chosen:
                picks = rng.choice(len(sample["images"]), size=count, replace=False)
                background = rng.uniform(225, 255, size=3)  # 3D-R2N2's training background
                # stored images are over white: swap in the random colour
                composited = recomposite(sample["images"][picks], sample["alphas"][picks], 255.0, background)
                images.append(crop_views(composited, image_size, rng))
                voxels.append(sample["voxels"])
            yield {"images": torch.from_numpy(np.stack(images)).permute(0, 1, 4, 2, 3).float() / 255.0,
                   "voxels": torch.from_numpy(np.stack(voxels))}
        epoch += 1


def shard_batches(root: str | Path, batch_size: int, views: tuple[int, int], workers: int = 2, seed: int = 0,
                  split: str = "train") -> Iterator[dict]:
    """Endless batches from voxforge shards through a DataLoader, re-seeded every epoch."""
    from voxforge.loaders.torch import ShardDataset, ViewBatcher, plain_background_of

    dataset = ShardDataset(root, split=split, shuffle_buffer=4 * batch_size, seed=seed, max_views=views[1])
    old = plain_background_of(root)
    collate = ViewBatcher(views=views, background="random_color" if old else "keep", old_background=old, seed=seed)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate,
                                         pin_memory=torch.cuda.is_available(), drop_last=False,
                                         persistent_workers=False)
    epoch = 0
    while True:
        dataset.set_epoch(epoch)
        yield from loader
        epoch += 1


def training_batches(root: str | Path, batch_size: int, views: tuple[int, int], workers: int = 2,
                     seed: int = 0, image_size: int = 127) -> Iterator[dict]:
    if is_r2n2_layout(root):
        return r2n2_batches(root, batch_size, views, image_size, seed)
    return shard_batches(root, batch_size, views, workers, seed)
