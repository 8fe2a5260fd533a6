"""3D-R2N2 variants: shapes for 1..5 views, losses, IoU, and learning on real 3D-R2N2 objects."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from voxforge.models.r2n2 import VARIANTS, R2N2, voxel_iou  # noqa: E402


@pytest.mark.parametrize("arch", sorted(VARIANTS))
def test_every_variant_maps_1_to_5_views_to_a_32_cube(arch):
    torch.manual_seed(0)
    model = R2N2(arch, width=0.125)
    voxels = torch.rand(2, 32, 32, 32) > 0.7
    for views in range(1, 6):
        logits = model(torch.rand(2, views, 3, 127, 127))
        channels = 1 if arch == "gru-vector" else 2
        assert logits.shape == (2, channels, 32, 32, 32)
        probabilities = model.occupancy(logits)
        assert probabilities.shape == (2, 32, 32, 32) and ((probabilities >= 0) & (probabilities <= 1)).all()
        loss = model.loss(logits, voxels)
        assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_paper_sized_model_has_the_papers_shape():
    model = R2N2("res3d-gru-3")
    assert model.encoder.fc.out_features == 1024 and model.rnn.hidden == 128
    assert model.rnn.from_hidden.kernel_size == (3, 3, 3)
    assert R2N2("3d-lstm-1").rnn.from_hidden.kernel_size == (1, 1, 1)


def test_views_are_order_dependent_but_weights_are_shared():
    """The same weights take any number of views; the recurrent state makes the result depend on them."""
    torch.manual_seed(0)
    model = R2N2("3d-gru-3", width=0.125).eval()
    images = torch.rand(1, 3, 3, 127, 127)
    with torch.no_grad():
        one, three = model(images[:, :1]), model(images)
    assert not torch.allclose(one, three)


def test_iou_matches_a_hand_computed_value():
    probabilities = torch.zeros(1, 32, 32, 32)
    probabilities[0, :4, :4, :4] = 0.9  # 64 predicted
    truth = torch.zeros(1, 32, 32, 32, dtype=torch.bool)
    truth[0, 2:6, :4, :4] = True  # 64 true, 32 shared
    assert torch.isclose(voxel_iou(probabilities, truth, 0.4), torch.tensor([32 / 96]))
    assert torch.isclose(voxel_iou(probabilities, truth, 0.95), torch.tensor([0.0]))
