"""3D-R2N2 trainer beyond the model: initialization, loss options, bf16, TensorBoard, eval against the
published figures, the gallery, prediction to binvox + mesh, DDP under torchrun and Ray Train."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import gpu_only  # noqa: E402

from voxforge.models.r2n2.network import R2N2  # noqa: E402
from voxforge.models.engine import autocast  # noqa: E402
from voxforge.models.r2n2.train import TrainConfig, array_batches, train  # noqa: E402

TESTS = Path(__file__).resolve().parent


def _views(count: int = 4, views: int = 3, size: int = 64, seed: int = 0):
    """Plain-background pictures of a dark square whose size differs per object, and matching voxels."""
    rng = np.random.default_rng(seed)
    images = np.full((count, views, size, size, 3), 240, np.uint8)
    voxels = np.zeros((count, 32, 32, 32), bool)
    for index in range(count):
        half = 4 + 3 * index
        images[index, :, size // 2 - half: size // 2 + half, size // 2 - half: size // 2 + half] = rng.integers(0, 80)
        voxels[index, 16 - half // 2: 16 + half // 2, 16 - half // 2: 16 + half // 2, 16 - half // 2: 16 + half // 2] = 1
    return images, voxels


def test_msra_init_keeps_images_apart_at_the_encoder_output():
    """PyTorch's default init made every image's feature nearly the same (spread ~1e-4 of the scale)."""
    torch.manual_seed(0)
    images, _ = _views(count=4, views=1, size=127)
    tensor = torch.from_numpy(images[:, 0]).permute(0, 3, 1, 2).float() / 255
    model = R2N2("3d-gru-3", width=0.25)
    with torch.no_grad():
        features = model.encoder(tensor)
    assert features.std(0).mean() > 0.02 * features.abs().mean()
    assert all(float(m.bias.detach().abs().max()) == 0 for m in model.modules() if isinstance(m, torch.nn.Conv3d) and m.bias is not None)


def test_foreground_weight_weighs_occupied_voxels():
    torch.manual_seed(0)
    model = R2N2("3d-gru-1", width=0.125)
    logits = torch.randn(2, 2, 32, 32, 32)
    voxels = torch.rand(2, 32, 32, 32) > 0.9
    plain = model.loss(logits, voxels)
    weighted = model.loss(logits, voxels, foreground_weight=5.0)
    per_voxel = torch.nn.functional.cross_entropy(logits, voxels.long(), reduction="none")
    weights = 1 + 4 * voxels.float()
    assert torch.isclose(plain, per_voxel.mean())
    assert torch.isclose(weighted, (per_voxel * weights).sum() / weights.sum())


def test_warmup_then_steps_schedule():
    from voxforge.models.engine import make_optimizer

    config = TrainConfig(lr=1e-3, warmup=4, lr_steps=(6, 8))
    optimizer, scheduler = make_optimizer(torch.nn.Linear(2, 2), config)
    rates = []
    for _ in range(10):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert np.allclose(rates, [2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 1e-5])


def test_image_size_resizes_views_inside_the_model():
    model = R2N2("3d-gru-1", width=0.125, image_size=64)
    assert model(torch.rand(1, 2, 3, 127, 127)).shape == (1, 2, 32, 32, 32)


def test_bf16_autocast_training_on_cpu_and_tensorboard(tmp_path):
    """bf16 autocast runs the convolutions in bf16 on a CPU; the loss stays float32 and training moves."""
    images, voxels = _views()
    config = TrainConfig(arch="3d-gru-3", width=0.125, image_size=64, iterations=4, batch_size=2, views=(1, 2),
                         lr=1e-3, device="cpu", log_every=2, amp="bf16", batch_norm=True)
    model = R2N2("3d-gru-3", width=0.125, image_size=64)
    with autocast(torch.device("cpu"), "bf16"):
        logits = model(torch.rand(1, 2, 3, 64, 64))
    assert logits.dtype == torch.bfloat16
    assert model.loss(logits, torch.zeros(1, 32, 32, 32, dtype=torch.bool)).dtype == torch.float32
    result = train(config, array_batches(images, voxels, config), tmp_path, progress=False)
    assert len(result["losses"]) == 4 and all(np.isfinite(result["losses"]))
    assert result["images_per_second"] > 0 and 0 <= result["data_wait_share"] < 1
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert rows[0].split(",") == ["iteration", "loss", "lr", "views", "seconds", "images_per_s", "data_wait"]
    assert [r.split(",")[0] for r in rows[1:]] == ["2", "4"]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert {"train/loss", "train/lr", "perf/images_per_s", "perf/data_wait_share"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("train/loss")] == [2, 4]


def test_fp16_is_refused_on_cpu():
    with pytest.raises(ValueError, match="CUDA"):
        autocast(torch.device("cpu"), "fp16")


def test_baselines_are_the_published_figures_at_threshold_0_4(shared_data):
    from voxforge.models.r2n2.report import attach_baselines, format_table, load_baselines, synset_of

    baselines = load_baselines(shared_data / "r2n2" / "ShapeNet.json")
    assert len(baselines) == 13 and baselines["02958343"]["1"] == 0.798 and baselines["02958343"]["5"] == 0.836
    assert synset_of("airplane") == synset_of("aeroplane") == "02691156" and synset_of("mug") == "03797390"
    report = {"mean_iou": {"0.3": 0.5, "0.4": 0.4, "0.5": 0.3}, "objects": 2,
              "per_category": {"car": {"0.3": 0.6, "0.4": 0.5, "0.5": 0.4}, "mug": {"0.3": 0.4, "0.4": 0.3, "0.5": 0.2}},
              "per_views": {"1": {"0.3": 0.4, "0.4": 0.3, "0.5": 0.2}, "5": {"0.3": 0.5, "0.4": 0.4, "0.5": 0.3}}}
    attach_baselines(report, baselines, {"car": "02958343", "mug": "03797390"})
    assert report["baseline"]["threshold"] == 0.4 and set(report["baseline"]["per_category"]) == {"car"}
    assert report["baseline"]["mean_over_these_categories"] == {"1": 0.798, "5": 0.836}
    table = format_table(report, "test")
    assert "threshold 0.4" in table and "0.836" in table


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, shared_data):
    """Two training iterations on the real 3D-R2N2 objects through the CLI."""
    from voxforge.pipeline.cli import main

    run = tmp_path_factory.mktemp("r2n2-run")
    code = main(["train", "--data", str(shared_data / "r2n2"), "--arch", "3d-gru-3", "--width", "0.125",
                 "--image-size", "64", "--iterations", "2", "--batch-size", "2", "--views", "1-2", "--out", str(run),
                 "--device", "cpu", "--no-progress", "--log-every", "1", "--batch-norm"])
    assert code == 0
    return run


def test_eval_prints_published_figures_and_writes_a_gallery(tiny_run, shared_data, capsys):
    from PIL import Image

    from voxforge.pipeline.cli import main

    assert main(["eval", str(tiny_run), "--data", str(shared_data / "r2n2"), "--split", "all", "--gallery", "3",
                 "--views", "2", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    report = json.loads((tiny_run / "eval.json").read_text())
    assert report["objects"] == 7 and set(report["mean_iou"]) == {"0.3", "0.4", "0.5"}
    assert set(report["per_views"]) == {"1", "2"}
    published = report["baseline"]["per_category"]
    assert published["car"]["5"] == 0.836 and published["airplane"]["1"] == 0.513 and len(published) == 7
    assert "published@0.4" in printed and "0.821" in printed  # car, 2 views
    sheet = Image.open(tiny_run / "gallery.png")
    assert sheet.size == (127 * 7, 3 * (127 + 14))
    pixels = np.asarray(sheet)
    truth_tile = pixels[14:141, 6 * 127:7 * 127]
    assert (truth_tile != 255).any()  # the ground truth is drawn


def test_predict_writes_binvox_and_a_watertight_mesh(tiny_run, shared_data, tmp_path):
    import trimesh

    from voxforge.pipeline.cli import main
    from voxforge.voxelize.binvox import read_binvox

    renders = sorted((shared_data / "r2n2" / "ShapeNetRendering").glob("02958343/*/rendering/0[0-2].png"))
    assert main(["predict", str(tiny_run), *map(str, renders), "--out", str(tmp_path), "--threshold", "0.3",
                 "--device", "cpu"]) == 0
    probabilities = np.load(tmp_path / "probabilities.npy").astype(np.float32)
    grid = read_binvox(tmp_path / "prediction.binvox")
    assert grid.occupancy.shape == (32, 32, 32) and np.isclose(grid.voxel_size, 1 / 32)
    assert np.array_equal(grid.occupancy, probabilities > 0.3)
    if grid.occupancy.any():
        mesh = trimesh.load(tmp_path / "prediction.obj", force="mesh")
        assert mesh.is_watertight
        assert np.isclose(mesh.volume, grid.occupancy.sum() / 32**3, rtol=1e-6)


def test_cube_mesh_of_a_known_shape():
    import trimesh

    from voxforge.models.r2n2.predict import cube_mesh

    grid = np.zeros((4, 4, 4), bool)
    grid[1:3, 1, 1:3] = True  # a 2x1x2 slab
    grid[1, 2, 1] = True  # one cube on top
    mesh = cube_mesh(grid, origin=[0, 0, 0], voxel_size=0.5)
    assert isinstance(mesh, trimesh.Trimesh) and mesh.is_watertight and mesh.is_winding_consistent
    assert np.isclose(mesh.volume, 5 * 0.125)  # positive: the faces point outwards
    assert np.allclose(mesh.bounds, [[0.5, 0.5, 0.5], [1.5, 1.5, 1.5]])


def test_voxel_rendering_draws_the_top_brightest():
    from voxforge.models.gallery import render_voxels

    grid = np.zeros((8, 8, 8), bool)
    grid[2:6, 2:6, 2:6] = True
    image = np.asarray(render_voxels(grid, size=64, color=(200, 200, 200)))
    values = set(map(int, np.unique(image[..., 0])))
    assert 200 in values and int(200 * 0.55) in values and int(200 * 0.75) in values  # the three visible sides
    assert (image[0, 0] == 255).all() and np.asarray(render_voxels(np.zeros((8, 8, 8)), 16)).min() == 255


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _shard_dataset(out: Path, objects: int = 4) -> Path:
    """``objects`` procedural objects, one shard each (so 2 ranks get 2 shards apiece), made in-process."""
    sys.path.insert(0, str(TESTS))
    from inprocess_samples import make_members

    from voxforge.loaders import format as fmt
    from voxforge.loaders.shards import ShardWriter
    from voxforge.pipeline.config import RunConfig

    config = RunConfig(source="procedural", limit=objects, views=3, size=64, points=64, out=str(out), workers=1,
                       progress=False)
    writer = ShardWriter(out / "train", max_count=1)
    for _, members in make_members(config):
        writer.add(fmt.sample_key(json.loads(members[fmt.META])["id"]), members)
    writer.commit()
    info = {"format_version": fmt.FORMAT_VERSION, "config": config.as_dict(),
            "counts": {"objects": objects, "per_split": {"train": objects, "val": 0, "test": 0}}}
    (out / fmt.DATASET_FILE).write_text(json.dumps(info))
    return out


def _torchrun_two_ranks(tmp_path, out, *mode: str) -> subprocess.CompletedProcess:
    """tests/ddp_train_worker.py under torchrun, 2 gloo ranks on loopback, on a fresh sharded dataset."""
    data = _shard_dataset(tmp_path / "data")
    out.mkdir()
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(TESTS.parent)}
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
               "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
               str(TESTS / "ddp_train_worker.py"), str(data), str(out), *mode]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=240, check=False)


@pytest.mark.slow
def test_ddp_under_torchrun_on_two_cpu_processes(tmp_path):
    """gloo, 2 ranks: disjoint shards per rank, identical weights after training, files from rank 0 only."""
    out = tmp_path / "out"
    finished = _torchrun_two_ranks(tmp_path, out)
    assert finished.returncode == 0, finished.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2] and [r["iteration"] for r in ranks] == [3, 3]
    assert ranks[0]["ids"] and ranks[1]["ids"] and not set(ranks[0]["ids"]) & set(ranks[1]["ids"])
    assert np.isclose(ranks[0]["weights_sum"], ranks[1]["weights_sum"], rtol=0, atol=1e-6)
    assert np.isclose(ranks[0]["weights_abs"], ranks[1]["weights_abs"], rtol=0, atol=1e-6)
    run = out / "run"
    assert (run / "checkpoint.pt").exists() and not list(run.glob("*.partial"))
    rows = (run / "metrics.csv").read_text().splitlines()
    assert len(rows) == 4  # header + 3 iterations, written once (rank 0)
    assert len(list((run / "tensorboard").glob("events.*"))) == 1


@pytest.mark.slow
def test_ddp_trains_the_mesh_model_on_the_same_engine(tmp_path):
    """The SoftRas-style model under torchrun (gloo, 2 ranks): disjoint shards, identical weights after
    training, one metrics file written by rank 0."""
    out = tmp_path / "out"
    finished = _torchrun_two_ranks(tmp_path, out, "softras")
    assert finished.returncode == 0, finished.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2] and [r["iteration"] for r in ranks] == [3, 3]
    assert ranks[0]["ids"] and ranks[1]["ids"] and not set(ranks[0]["ids"]) & set(ranks[1]["ids"])
    assert np.isclose(ranks[0]["weights_sum"], ranks[1]["weights_sum"], rtol=0, atol=1e-6)
    rows = (out / "run" / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("iteration,loss,iou,laplacian,flatten") and len(rows) == 4


@pytest.mark.slow
def test_ddp_ranks_stop_together_when_one_rank_is_signalled(tmp_path):
    """SIGUSR1 reaches rank 1 alone while it reads its 2nd batch: both ranks stop after iteration 2 (they
    agree through the per-iteration all_reduce), rank 0 writes the checkpoint, the weights stay in sync."""
    out = tmp_path / "out"
    finished = _torchrun_two_ranks(tmp_path, out, "stop")
    assert finished.returncode == 0, finished.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["iteration"] for r in ranks] == [2, 2]
    assert [r["stopped"]["reason"] for r in ranks] == ["SIGUSR1", "SIGUSR1"]
    assert np.isclose(ranks[0]["weights_sum"], ranks[1]["weights_sum"], rtol=0, atol=1e-6)
    assert torch.load(out / "run" / "checkpoint.pt", weights_only=False)["iteration"] == 2
    assert len((out / "run" / "metrics.csv").read_text().splitlines()) == 3  # header + 2 iterations, rank 0 only


@pytest.mark.slow
def test_ray_train_runs_the_same_training_function(tmp_path, shared_data):
    """Ray Train TorchTrainer, 2 CPU workers (DDP over gloo) on the 3D-R2N2 layout: a checkpoint and metrics."""
    pytest.importorskip("ray.train")
    from voxforge.models.ray_train import train_with_ray

    config = TrainConfig(arch="3d-gru-1", width=0.125, image_size=64, iterations=2, batch_size=2, views=(1, 2),
                         lr=1e-3, device="cpu", log_every=1, checkpoint_every=10**6)
    import ray

    started_here = not ray.is_initialized()  # keep a session-wide Ray other tests use
    try:
        metrics = train_with_ray(config, str(shared_data / "r2n2"), tmp_path / "run", address=None, workers=2,
                                 loader_workers=0, progress=False)
    finally:
        if started_here:
            ray.shutdown()
    assert metrics["iteration"] == 2 and metrics["world_size"] == 2 and metrics["loss_window"] == 1
    assert np.isfinite(metrics["loss_first"]) and np.isfinite(metrics["loss_last"])
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert state["iteration"] == 2
    assert len((tmp_path / "run" / "metrics.csv").read_text().splitlines()) == 3


@pytest.mark.slow
@pytest.mark.parametrize("device,rtol,atol", [("cpu", 1e-3, 1e-5),
                                               pytest.param("cuda", 2e-2, 1e-4, marks=gpu_only)])  # TF32 on GPUs
def test_compiled_training_matches_eager_training(tmp_path, device, rtol, atol):
    """torch.compile (inductor: C++ on CPUs, Triton on GPUs) gives the same losses as the eager model,
    checkpoints unchanged."""
    images, voxels = _views(count=2, views=2, size=32)
    losses = {}
    for compiled in (False, True):
        config = TrainConfig(arch="3d-gru-1", width=0.125, image_size=32, iterations=2, batch_size=2, views=(2, 2),
                             lr=1e-3, device=device, log_every=1, compile=compiled)
        result = train(config, array_batches(images, voxels, config), tmp_path / str(compiled), progress=False)
        losses[compiled] = result["losses"]
        state = torch.load(tmp_path / str(compiled) / "checkpoint.pt", map_location="cpu", weights_only=False)
        assert not any("_orig_mod" in key for key in state["model"])
    assert np.allclose(losses[True], losses[False], rtol=rtol, atol=atol), losses


@pytest.mark.parametrize("amp", [pytest.param(amp, marks=gpu_only) for amp in ("bf16", "fp16", "none")])
def test_training_on_cuda_moves_the_loss(tmp_path, amp):
    """bf16 autocast, fp16 with loss scaling and plain fp32 on CUDA: the loss falls, checkpoints load on a CPU."""
    config = TrainConfig(arch="3d-gru-3", width=0.125, image_size=64, iterations=40, batch_size=4, views=(1, 3),
                         lr=3e-3, lr_steps=(1000,), device="cuda", log_every=10, amp=amp, batch_norm=True)
    images, voxels = _views()
    result = train(config, array_batches(images, voxels, config), tmp_path, progress=False)
    losses = result["losses"]
    assert len(losses) == 40 and all(np.isfinite(losses))
    assert np.mean(losses[-10:]) < 0.7 * np.mean(losses[:10]), losses
    assert result["images_per_second"] > 0
    state = torch.load(tmp_path / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert all(value.device.type == "cpu" for value in state["model"].values())  # loadable anywhere


def _same_batches(first: list[dict], second: list[dict]) -> bool:
    return len(first) == len(second) and all(
        torch.equal(a["images"], b["images"]) and torch.equal(a["voxels"], b["voxels"]) for a, b in zip(first, second))


def _take(stream, count: int) -> list[dict]:
    return [next(stream) for _ in range(count)]


def test_r2n2_batches_seek_to_a_data_position_without_reading_earlier_epochs(shared_data):
    """7 objects in batches of 2: 3 batches per epoch. A stream sought to (epoch 1, batch 2) gives what the
    uninterrupted stream gave there, and only the batches it gives out are read from disk."""
    from voxforge.models.data import R2N2Views, r2n2_batches

    data = shared_data / "r2n2"
    straight = r2n2_batches(data, 2, (1, 3), image_size=64, workers=0)
    stream = iter(straight)
    _take(stream, 5)
    assert straight.position == (1, 2)
    expected = _take(stream, 4)  # crosses into epoch 2
    reads = []
    original = R2N2Views.__getitem__
    R2N2Views.__getitem__ = lambda self, key: reads.append(key) or original(self, key)
    try:
        resumed = r2n2_batches(data, 2, (1, 3), image_size=64, workers=0)
        resumed.seek((1, 2))
        got = _take(iter(resumed), 4)
    finally:
        R2N2Views.__getitem__ = original
    assert _same_batches(got, expected)
    assert len(reads) == sum(b["images"].shape[0] for b in got)
    assert resumed.position == straight.position == (2, 3)


def test_shard_batches_seek_and_views_differ_between_epochs(tmp_path):
    from inprocess_samples import write_dataset

    from voxforge.models.data import shard_batches
    from voxforge.pipeline.config import RunConfig

    data = write_dataset(tmp_path / "data", RunConfig(limit=4, views=3, size=32, points=64, out=str(tmp_path / "x")))
    straight = shard_batches(data, 2, (1, 3), workers=0, seed=3)  # 4 objects: 2 batches per epoch
    stream = iter(straight)
    first_epoch = _take(stream, 2)
    later = _take(stream, 3)
    assert straight.position == (2, 1)
    assert not _same_batches(first_epoch, later[:2])  # another order, other views and colours
    resumed = shard_batches(data, 2, (1, 3), workers=0, seed=3)
    resumed.seek((1, 1))  # mid-epoch
    assert _same_batches(_take(iter(resumed), 2), later[1:])


def test_resume_through_the_shard_loader_continues_exactly(tmp_path):
    """Checkpoint mid-epoch, resume in a new process-like setting (a fresh stream): the next losses are
    those of the uninterrupted run, and the checkpoint holds the stream's position."""
    from inprocess_samples import write_dataset

    from voxforge.models.data import shard_batches
    from voxforge.pipeline.config import RunConfig

    data = write_dataset(tmp_path / "data", RunConfig(limit=4, views=3, size=32, points=64, out=str(tmp_path / "x")))
    config = TrainConfig(arch="3d-gru-1", width=0.125, image_size=32, iterations=5, batch_size=2, views=(1, 3),
                         lr=1e-3, device="cpu", checkpoint_every=3, log_every=1)
    straight = train(config, shard_batches(data, 2, (1, 3), workers=0), tmp_path / "straight", progress=False)
    first = TrainConfig(**{**config.__dict__, "iterations": 3})
    train(first, shard_batches(data, 2, (1, 3), workers=0), tmp_path / "resumed", progress=False)
    assert torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=False)["data_position"] == (1, 1)
    resumed = train(config, shard_batches(data, 2, (1, 3), workers=0), tmp_path / "resumed", resume=True,
                    progress=False)
    assert np.allclose(resumed["losses"], straight["losses"][3:], rtol=1e-5, atol=1e-7)


def test_eval_of_a_split_without_objects_says_so_without_warnings(tiny_run, shared_data, capsys):
    import warnings

    from voxforge.loaders import open_dataset
    from voxforge.pipeline.cli import main

    present = {s["split"] for s in open_dataset(shared_data / "r2n2")}
    empty = next(split for split in ("val", "test", "train") if split not in present)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # numpy's "Mean of empty slice" would raise here
        assert main(["eval", str(tiny_run), "--data", str(shared_data / "r2n2"), "--split", empty,
                     "--device", "cpu", "--gallery", "0"]) == 2
    assert f"no objects in split '{empty}'" in capsys.readouterr().err
