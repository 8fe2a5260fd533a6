"""Dataset presets (r2n2, softras, pointcloud), the cameras and points they set, and the SoftRas layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
import trimesh
from conftest import projection_hits
from inprocess_samples import make_samples
from scipy import ndimage

from voxforge.loaders import open_dataset, softras
from voxforge.loaders.softras import SoftRasDataset, export_softras, resample_to_softras_grid
from voxforge.pipeline.cli import build_parser, main
from voxforge.pipeline.config import RunConfig
from voxforge.pipeline.presets import PRESETS, apply_preset, explicit_run_options
from voxforge.renderers.cameras import CameraRanges, sample_cameras
from voxforge.voxelize import voxelize
from voxforge.voxelize.points import farthest_point_indices, farthest_points_first


def _captured_config(monkeypatch, argv: list[str]) -> RunConfig:
    """The RunConfig ``pipeline run ARGV`` would run with (the run itself is replaced)."""
    import voxforge.pipeline.run as run_module

    captured = {}

    def fake_run(config):
        captured["config"] = config
        raise ValueError("stop here")

    monkeypatch.setattr(run_module, "run", fake_run)
    assert main(argv) == 2
    return captured["config"]


def test_preset_fills_settings_and_explicit_options_win(monkeypatch):
    config = _captured_config(monkeypatch, ["run", "procedural", "--preset", "r2n2", "--size=128", "--res", "64"])
    assert config.preset == "r2n2" and config.size == 128 and config.resolution == 64  # typed: kept
    assert (config.views, config.fill, config.wireframe, config.voxel_samples) == (24, "carve-dilated", True, 1)
    assert config.elevation == (25.0, 30.0) and not config.keep_in_frame and config.focal == 2.1875
    config = _captured_config(monkeypatch, ["run", "procedural", "--preset", "softras", "--keep-in-frame"])
    assert (config.size, config.views, config.camera_layout, config.keep_in_frame) == (64, 24, "orbit", True)
    assert np.isclose(config.voxel_extent, 32 / 31) and np.isclose(config.focal, 1 / np.tan(np.radians(15)))
    config = _captured_config(monkeypatch, ["run", "procedural", "--preset", "pointcloud", "--points", "4096"])
    assert (config.points, config.fps_prefix, config.size) == (4096, 1024, 137)
    assert _captured_config(monkeypatch, ["run", "procedural"]).preset is None


def test_every_preset_value_is_a_run_option_and_a_config_field():
    fields = RunConfig.__dataclass_fields__
    assert explicit_run_options(build_parser(), ["run", "x"]) == {"source"}  # defaults are not "given"
    run_dests = {action.dest for action in next(a for a in build_parser()._actions if a.dest == "command")
                 .choices["run"]._actions}
    for preset in PRESETS.values():
        assert set(preset.values) <= set(fields) and set(preset.values) <= run_dests, preset.name
        apply_preset(RunConfig(), preset.name).validate()


def test_orbit_layout_and_exact_distances():
    rng = np.random.default_rng(0)
    ranges = CameraRanges(azimuth_deg=(0.0, -360.0), elevation_deg=(30.0, 30.0), distance=(2.732, 2.732),
                          focal_normalized=softras.FOCAL_NORMALIZED, layout="orbit", keep_in_frame=False)
    cameras = sample_cameras(24, 64, rng, ranges)
    assert np.allclose(cameras.azimuth, np.mod(-15.0 * np.arange(24), 360.0))
    assert np.allclose(cameras.elevation, 30.0) and np.allclose(cameras.distance, 2.732)
    r2n2 = dict(distance=(0.65 * 1.75, 0.95 * 1.75))
    exact = sample_cameras(500, 137, np.random.default_rng(1), CameraRanges(**r2n2, keep_in_frame=False))
    raised = sample_cameras(500, 137, np.random.default_rng(1), CameraRanges(**r2n2))
    assert exact.distance.min() < 1.15 and exact.distance.max() <= 1.6625  # the published range, untouched
    assert (raised.distance > exact.distance).any() and raised.distance.min() > 1.19


def test_fps_prefix_keeps_the_cloud_and_puts_an_even_subset_first():
    rng = np.random.default_rng(0)
    points = rng.normal(size=(4000, 3)).astype(np.float32)
    normals = points / np.linalg.norm(points, axis=1, keepdims=True)
    reordered, moved_normals = farthest_points_first(points, normals, 256)
    assert sorted(map(tuple, reordered)) == sorted(map(tuple, points))  # same cloud, new order
    assert np.allclose(moved_normals, reordered / np.linalg.norm(reordered, axis=1, keepdims=True), atol=1e-6)
    assert np.array_equal(reordered[:256], points[farthest_point_indices(points.astype(np.float64), 256, 0)])

    def spacing(cloud):
        distances = np.linalg.norm(cloud[:, None] - cloud[None], axis=-1) + np.eye(len(cloud)) * 1e9
        return distances.min()

    assert spacing(reordered[:256]) > 3 * spacing(points[:256])


@pytest.fixture(scope="module")
def asymmetric_folder(tmp_path_factory):
    """A mesh without mirror symmetry: a mirrored or rotated convention cannot pass the checks by luck."""
    folder = tmp_path_factory.mktemp("asymmetric")
    (folder / "thing").mkdir()
    bars = [trimesh.creation.box(extents) for extents in ((0.6, 0.1, 0.1), (0.1, 0.4, 0.1), (0.1, 0.1, 0.3))]
    for bar, offset in zip(bars, ((0.3, 0, 0), (0, 0.2, 0), (0, 0, -0.15))):
        bar.apply_translation(offset)
    trimesh.util.concatenate(bars).export(folder / "thing" / "bars.obj")
    return folder


@pytest.fixture(scope="module")
def softras_export(asymmetric_folder, tmp_path_factory):
    config = apply_preset(RunConfig(source="local", path=str(asymmetric_folder), points=512), "softras")
    samples = make_samples(config)
    out = tmp_path_factory.mktemp("softras")
    assert export_softras(samples, out, (255, 255, 255)) == {"thing_test": 0, "thing_train": 1, "thing_val": 0}
    return samples, out


def softras_pixels(points: np.ndarray, view: int, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(column, row) of SoftRas-frame points in view k, spelled out from SoftRas's code: the eye from
    ``get_points_from_angles(2.732, 30, -15 k)``, ``look_at`` (x = up x forward), ``perspective`` with a
    15-degree viewing angle, and the rasterizer's pixel grid (top row at +y)."""
    distance, elevation, azimuth = 2.732, np.radians(30.0), np.radians(-15.0 * view)
    eye = distance * np.array([np.cos(elevation) * np.sin(azimuth), np.sin(elevation),
                               -np.cos(elevation) * np.cos(azimuth)])
    z_axis = -eye / np.linalg.norm(eye)
    x_axis = np.cross([0.0, 1.0, 0.0], z_axis)
    x_axis /= np.linalg.norm(x_axis)
    y_axis = np.cross(z_axis, x_axis)
    camera = (points - eye) @ np.stack([x_axis, y_axis, z_axis]).T
    width = np.tan(np.radians(15.0))
    x, y = camera[:, 0] / camera[:, 2] / width, camera[:, 1] / camera[:, 2] / width
    return (x * size + size - 1) / 2, size - 1 - (y * size + size - 1) / 2


