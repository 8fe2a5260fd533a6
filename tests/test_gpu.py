"""The CUDA paths: the 3D-R2N2 trainer with bf16 autocast, fp16 loss scaling and torch.compile, and the
point-cloud losses on the GPU against the CPU. Skipped without an NVIDIA GPU (CI has none)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU (CUDA)")]


def _tiny_data(count: int = 4, views: int = 3, size: int = 64):
    """Plain pictures of a dark square whose size differs per object, and the matching centred cubes."""
    images = np.full((count, views, size, size, 3), 240, np.uint8)
    voxels = np.zeros((count, 32, 32, 32), bool)
    for index in range(count):
        half = 4 + 3 * index
        images[index, :, size // 2 - half: size // 2 + half, size // 2 - half: size // 2 + half] = 40
        voxels[index, 16 - half // 2: 16 + half // 2, 16 - half // 2: 16 + half // 2, 16 - half // 2: 16 + half // 2] = 1
    return images, voxels


@pytest.mark.parametrize("amp", ["bf16", "fp16", "none"])
def test_training_on_cuda_moves_the_loss(tmp_path, amp):
    from voxforge.models.train import TrainConfig, array_batches, train

    images, voxels = _tiny_data()
    config = TrainConfig(arch="3d-gru-3", width=0.125, image_size=64, iterations=40, batch_size=4, views=(1, 3),
                         lr=3e-3, lr_steps=(1000,), device="cuda", log_every=10, amp=amp, batch_norm=True)
    result = train(config, array_batches(images, voxels, config), tmp_path, progress=False)
    losses = result["losses"]
    assert len(losses) == 40 and all(np.isfinite(losses))
    assert np.mean(losses[-10:]) < 0.7 * np.mean(losses[:10]), losses
    assert result["images_per_second"] > 0
    state = torch.load(tmp_path / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert all(value.device.type == "cpu" for value in state["model"].values())  # loadable anywhere


def test_compiled_cuda_training_matches_eager(tmp_path):
    from voxforge.models.train import TrainConfig, array_batches, train

    images, voxels = _tiny_data(count=2, views=2, size=32)
    losses = {}
    for compiled in (False, True):
        config = TrainConfig(arch="3d-gru-1", width=0.125, image_size=32, iterations=3, batch_size=2, views=(2, 2),
                             lr=1e-3, device="cuda", log_every=1, compile=compiled)
        losses[compiled] = train(config, array_batches(images, voxels, config), tmp_path / str(compiled),
                                 progress=False)["losses"]
    assert np.allclose(losses[True], losses[False], rtol=2e-2, atol=1e-4), losses  # TF32 and fused kernels


def test_point_cloud_losses_agree_between_cuda_and_cpu():
    from voxforge.models.pointcloud_losses import chamfer_distance, sinkhorn_emd

    generator = torch.Generator().manual_seed(0)
    a, b = torch.rand(3, 256, 3, generator=generator), torch.rand(3, 256, 3, generator=generator)
    for squared in (False, True):
        cpu = chamfer_distance(a, b, squared=squared)
        cuda = chamfer_distance(a.cuda(), b.cuda(), squared=squared).cpu()
        assert torch.allclose(cpu, cuda, rtol=1e-4, atol=1e-6)
    assert torch.allclose(sinkhorn_emd(a, b), sinkhorn_emd(a.cuda(), b.cuda()).cpu(), rtol=1e-3, atol=1e-5)
