"""The SoftRas-style mesh model: its template and bounds, its regularizers, learning from silhouettes on real
renders, exact resume, evaluation by voxelizing predictions into each object's voxel cube, and prediction
through the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from inprocess_samples import write_dataset

from voxforge.models.softras import icosphere
from voxforge.models.softras.model import (
    CUBE_HALF, TEMPLATE_RADIUS, MeshReconstructor, edge_quads, flatten_loss, laplacian_loss, uniform_laplacian,
)
from voxforge.pipeline.config import RunConfig


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Four real procedural objects, 4 views at 64 px, split into train and test."""
    out = tmp_path_factory.mktemp("softras") / "data"
    return write_dataset(out, RunConfig(limit=4, views=4, size=64, points=256,
                                        categories=["car", "mug", "table", "chair"]), splits=("train", "test"))


def test_an_untrained_model_predicts_the_template_and_every_prediction_stays_in_the_cube():
    torch.manual_seed(0)
    model = MeshReconstructor(image_size=64, width=0.125).eval()
    vertices = model(torch.rand(2, 4, 64, 64))
    assert vertices.shape == (2, 642, 3) and tuple(model.faces.shape) == (1280, 3)
    template, _ = icosphere(3, TEMPLATE_RADIUS)
    assert torch.allclose(vertices, torch.from_numpy(template).float().expand(2, -1, -1), atol=1e-5)
    # extreme decoder outputs: still strictly inside [-0.5, 0.5]^3
    with torch.no_grad():
        for layer in (model.decoder.offsets, model.decoder.centroid):
            layer.bias.fill_(50.0)
    assert vertices.abs().max() < CUBE_HALF
    pushed = model(torch.rand(2, 4, 64, 64))
    assert pushed.abs().max() <= CUBE_HALF and pushed.min() > 0.4  # every coordinate driven to the +corner


def test_regularizers_vanish_where_they_should():
    vertices, faces = icosphere(3, 0.25)
    laplacian = uniform_laplacian(len(vertices), faces)
    quads = edge_quads(faces)
    assert len(quads) == 3 * len(faces) // 2  # closed manifold: every edge has two faces
    sphere = torch.from_numpy(vertices).float()[None]
    assert float(laplacian_loss(torch.full_like(sphere, 0.3), laplacian)) < 1e-10  # each vertex its neighbours' mean
    assert laplacian_loss(sphere, laplacian) > 0
    assert laplacian_loss(sphere * 0.5, laplacian) == pytest.approx(0.25 * float(laplacian_loss(sphere, laplacian)))
    # two triangles sharing the edge (0, 1): flat -> 0; folded onto each other -> (1 + 1)^2 = 4
    flat = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [0.5, 1, 0], [0.5, -1, 0]]])
    folded = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [0.5, 1, 0], [0.5, 1, 0.001]]])
    quad = torch.tensor([[0, 1, 2, 3]])
    assert float(flatten_loss(flat, quad)) == pytest.approx(0.0, abs=1e-9)
    assert float(flatten_loss(folded, quad)) == pytest.approx(4.0, abs=1e-3)
    right_angle = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [0.5, 1, 0], [0.5, 0, 1]]])
    assert float(flatten_loss(right_angle, quad)) == pytest.approx(1.0, abs=1e-6)
    assert float(flatten_loss(sphere, quads)) > 0


def test_a_predicted_mesh_is_voxelized_into_the_objects_own_cube(dataset):
    """A ball voxelized by the evaluation's path holds every voxel whose centre is inside the ball and none
    whose centre is more than a voxel diagonal outside it: the mesh lands in the sample's own voxel frame
    (a shift by one voxel breaks one of the two)."""
    from voxforge.loaders import open_dataset
    from voxforge.models.softras.train import voxelize_prediction

    sample = next(iter(open_dataset(dataset, None)))
    radius = 0.2
    vertices, faces = icosphere(4, radius)
    predicted = voxelize_prediction(vertices, faces, sample)
    resolution, size = predicted.shape[0], float(sample["voxel_size"])
    centres = np.asarray(sample["voxel_origin"]) + (np.indices((resolution,) * 3).reshape(3, -1).T + 0.5) * size
    distance = np.linalg.norm(centres, axis=1).reshape((resolution,) * 3)
    inside = distance < radius * np.cos(np.pi / 5 / 2 ** 4)  # inside the inscribed polyhedron, roughly
    assert inside.sum() > 100 and not (inside & ~predicted).any()
    assert not (predicted & (distance > radius + np.sqrt(3) * size)).any()
    shifted = np.roll(predicted, 1, axis=0)
    assert (inside & ~shifted).any() or (shifted & (distance > radius + np.sqrt(3) * size)).any()


