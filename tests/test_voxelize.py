"""Voxel grids, binvox I/O (against real binvox files) and point sampling."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh
from scipy import ndimage

from voxforge.voxelize import (
    BinvoxError, VoxelGrid, VoxelizeError, decode_binvox, encode_binvox, read_binvox, sample_surface, voxelize,
)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def _analytic(grid: VoxelGrid, inside) -> np.ndarray:
    centres = grid.origin + (np.indices(grid.occupancy.shape).reshape(3, -1).T + 0.5) * grid.voxel_size
    return inside(centres).reshape(grid.occupancy.shape)


def _assert_conservative(ours: np.ndarray, truth: np.ndarray) -> None:
    """Every voxel whose centre is inside is occupied, and nothing beyond the 26-neighbours of the solid."""
    assert not (truth & ~ours).any()
    assert not (ours & ~ndimage.binary_dilation(truth, structure=np.ones((3, 3, 3)))).any()
    assert _iou(ours, truth) > 0.7


@pytest.mark.parametrize("resolution", [32, 64])
def test_sphere_matches_the_analytic_solid(resolution):
    sphere = trimesh.creation.icosphere(subdivisions=5, radius=0.5)
    grid = voxelize(sphere, resolution, bounds=((-0.5, -0.5, -0.5), 1.0))
    truth = _analytic(grid, lambda p: np.linalg.norm(p, axis=1) <= 0.5)
    _assert_conservative(grid.occupancy, truth)


def test_union_of_boxes_matches_the_analytic_solid():
    boxes = [((0.6, 0.2, 0.2), (0, 0, 0)), ((0.2, 0.6, 0.2), (0.2, 0.1, 0)), ((0.2, 0.2, 0.6), (-0.2, 0, 0.1))]
    mesh = trimesh.util.concatenate([
        trimesh.creation.box(extents=e, transform=trimesh.transformations.translation_matrix(c)) for e, c in boxes
    ])
    grid = voxelize(mesh, 64, bounds=((-0.5, -0.5, -0.5), 1.0))

    def inside(p):
        return np.any([np.all(np.abs(p - c) <= np.array(e) / 2, axis=1) for e, c in boxes], axis=0)

    _assert_conservative(grid.occupancy, _analytic(grid, inside))


def test_fill_modes_on_a_hollow_shell():
    outer = trimesh.creation.box(extents=[1, 1, 1])
    inner = trimesh.creation.box(extents=[0.5, 0.5, 0.5])
    inner.invert()
    shell = trimesh.util.concatenate([outer, inner])
    surface = voxelize(shell, 32, fill="none")
    carved = voxelize(shell, 32, fill="carve")
    flooded = voxelize(shell, 32, fill="flood")
    assert not surface.occupancy[16, 16, 16]
    assert carved.occupancy[16, 16, 16] and flooded.occupancy[16, 16, 16]  # cavities are kept solid
    assert carved.occupancy.all() and flooded.occupancy.all()
    assert surface.occupancy.sum() < carved.occupancy.sum()


def test_carving_keeps_an_open_cup_hollow_where_visible():
    cup = trimesh.creation.annulus(r_min=0.3, r_max=0.4, height=0.8)
    grid = voxelize(cup, 32, fill="carve")
    assert not grid.occupancy[16, 16, 16]  # seen from above and below through the opening
    assert grid.occupancy[:, :, 16].sum() > 0


def test_thin_parts_are_kept():
    plate = trimesh.creation.box(extents=[1.0, 0.001, 1.0])
    grid = voxelize(plate, 32, fill="none", bounds=((-0.5, -0.5, -0.5), 1.0))
    assert grid.occupancy[:, 16, :].all() or grid.occupancy[:, 15, :].all()


@pytest.mark.parametrize("bad, message", [
    (trimesh.Trimesh(np.zeros((0, 3)), np.zeros((0, 3), int)), "no"),
    (trimesh.Trimesh([[0, 0, 0], [np.nan, 0, 0], [0, 1, 0]], [[0, 1, 2]], process=False), "NaN"),
])
def test_bad_meshes_fail_clearly(bad, message):
    with pytest.raises(VoxelizeError, match=message):
        voxelize(bad, 32)


def test_mesh_outside_bounds_fails_clearly():
    with pytest.raises(VoxelizeError, match="outside"):
        voxelize(trimesh.creation.box(), 32, bounds=((10, 10, 10), 1.0))


def test_binvox_round_trip_keeps_grid_and_frame():
    rng = np.random.default_rng(0)
    grid = VoxelGrid(rng.random((32, 32, 32)) > 0.7, np.array([-0.3, 0.1, 2.0]), 0.025)
    back = decode_binvox(encode_binvox(grid))
    assert np.array_equal(back.occupancy, grid.occupancy)
    assert np.allclose(back.origin, grid.origin) and np.isclose(back.voxel_size, grid.voxel_size)


def test_binvox_axis_order_matches_trimesh(shared_data):
    """x-z-y order on disk, [x, y, z] in memory: compare with trimesh's own binvox reader."""
    from trimesh.exchange.binvox import load_binvox

    path = shared_data / "meshes" / "trimesh" / "chair_model.binvox"
    ours = read_binvox(path)
    with open(path, "rb") as handle:
        theirs = load_binvox(handle)
    assert np.array_equal(ours.occupancy, theirs.matrix)
    # and the file with reordered, commented header lines decodes to the same voxels
    clean = read_binvox(shared_data / "meshes" / "trimesh" / "chair_model.clean_header.binvox")
    assert np.array_equal(ours.occupancy, clean.occupancy)
    # re-encoding a real file gives back the same voxels
    assert np.array_equal(decode_binvox(encode_binvox(ours)).occupancy, ours.occupancy)