def _file_voxels_in_softras_frame(voxels: np.ndarray, transpose=True, flip_z=True) -> np.ndarray:
    """Centres of the file's voxels as SoftRas's ``evaluate_iou`` reads them: file [i, j, k] is
    voxelization index (x=j, y=i, z=31-k), voxel index n covering [(n - 16) / 31, (n - 15) / 31)."""
    i, j, k = np.argwhere(voxels).T
    x, y = (j, i) if transpose else (i, j)
    z = 31 - k if flip_z else k
    return (np.stack([x, y, z], axis=1) + 0.5 - 16.0) / 31.0


def _mask_score(points, alphas, view_to_azimuth_view=lambda v: v) -> float:
    scores = []
    for view in range(24):
        column, row = softras_pixels(points, view_to_azimuth_view(view))
        mask = ndimage.binary_dilation(alphas[view] > 0, iterations=1)
        column, row = np.rint(column).astype(int), np.rint(row).astype(int)
        inside = (column >= 0) & (column < 64) & (row >= 0) & (row < 64)
        hits = np.zeros(len(points), bool)
        hits[inside] = mask[row[inside], column[inside]]
        scores.append(hits.mean())
    return float(np.min(scores))


def test_softras_files_have_the_published_keys_shapes_and_dtypes(softras_export):
    _, out = softras_export
    with np.load(out / "thing_train_images.npz") as images, np.load(out / "thing_train_voxels.npz") as voxels:
        assert images.files == ["arr_0"] and voxels.files == ["arr_0"]
        assert images["arr_0"].shape == (1, 24, 4, 64, 64) and images["arr_0"].dtype == np.uint8
        assert voxels["arr_0"].shape == (1, 32, 32, 32) and voxels["arr_0"].dtype == np.bool_
        rgba = images["arr_0"][0]
    assert (rgba[:, 3, 0, :] == 0).all() and (rgba[:, :3][np.broadcast_to(rgba[:, 3:] == 0, rgba[:, :3].shape)] == 0).all()
    assert (out / "thing_train_ids.txt").read_text().splitlines() == ["thing/bars.obj"]
    for split in ("val", "test"):  # SoftRas's scripts open every class's val and test files: empty, not absent
        with np.load(out / f"thing_{split}_images.npz") as images, np.load(out / f"thing_{split}_voxels.npz") as voxels:
            assert images["arr_0"].shape == (0, 24, 4, 64, 64) and images["arr_0"].dtype == np.uint8
            assert voxels["arr_0"].shape == (0, 32, 32, 32) and voxels["arr_0"].dtype == np.bool_
        assert (out / f"thing_{split}_ids.txt").read_text() == ""


