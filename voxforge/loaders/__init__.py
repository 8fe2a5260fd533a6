"""Reading voxforge datasets: shards, the format contract, sample dicts."""

from voxforge.loaders.dataset import VoxforgeDataset, decode_sample, open_dataset

__all__ = ["VoxforgeDataset", "decode_sample", "open_dataset"]
