"""The model families ``pipeline train --arch`` knows, each as what the commands and Ray Train need to run it."""

from __future__ import annotations


def family_trainer(arch: str):
    """(configuration class, ``batches(data, config, loader_workers)``, ``train(config, batches, out, resume,
    progress)``) of the model family that trains ``arch``."""
    if arch == "reconstnet":
        from voxforge.models.reconstnet.train import ReconstNetConfig, reconstnet_batches, train_reconstnet

        return ReconstNetConfig, reconstnet_batches, train_reconstnet
    if arch == "softras":
        from voxforge.models.softras.train import SoftRasConfig, softras_batches, train_softras

        return SoftRasConfig, softras_batches, train_softras
    from voxforge.models.data import training_batches
    from voxforge.models.r2n2.train import TrainConfig, train

    def batches(data, config, workers):
        return training_batches(data, config.batch_size, config.views, workers, config.seed)

    return TrainConfig, batches, train
