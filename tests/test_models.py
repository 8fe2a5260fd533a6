"""3D-R2N2 variants: shapes for 1..5 views, losses, IoU, and learning on real 3D-R2N2 objects."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from voxforge.models.r2n2.network import VARIANTS, R2N2, voxel_iou  # noqa: E402


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


def _tiny_data(count: int = 4):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, size=(count, 6, 127, 127, 3), dtype=np.uint8)
    voxels = rng.random((count, 32, 32, 32)) > 0.8
    return images, voxels


def test_resume_gives_the_same_next_losses_as_an_uninterrupted_run(tmp_path):
    from voxforge.models.r2n2.train import TrainConfig, array_batches, train

    images, voxels = _tiny_data()
    config = TrainConfig(arch="3d-gru-1", width=0.125, iterations=6, batch_size=2, views=(1, 3), lr=1e-3,
                         device="cpu", checkpoint_every=3, log_every=1)
    straight = train(config, array_batches(images, voxels, config), tmp_path / "straight", progress=False)
    first = TrainConfig(**{**config.__dict__, "iterations": 3})
    train(first, array_batches(images, voxels, first), tmp_path / "resumed", progress=False)
    resumed = train(config, array_batches(images, voxels, config), tmp_path / "resumed", resume=True, progress=False)
    assert len(resumed["losses"]) == 3
    assert np.allclose(resumed["losses"], straight["losses"][3:], rtol=1e-5, atol=1e-7)
    lines = (tmp_path / "resumed" / "metrics.csv").read_text().splitlines()
    assert lines[0].startswith("iteration") and len(lines) == 7


def test_evaluation_reports_thresholds_categories_and_view_counts():
    from voxforge.models.r2n2.train import evaluate

    torch.manual_seed(0)
    model = R2N2("3d-gru-1", width=0.125)
    images, voxels = _tiny_data(2)
    samples = [{"images": images[i], "voxels": voxels[i], "category": c} for i, c in enumerate(["chair", "car"])]
    report = evaluate(model, samples, views=(1, 2))
    assert set(report["mean_iou"]) == {"0.3", "0.4", "0.5"}
    assert set(report["per_category"]) == {"chair", "car"} and set(report["per_views"]) == {"1", "2"}
    assert all(0.0 <= v <= 1.0 for v in report["mean_iou"].values()) and report["objects"] == 2


@pytest.mark.slow
def test_a_tiny_model_overfits_real_r2n2_objects(shared_data, tmp_path):
    """The paper's sanity check: a small 3d-gru-3 memorizes the 7 real objects to IoU > 0.9 at 0.4.

    300 steps, about 45 s on 2 idle cores (several minutes when the machine is loaded): width 0.125,
    64-pixel inputs, batch norm in the encoder, occupied voxels weighted 3x, lr 3e-3 then 3e-4.
    """
    from voxforge.loaders import open_dataset
    from voxforge.models.r2n2.train import TrainConfig, array_batches, evaluate, train

    samples = list(open_dataset(shared_data / "r2n2"))
    for sample in samples:
        sample["images"] = sample["images"][:, 5:132, 5:132]  # centre 127 of the 137 renders
    images, voxels = np.stack([s["images"] for s in samples]), np.stack([s["voxels"] for s in samples])
    config = TrainConfig(arch="3d-gru-3", width=0.125, image_size=64, batch_norm=True, foreground_weight=3.0,
                         iterations=300, batch_size=7, views=(1, 3), lr=3e-3, lr_steps=(225,), device="cpu",
                         log_every=10)
    untrained = evaluate(R2N2("3d-gru-3", width=0.125, image_size=64, batch_norm=True), samples, views=(3,))
    result = train(config, array_batches(images, voxels, config), tmp_path, progress=False)
    trained = evaluate(result["model"], samples, views=(1, 3))
    assert np.mean(result["losses"][-20:]) < 0.1 * np.mean(result["losses"][:20])
    assert trained["per_views"]["3"]["0.4"] > 0.9, trained
    assert trained["per_views"]["1"]["0.4"] > 0.85 and untrained["mean_iou"]["0.4"] < 0.2
    assert min(values["0.4"] for values in trained["per_category"].values()) > 0.7, trained["per_category"]