def test_reference_binvox_files_read(shared_data):
    grid = read_binvox(shared_data / "binvox_reference" / "dimatura_8a85.binvox")
    assert grid.occupancy.shape == (32, 32, 32) and grid.occupancy.any()
    assert np.allclose(grid.origin, [1131.81, 21.398, -1.6942]) and np.isclose(grid.voxel_size, 30.206 / 32)


def test_voxelizer_agrees_with_shapenet_solid_voxels(shared_data):
    """Carve mode against ShapeNetCore v2's own solid binvox (made from slightly different meshes)."""
    scores = []
    for reference_path in sorted(shared_data.glob("shapenetcore_v2/*/*/models/model_normalized.solid.binvox")):
        reference = read_binvox(reference_path)
        mesh = trimesh.load(reference_path.with_name("model_normalized.obj"), force="scene", process=False)
        ours = voxelize(mesh, 32, fill="carve")
        assert np.allclose(ours.origin, reference.origin, atol=1e-5)  # same ShapeNet/binvox cube
        scores.append(_iou(ours.occupancy, reference.occupancy.reshape(32, 4, 32, 4, 32, 4).any(axis=(1, 3, 5))))
    assert len(scores) >= 6 and min(scores) >= 0.9 and np.median(scores) >= 0.91, scores


def test_surface_is_exactly_the_voxels_the_triangles_meet():
    """Superset of every voxel holding a surface point; no voxel further than its half-diagonal away."""
    rng = np.random.default_rng(0)
    triangles = rng.uniform(0.05, 0.95, size=(40, 3, 3))
    grid = voxelize(triangles, 16, fill="none", bounds=((0, 0, 0), 1.0))
    mesh = trimesh.Trimesh(triangles.reshape(-1, 3), np.arange(120).reshape(-1, 3), process=False)
    points, _ = sample_surface(mesh.vertices, mesh.faces, 50000, seed=1)
    index = np.floor(points.astype(np.float64) * 16).astype(int)
    assert grid.occupancy[tuple(index.T)].all()
    _, distance, _ = trimesh.proximity.closest_point(mesh, grid.centers())
    assert distance.max() <= np.sqrt(3) / 2 / 16 + 1e-9


def test_dilated_carving_keeps_one_more_voxel_in_front_of_the_surface():
    """An open box: the inside is seen only from above, so dilated carving keeps the layer on its floor."""
    parts = [((1.0, 0.1, 1.0), (0, -0.45, 0)), ((0.1, 1.0, 1.0), (-0.45, 0, 0)), ((0.1, 1.0, 1.0), (0.45, 0, 0)),
             ((1.0, 1.0, 0.1), (0, 0, -0.45)), ((1.0, 1.0, 0.1), (0, 0, 0.45))]
    box = trimesh.util.concatenate([
        trimesh.creation.box(extents=e, transform=trimesh.transformations.translation_matrix(c)) for e, c in parts
    ])
    bounds = ((-0.5, -0.5, -0.5), 1.0)
    carved = voxelize(box, 32, fill="carve", bounds=bounds).occupancy
    dilated = voxelize(box, 32, fill="carve-dilated", bounds=bounds).occupancy
    floor_top = int(np.ceil(0.1 * 32)) - 1  # highest voxel layer the floor meets
    assert not carved[16, floor_top + 1, 16] and dilated[16, floor_top + 1, 16]
    assert not dilated[16, floor_top + 2, 16] and (dilated >= carved).all()