def test_softras_voxels_land_on_softras_silhouettes_in_every_view(softras_export):
    """The exported voxels, read and projected the way SoftRas's own code does, cover the exported masks."""
    _, out = softras_export
    rgba = np.load(out / "thing_train_images.npz")["arr_0"][0]
    voxels = np.load(out / "thing_train_voxels.npz")["arr_0"][0]
    assert _mask_score(_file_voxels_in_softras_frame(voxels), rgba[:, 3]) >= 0.98
    wrong = {
        "azimuth +15k": _mask_score(_file_voxels_in_softras_frame(voxels), rgba[:, 3], lambda v: -v),
        "no transpose": _mask_score(_file_voxels_in_softras_frame(voxels, transpose=False), rgba[:, 3]),
        "no z flip": _mask_score(_file_voxels_in_softras_frame(voxels, flip_z=False), rgba[:, 3]),
    }
    assert max(wrong.values()) < 0.9, wrong


def test_softras_layout_reads_back_as_the_same_samples(softras_export):
    samples, out = softras_export
    dataset = open_dataset(out)
    assert isinstance(dataset, SoftRasDataset)
    (back,), original = list(dataset), samples[0]
    assert back["id"] == original["id"] and back["split"] == "train"
    assert np.allclose(back["world_to_camera"], original["world_to_camera"], atol=1e-9)
    assert np.allclose(back["K"], original["K"]) and np.allclose(back["azimuth"], original["azimuth"])
    assert np.array_equal(back["voxels"], original["voxels"]) and np.array_equal(back["alphas"], original["alphas"])
    assert np.allclose(back["voxel_origin"], original["voxel_origin"]) and np.isclose(back["voxel_size"], original["voxel_size"])
    assert np.abs(back["images"].astype(int) - original["images"]).max() <= 2
    for view in (0, 7):  # voxforge's own projection property holds on the read-back sample
        centres = back["voxel_origin"] + (np.argwhere(back["voxels"]) + 0.5) * back["voxel_size"]
        hits = projection_hits(centres, back["K"][view], back["world_to_camera"][view], back["alphas"][view] > 0)
        assert hits.mean() >= 0.98
    assert list(open_dataset(out, split="test")) == []


