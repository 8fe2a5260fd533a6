"""The model families ``pipeline train --arch`` knows, each as what the commands and Ray Train need to run it."""

from __future__ import annotations

import importlib

# arch -> the module with its train_command, eval_command and predict_command; every other arch is a
# 3D-R2N2 variant (voxforge.models.r2n2.network.VARIANTS)
COMMANDS = {"reconstnet": "voxforge.models.reconstnet.commands", "softras": "voxforge.models.softras.commands"}
R2N2_COMMANDS = "voxforge.models.r2n2.commands"


def family_commands(arch: str):
    """The commands module (``train_command``, ``eval_command``, ``predict_command``, each taking the parsed
    arguments and returning an exit status) of the model family that trains ``arch``."""
    return importlib.import_module(COMMANDS.get(arch, R2N2_COMMANDS))


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