def test_the_model_learns_silhouettes_of_real_renders(dataset, tmp_path):
    """Real renders, masks and cameras of 4 objects: 1 - soft IoU of the predicted meshes' silhouettes in the
    input view and another view falls well below where the template sphere starts."""
    from voxforge.models.softras.train import SoftRasConfig, softras_batches, train_softras

    config = SoftRasConfig(width=0.25, batch_size=2, iterations=30, lr=1e-3, device="cpu", log_every=10,
                           checkpoint_every=10 ** 6, threads=1)
    result = train_softras(config, softras_batches(dataset, config, workers=0), tmp_path / "run", progress=False,
                           signals=())
    history = result["history"]
    first, last = float(np.mean(history["iou"][:3])), float(np.mean(history["iou"][-5:]))
    assert last < 0.75 * first, (first, last)
    header = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert header == ["iteration", "loss", "iou", "laplacian", "flatten", "lr", "views", "seconds", "images_per_s",
                      "data_wait"]


def test_train_resume_eval_and_predict_through_the_cli(dataset, tmp_path):
    from PIL import Image

    from voxforge.loaders import open_dataset
    from voxforge.pipeline.cli import main

    common = ["train", "--arch", "softras", "--data", str(dataset), "--width", "0.125", "--batch-size", "1",
              "--workers", "0", "--lr", "1e-3", "--no-progress", "--threads", "1"]
    assert main(common + ["--out", str(tmp_path / "straight"), "--iterations", "4"]) == 0
    assert main(common + ["--out", str(tmp_path / "resumed"), "--iterations", "2"]) == 0
    assert main(common + ["--out", str(tmp_path / "resumed"), "--iterations", "4", "--resume"]) == 0
    straight = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=False)
    resumed = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=False)
    assert straight["iteration"] == resumed["iteration"] == 4
    assert straight["config"]["batch_size"] == 1 and straight["config"]["image_size"] == 64
    for name, value in straight["model"].items():
        assert torch.allclose(value.float(), resumed["model"][name].float(), atol=1e-6), name  # exact resume

    run = tmp_path / "straight"
    assert main(["eval", str(run), "--data", str(dataset), "--split", "all", "--views", "2", "--gallery", "2"]) == 0
    report = json.loads((run / "eval.json").read_text())
    assert report["objects"] == 4 and set(report["per_category"]) == {"car", "mug", "table", "chair"}
    assert 0.0 <= report["mean_iou"] <= 1.0 and report["per_category"]["car"]["predictions"] == 2
    assert report["published_mean_iou"]["SoftRas (Liu et al. 2019)"] == 0.646
    assert (run / "gallery.png").is_file()

    sample = next(iter(open_dataset(dataset, None)))
    view = tmp_path / "view.png"
    Image.fromarray(np.dstack([sample["images"][0], sample["alphas"][0]])).save(view)
    assert main(["predict", str(run), str(view), "--out", str(tmp_path / "predicted")]) == 0
    import trimesh

    mesh = trimesh.load(tmp_path / "predicted" / "view.obj", process=False)
    assert mesh.vertices.shape == (642, 3) and len(mesh.faces) == 1280
    assert np.abs(mesh.vertices).max() < 0.5
    Image.fromarray(sample["images"][0]).save(tmp_path / "rgb.png")  # no alpha: a clear error
    assert main(["predict", str(run), str(tmp_path / "rgb.png")]) == 2