def test_softras_export_refuses_other_cameras_and_resamples_other_grids(tmp_path):
    (sample,) = make_samples(RunConfig(limit=1, views=4, size=64, points=256, categories=["mug"]))
    with pytest.raises(ValueError, match="--preset softras"):
        export_softras([sample], tmp_path)
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.4)
    own = voxelize(sphere, 32, bounds=(np.full(3, -0.4), 0.8))  # the object's cube, not SoftRas's
    fixed = voxelize(sphere, 32, bounds=(np.full(3, softras.VOXEL_ORIGIN), softras.VOXEL_EXTENT))
    resampled = resample_to_softras_grid(own.occupancy, own.origin, own.voxel_size)
    assert (resampled & fixed.occupancy).sum() / (resampled | fixed.occupancy).sum() > 0.85
    assert np.array_equal(resample_to_softras_grid(fixed.occupancy, fixed.origin, fixed.voxel_size), fixed.occupancy)


def test_r2n2_preset_exports_rgba_renders_and_shapenetvox32_voxels(tmp_path):
    from PIL import Image

    from voxforge.loaders.r2n2 import export_r2n2, read_metadata
    from voxforge.pipeline.stages import load_stage
    from voxforge.pipeline.sources import create_source

    config = apply_preset(RunConfig(limit=1, points=256, categories=["chair"]), "r2n2")
    (sample,) = make_samples(config)
    export_r2n2([sample], tmp_path, (255, 255, 255))
    (rendering,) = list((tmp_path / "ShapeNetRendering").glob("*/*/rendering"))
    metadata = read_metadata(rendering / "rendering_metadata.txt")
    assert metadata.shape == (24, 5) and (metadata[:, 2] == 0).all() and (metadata[:, 4] == 25).all()
    assert (metadata[:, 1] >= 25).all() and (metadata[:, 1] <= 30).all()
    assert (metadata[:, 3] >= 0.65).all() and (metadata[:, 3] <= 0.95).all()  # distances not raised
    png = Image.open(rendering / "00.png")
    assert png.mode == "RGBA" and png.size == (137, 137) and np.asarray(png)[0, 0, 3] == 0  # transparent background
    record = create_source("procedural").select(["chair"], 1)[0]
    triangles = load_stage(record)["vertices"][load_stage(record)["faces"]]
    from voxforge.voxelize.grid import centered_bounds

    expected = voxelize(triangles, 32, fill="carve-dilated", bounds=centered_bounds(triangles), wireframe=True, samples=1)
    assert np.array_equal(sample["voxels"], expected.occupancy)  # binvox -d 32 -cb -dc -aw
    (back,) = list(open_dataset(tmp_path))
    assert np.array_equal(back["voxels"], sample["voxels"]) and np.allclose(back["K"], sample["K"])


@pytest.mark.slow
def test_pipeline_run_with_the_softras_preset_exports_and_reads_back(tmp_path, ray_local):
    data, out = tmp_path / "data", tmp_path / "softras"
    assert main(["run", "procedural", "--preset", "softras", "--limit", "2", "--points", "512", "--out", str(data),
                 "--workers", "2", "--no-progress", "--splits", "1,0,0"]) == 0
    info = json.loads((data / "dataset.json").read_text())
    assert info["config"]["preset"] == "softras" and info["config"]["camera_layout"] == "orbit"
    assert main(["export", str(data), "--layout", "softras", "--out", str(out)]) == 0
    originals = {s["id"]: s for s in open_dataset(data)}
    back = list(open_dataset(out))
    assert len(back) == 2
    for sample in back:
        assert np.array_equal(sample["voxels"], originals[sample["id"]]["voxels"])
        assert np.array_equal(sample["alphas"], originals[sample["id"]]["alphas"])


def test_r2n2_export_refuses_cameras_its_metadata_cannot_hold(tmp_path):
    """3D-R2N2's metadata rows carry no focal: a dataset made with --focal 3.0 would be re-read with the
    fixed 2.1875 (70 px instead of 96 px at 64 px), so the export refuses it before writing."""
    from voxforge.loaders.r2n2 import export_r2n2

    (sample,) = make_samples(RunConfig(limit=1, views=2, size=64, points=256, categories=["chair"], focal=3.0))
    with pytest.raises(ValueError, match=r"focal 3\.\.3 .* assume 2\.1875"):
        export_r2n2([sample], tmp_path / "r2n2")
    assert not (tmp_path / "r2n2").exists()
