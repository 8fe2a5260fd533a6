"""The point-cloud network, its losses against brute-force references, the metrics' conventions, and
training / resuming / evaluating it on real voxforge samples through the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import gpu_only
from inprocess_samples import make_samples, write_dataset

from voxforge.models.reconstnet.network import ReconstNet, ResNet50Encoder, kl_divergence
from voxforge.models.reconstnet.losses import chamfer_distance, exact_emd, nearest_distances, sinkhorn_emd
from voxforge.models.reconstnet.metrics import (
    CONVENTIONS, evaluate_cloud, fscores, icp_align, normalize_cloud,
)
from voxforge.models.softras.silhouette import silhouette_iou, silhouette_iou_loss
from voxforge.pipeline.config import RunConfig


def _brute_chamfer(a: np.ndarray, b: np.ndarray, squared: bool, combine: str) -> float:
    forward = [min(float(np.sum((p - q) ** 2)) for q in b) for p in a]
    backward = [min(float(np.sum((p - q) ** 2)) for p in a) for q in b]
    if not squared:
        forward, backward = np.sqrt(forward), np.sqrt(backward)
    total = np.mean(forward) + np.mean(backward)
    return total if combine == "sum" else total / 2


def test_resnet50_encoder_is_the_reference_architecture():
    encoder = ResNet50Encoder(width=1.0)
    assert sum(p.numel() for p in encoder.parameters()) == 23_508_032  # torchvision's resnet50 without its fc
    assert encoder.features == 2048
    assert encoder(torch.rand(1, 3, 128, 128)).shape == (1, 2048)


def test_reconstnet_output_latent_and_kl():
    torch.manual_seed(0)
    model = ReconstNet(points=64, width=0.0625)
    images = torch.rand(3, 3, 64, 64)
    out = model(images)
    assert out["points"].shape == (3, 64, 3) and out["mean"].shape == (3, 100)
    assert out["points"].abs().max() < 1.0  # tanh
    assert not torch.equal(model(images)["points"], out["points"])  # training: a reparameterized sample
    model.eval()
    assert torch.equal(model(images)["points"], model(images)["points"])  # evaluation: the mean
    assert torch.allclose(kl_divergence(torch.zeros(2, 100), torch.zeros(2, 100)), torch.zeros(2))
    assert (kl_divergence(torch.randn(2, 100), torch.randn(2, 100)) > 0).all()


@pytest.mark.parametrize("squared", [True, False])
@pytest.mark.parametrize("combine", ["sum", "average"])
def test_chamfer_matches_brute_force(squared, combine):
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 37, 3)), rng.normal(size=(2, 29, 3))
    values = chamfer_distance(torch.from_numpy(a), torch.from_numpy(b), squared, combine)
    expected = [_brute_chamfer(x, y, squared, combine) for x, y in zip(a, b)]
    assert np.allclose(values.numpy(), expected, rtol=1e-5)
    forward, backward = nearest_distances(torch.from_numpy(a), torch.from_numpy(b), squared, chunk=8)  # chunked
    assert np.allclose((forward.mean(1) + backward.mean(1)).numpy() / (1 if combine == "sum" else 2), expected, rtol=1e-5)


def test_chamfer_gradients_stay_finite_on_coincident_points():
    points = torch.rand(1, 16, 3, requires_grad=True)
    chamfer_distance(points, points.detach().clone(), squared=False).sum().backward()
    assert torch.isfinite(points.grad).all()


def test_sinkhorn_emd_bounds_the_exact_assignment_from_above():
    rng = np.random.default_rng(1)
    for n in (32, 128):
        a = rng.uniform(-0.5, 0.5, size=(3, n, 3))
        b = rng.uniform(-0.3, 0.5, size=(3, n, 3))
        exact = exact_emd(a, b)
        approximate = sinkhorn_emd(torch.from_numpy(a), torch.from_numpy(b), epsilon=1e-3, iterations=10).numpy()
        relative = (approximate - exact) / exact
        assert (relative > -1e-6).all() and (relative < 0.04).all(), relative  # a feasible plan: never below


@pytest.mark.parametrize("device", [pytest.param("cuda", marks=gpu_only)])
def test_point_cloud_losses_agree_between_the_gpu_and_the_cpu(device):
    generator = torch.Generator().manual_seed(0)
    a, b = torch.rand(3, 256, 3, generator=generator), torch.rand(3, 256, 3, generator=generator)
    for squared in (False, True):
        on_device = chamfer_distance(a.to(device), b.to(device), squared=squared).cpu()
        assert torch.allclose(chamfer_distance(a, b, squared=squared), on_device, rtol=1e-4, atol=1e-6)
    assert torch.allclose(sinkhorn_emd(a, b), sinkhorn_emd(a.to(device), b.to(device)).cpu(), rtol=1e-3, atol=1e-5)


def test_exact_emd_reference_values():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(1, 50, 3))
    assert np.isclose(exact_emd(a, a[:, rng.permutation(50)])[0], 0.0)  # a permutation matches exactly
    shift = np.array([0.3, -0.1, 0.2])
    assert np.isclose(exact_emd(a, a + shift)[0], np.linalg.norm(shift))  # a translation moves every point by |t|


def test_sinkhorn_emd_gradient_moves_points_towards_the_target():
    torch.manual_seed(0)
    target = torch.rand(2, 64, 3)
    points = (torch.rand(2, 64, 3) + 0.5).requires_grad_()
    before = sinkhorn_emd(points, target).sum()
    before.backward()
    assert torch.isfinite(points.grad).all()
    with torch.no_grad():
        after = sinkhorn_emd(points - 0.5 * points.grad / points.grad.norm() * 64 ** 0.5, target).sum()
    assert after < before


def test_metric_conventions():
    rng = np.random.default_rng(3)
    target = rng.uniform(-0.5, 0.5, size=(300, 3)) * [1.0, 0.5, 0.3]
    cube = normalize_cloud(target, "unit-cube")
    assert np.isclose((cube.max(0) - cube.min(0)).max(), 1.0) and np.allclose((cube.max(0) + cube.min(0)) / 2, 0)
    assert np.isclose(np.linalg.norm(normalize_cloud(target, "unit-sphere"), axis=1).max(), 1.0)
    angle = np.radians(10.0)
    rotation = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
    moved = target @ rotation.T + [0.02, -0.01, 0.03]
    assert np.abs(icp_align(moved, target) - target).max() < 1e-6  # ICP undoes a small rigid motion
    shifted_and_scaled = target * 2.0 + [0.1, 0.2, -0.1]
    assert evaluate_cloud(shifted_and_scaled, target, "lmnet")["chamfer"] < 1e-5  # each cloud normalized on its own
    assert evaluate_cloud(shifted_and_scaled, target, "plain")["chamfer"] > 0.1  # compared as predicted
    assert evaluate_cloud(moved, target, "lmnet")["chamfer"] < evaluate_cloud(moved, target, "plain")["chamfer"]
    assert fscores(target, target, (0.01,))["0.01"] == 1.0
    assert set(CONVENTIONS) >= {"lmnet", "psgn", "plain"}
    squared, plain = evaluate_cloud(moved, target, "psgn")["chamfer"], evaluate_cloud(moved, target, "plain")["chamfer"]
    assert squared < plain  # squared distances < 1 are smaller


def test_silhouette_iou_and_loss():
    rng = np.random.default_rng(4)
    a, b = rng.random((3, 16, 16)) > 0.5, rng.random((3, 16, 16)) > 0.6
    iou = silhouette_iou(torch.from_numpy(a), torch.from_numpy(b))
    expected = [(x & y).sum() / (x | y).sum() for x, y in zip(a, b)]
    assert np.allclose(iou.numpy(), expected, atol=1e-6)
    same = torch.from_numpy(a).float()
    assert torch.isclose(silhouette_iou_loss(same, same), torch.tensor(0.0), atol=1e-6)
    assert torch.isclose(silhouette_iou_loss(same, 1 - same), torch.tensor(1.0))
    soft = torch.rand(2, 8, 8, requires_grad=True)
    silhouette_iou_loss(soft, torch.rand(2, 8, 8)).backward()
    assert torch.isfinite(soft.grad).all() and soft.grad.abs().sum() > 0


@pytest.fixture(scope="module")
def four_objects():
    config = RunConfig(limit=4, views=4, size=64, points=1024, fps_prefix=256,
                       categories=["airplane", "chair", "lamp", "table"])
    return make_samples(config)


def test_model_overfits_a_few_objects(four_objects, tmp_path):
    """Real renders and surface points of 4 objects: the Chamfer distance falls by 10x on the CPU."""
    from voxforge.models.reconstnet.train import ReconstNetConfig, train_reconstnet

    images = torch.from_numpy(np.stack([s["images"] for s in four_objects])).permute(0, 1, 4, 2, 3).float() / 255
    points = torch.from_numpy(np.stack([s["points"][:256] for s in four_objects]))
    generator = torch.Generator().manual_seed(0)

    def batches():
        while True:
            views = torch.randint(0, images.shape[1], (len(images),), generator=generator)
            yield {"images": images[torch.arange(len(images)), views], "points": points}

    config = ReconstNetConfig(width=0.125, points=256, iterations=30, batch_size=4, lr=1e-3, emd_weight=0.0,
                              kl_weight=0.0, device="cpu", checkpoint_every=10 ** 6)
    history = train_reconstnet(config, batches(), tmp_path, progress=False)["history"]
    first, last = history["chamfer"][0], float(np.mean(history["chamfer"][-3:]))
    assert last < first / 10, (first, last)


def test_train_resume_and_eval_through_the_cli(tmp_path):
    from voxforge.pipeline.cli import main

    data = write_dataset(tmp_path / "data", RunConfig(limit=3, views=3, size=64, points=512, fps_prefix=64,
                                                      categories=["car", "mug", "table"]), splits=("train", "test"))
    common = ["train", "--arch", "reconstnet", "--data", str(data), "--width", "0.0625", "--points", "64",
              "--batch-size", "2", "--workers", "0", "--emd-weight", "0.1", "--lr", "1e-3"]
    assert main(common + ["--out", str(tmp_path / "straight"), "--iterations", "4"]) == 0
    assert main(common + ["--out", str(tmp_path / "resumed"), "--iterations", "2"]) == 0
    saved = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=False)
    assert saved["data_position"] == (1, 1)  # 2 training objects in batches of 2: the second epoch given out
    assert main(common + ["--out", str(tmp_path / "resumed"), "--iterations", "4", "--resume"]) == 0
    straight = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=False)
    resumed = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=False)
    assert straight["iteration"] == resumed["iteration"] == 4
    for name, value in straight["model"].items():
        assert torch.allclose(value.float(), resumed["model"][name].float(), atol=1e-6), name  # exact resume
    assert main(["eval", str(tmp_path / "straight"), "--data", str(data), "--split", "all", "--views", "2", "--emd"]) == 0
    report = json.loads((tmp_path / "straight" / "eval.json").read_text())
    assert report["objects"] == 3 and set(report["conventions"]) == {"lmnet", "psgn", "plain"}
    lmnet = report["conventions"]["lmnet"]
    assert set(lmnet["per_category"]) == {"car", "mug", "table"}
    assert set(lmnet["mean"]) == {"chamfer", "fscore", "emd"} and set(lmnet["mean"]["fscore"]) == {"0.01", "0.02", "0.05"}
    assert main(["train", "--arch", "reconstnet", "--data", str(tmp_path), "--out", str(tmp_path / "x"),
                 "--iterations", "1"]) == 2  # not a dataset: a clear error, no traceback

    # predict: one cloud per image, the same points the evaluation computes for that view
    from PIL import Image

    from voxforge.loaders import open_dataset
    from voxforge.models.reconstnet.train import load_run

    sample = next(iter(open_dataset(data, "train")))
    view = tmp_path / "view.png"
    Image.fromarray(sample["images"][1]).save(view)
    assert main(["predict", str(tmp_path / "straight"), str(view), "--out", str(tmp_path / "pred")]) == 0
    cloud = np.load(tmp_path / "pred" / "view.npy")
    model, _, _ = load_run(tmp_path / "straight")
    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(sample["images"][1:2]).permute(0, 3, 1, 2).float() / 255)["points"]
    assert cloud.shape == (64, 3) and np.allclose(cloud, expected[0].numpy(), atol=1e-5)
    import trimesh

    assert np.allclose(trimesh.load(tmp_path / "pred" / "view.ply").vertices, cloud)
