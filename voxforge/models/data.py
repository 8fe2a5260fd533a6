"""Endless training batches from a voxforge dataset (sharded loader) or the 3D-R2N2 folder layout."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import torch

from voxforge.loaders.r2n2 import is_r2n2_layout
from voxforge.models.threads import worker_init

# Evaluation and prediction composite views over this plain colour (3D-R2N2's test-time background)
TEST_BACKGROUND = 240.0


def crop_views(images: np.ndarray, size: int, rng: np.random.Generator | None) -> np.ndarray:
    """Random (training) or centred crop to ``size`` (3D-R2N2 renders are 137, the network takes 127)."""
    extra = images.shape[1] - size
    if extra <= 0:
        return images
    top, left = (rng.integers(0, extra + 1, size=2) if rng is not None else (extra // 2, extra // 2))
    return images[:, top : top + size, left : left + size]


def rank_and_world() -> tuple[int, int]:
    """This process's rank among the training processes (torch.distributed, else RANK / WORLD_SIZE)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def r2n2_objects(root: str | Path, split: str | None = "train") -> list[tuple[Path, Path]]:
    """(rendering folder, binvox path) of the layout's objects in ``split`` (all when there are no split lists)."""
    from voxforge.loaders.r2n2 import RENDERING_DIR, VOXEL_DIR, _taxonomy

    root = Path(root)
    names = _taxonomy(root, None)
    found = []
    for rendering in sorted((root / RENDERING_DIR).glob("*/*/rendering")):
        synset, model_id = rendering.parent.parent.name, rendering.parent.name
        voxels = root / VOXEL_DIR / synset / model_id / "model.binvox"
        if voxels.is_file():
            found.append((rendering, voxels, names.get((synset, model_id), ("", ""))[1]))
    chosen = [(r, v) for r, v, s in found if split is None or s == split]
    return chosen or [(r, v) for r, v, _ in found]


class R2N2Views(torch.utils.data.Dataset):
    """3D-R2N2 objects read on demand: item ``(index, count, seed)`` -> ``count`` random views of object
    ``index`` over a random light background ([225, 255], the released training code's), randomly
    cropped from 137 to ``image_size``, and its voxels. Only the chosen PNGs are decoded."""

    def __init__(self, objects: list[tuple[Path, Path]], image_size: int = 127) -> None:
        self.objects, self.image_size = objects, image_size

    def __len__(self) -> int:
        return len(self.objects)

    def __getitem__(self, key: tuple[int, int, int]) -> dict:
        from PIL import Image

        from voxforge.renderers.backgrounds import composite
        from voxforge.voxelize.binvox import read_binvox

        index, count, seed = key
        rng = np.random.default_rng(seed)
        rendering, voxel_path = self.objects[index]
        renders = sorted(rendering.glob("[0-9][0-9].png"))
        views = []
        for pick in rng.choice(len(renders), size=count, replace=count > len(renders)):
            with Image.open(renders[pick]) as opened:
                rgba = np.asarray(opened.convert("RGBA"))
            background = np.broadcast_to(rng.uniform(225, 255, size=3).astype(np.float32), rgba.shape[:2] + (3,))
            views.append(composite(rgba[..., :3], rgba[..., 3], background))
        images = crop_views(np.stack(views), self.image_size, rng)
        return {"images": torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0),
                "voxels": torch.from_numpy(read_binvox(voxel_path).occupancy)}


class ViewCountBatches(torch.utils.data.Sampler):
    """One epoch of batches over this rank's objects; every batch one random view count (keys for R2N2Views)."""

    def __init__(self, objects: int, batch_size: int, views: tuple[int, int], seed: int, rank: int, world: int) -> None:
        self.mine = np.arange(objects)[rank::world] if objects >= world else np.arange(objects)
        self.batch_size, self.views, self.seed, self.rank = batch_size, views, seed, rank
        self.epoch = 0
        self.skip = 0  # batches of this epoch to draw but not give out (a resumed run's data position)

    def __len__(self) -> int:
        return max(1, len(self.mine) // self.batch_size)

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.rank, self.epoch])
        order = rng.permutation(self.mine)
        for start in range(len(self)):
            chosen = order[start * self.batch_size:(start + 1) * self.batch_size]
            count = int(rng.integers(self.views[0], self.views[1] + 1))
            keys = [(int(i), count, int(rng.integers(2**62))) for i in chosen]
            if start >= self.skip:
                yield keys