def test_truncated_binvox_is_rejected():
    data = encode_binvox(VoxelGrid(np.ones((8, 8, 8), bool), np.zeros(3), 1.0))
    with pytest.raises(BinvoxError, match="truncated"):
        decode_binvox(data[:-2])
    with pytest.raises(BinvoxError):
        decode_binvox(b"hello")


def test_surface_sampling_is_seeded_area_weighted_and_on_the_surface():
    box = trimesh.creation.box(extents=[2.0, 1.0, 1.0])
    a, normals = sample_surface(box.vertices, box.faces, 20000, seed=3)
    b, _ = sample_surface(box.vertices, box.faces, 20000, seed=3)
    assert np.array_equal(a, b) and a.dtype == np.float32 and a.shape == (20000, 3)
    assert np.allclose(np.abs(a).max(axis=0), [1.0, 0.5, 0.5], atol=1e-6)
    assert np.allclose(np.linalg.norm(normals, axis=1), 1, atol=1e-5)
    on_big_faces = np.isclose(np.abs(a[:, 1]), 0.5).mean()  # two 2x1 faces of total area 10
    assert abs(on_big_faces - 4 / 10) < 0.02


def _carve_by_rays(surface: np.ndarray, dilated: bool) -> np.ndarray:
    """The definition, spelled out: march the six axis rays in from outside (slow, for checking)."""
    exterior = np.zeros_like(surface)
    for axis in range(3):
        for grid, flip in ((surface, False), (np.flip(surface, axis), True)):
            blocked = grid.copy()
            if dilated:  # the ray stops one voxel before the surface
                ahead = [slice(None)] * 3
                behind = [slice(None)] * 3
                ahead[axis], behind[axis] = slice(1, None), slice(None, -1)
                blocked[tuple(behind)] |= grid[tuple(ahead)]
            seen = ~np.logical_or.accumulate(blocked, axis=axis)
            exterior |= np.flip(seen, axis) if flip else seen
    return surface | ~exterior


@pytest.mark.parametrize("density", [0.002, 0.02, 0.2])
@pytest.mark.parametrize("dilated", [False, True])
def test_carving_matches_its_definition(density, dilated):
    from voxforge.voxelize.grid import carve

    surface = np.random.default_rng(5).random((24, 20, 28)) < density
    assert np.array_equal(carve(surface, dilated), _carve_by_rays(surface, dilated))


def test_even_sampling_spreads_points_out():
    from scipy.spatial import cKDTree

    sphere = trimesh.creation.icosphere(subdivisions=4)
    random_points, _ = sample_surface(sphere.vertices, sphere.faces, 1024, seed=0)
    even_points, normals = sample_surface(sphere.vertices, sphere.faces, 1024, seed=0, even=True)
    again, _ = sample_surface(sphere.vertices, sphere.faces, 1024, seed=0, even=True)
    assert np.array_equal(even_points, again) and even_points.shape == normals.shape == (1024, 3)
    assert np.allclose(np.linalg.norm(even_points, axis=1), 1.0, atol=0.02)
    gap = lambda p: cKDTree(p).query(p, k=2)[0][:, 1]  # noqa: E731 - distance to the nearest other point
    assert gap(even_points).min() > 3 * gap(random_points).min()
    assert gap(even_points).std() < gap(random_points).std()


def test_degenerate_faces_do_not_break_the_grid():
    box = trimesh.creation.box(extents=[1, 1, 1])
    degenerate = np.repeat(box.vertices[:1][None], 5, axis=0).repeat(3, axis=1)  # point-like triangles
    triangles = np.concatenate([box.triangles, degenerate])
    assert np.array_equal(voxelize(triangles, 16).occupancy, voxelize(box, 16).occupancy)
    with pytest.raises(VoxelizeError, match="zero extent"):
        voxelize(degenerate, 16)