class EpochBatches:
    """Endless training batches, epoch after epoch, that know where they are.

    ``position`` is (epoch, batches of that epoch given out so far). A resumed run ``seek``s there, so the
    epochs before are never read again: every epoch's order and random draws depend only on the seed and
    the epoch number. ``epoch_batches(epoch, skip)`` returns one epoch's batches after the first ``skip``.
    ``workers``: the DataLoader worker processes behind the batches (the trainers leave each a core:
    :mod:`voxforge.models.threads`).
    """

    def __init__(self, epoch_batches: Callable[[int, int], Iterable[dict]], workers: int = 0) -> None:
        self._epoch_batches = epoch_batches
        self.workers = workers
        self.position = (0, 0)

    def seek(self, position: tuple[int, int] | list[int]) -> None:
        self.position = (int(position[0]), int(position[1]))

    def __iter__(self) -> Iterator[dict]:
        epoch, given = self.position
        while True:
            for batch in self._epoch_batches(epoch, given):
                given += 1
                self.position = (epoch, given)
                yield batch
            epoch, given = epoch + 1, 0
            self.position = (epoch, given)


def r2n2_batches(root: str | Path, batch_size: int, views: tuple[int, int], image_size: int = 127,
                 seed: int = 0, split: str | None = "train", workers: int = 2) -> EpochBatches:
    """Endless batches from the 3D-R2N2 layout through a DataLoader (``workers`` decoding processes).

    Each training rank takes every world_size-th object (its own share) and its own random stream. Seeking
    inside an epoch draws the skipped batches' keys only: nothing is read for them.
    """
    rank, world = rank_and_world()
    dataset = R2N2Views(r2n2_objects(root, split), image_size)
    sampler = ViewCountBatches(len(dataset), batch_size, views, seed, rank, world)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=workers,
                                         pin_memory=torch.cuda.is_available(), worker_init_fn=worker_init)

    def epoch_batches(epoch: int, skip: int) -> Iterator[dict]:
        sampler.epoch, sampler.skip = epoch, skip
        return iter(loader)

    return EpochBatches(epoch_batches, workers)


def shard_batches(root: str | Path, batch_size: int, views: tuple[int, int], workers: int = 2, seed: int = 0,
                  split: str = "train") -> EpochBatches:
    """Endless batches from voxforge shards through a DataLoader, re-seeded every epoch.

    Shards are divided among training ranks (then DataLoader workers); each rank draws its own views.
    Seeking inside an epoch reads and drops the skipped batches (at most one epoch's worth).
    """
    from voxforge.loaders.torch import ShardDataset, ViewBatcher, plain_background_of

    rank, _ = rank_and_world()
    # one shard order for all ranks (so their shares are disjoint), a view stream per rank
    dataset = ShardDataset(root, split=split, shuffle_buffer=4 * batch_size, seed=seed, max_views=views[1])
    old = plain_background_of(root)
    collate = ViewBatcher(views=views, background="random_color" if old else "keep", old_background=old,
                          seed=seed + 7919 * rank)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate,
                                         pin_memory=torch.cuda.is_available(), drop_last=False,
                                         persistent_workers=False, worker_init_fn=worker_init)

    def epoch_batches(epoch: int, skip: int) -> Iterator[dict]:
        dataset.set_epoch(epoch)
        collate.set_epoch(epoch)
        return itertools.islice(loader, skip, None)

    return EpochBatches(epoch_batches, workers)


def training_batches(root: str | Path, batch_size: int, views: tuple[int, int], workers: int = 2,
                     seed: int = 0, image_size: int = 127) -> EpochBatches:
    if is_r2n2_layout(root):
        return r2n2_batches(root, batch_size, views, image_size, seed, workers=workers)
    return shard_batches(root, batch_size, views, workers, seed)
