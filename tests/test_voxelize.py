"""Voxel grids, binvox I/O (against real binvox files) and point sampling."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from voxforge.voxelize import (
    BinvoxError, VoxelGrid, VoxelizeError, decode_binvox, encode_binvox, read_binvox, sample_surface, voxelize,
)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


class _Sphere:
    def __init__(self, centre, radius):
        self.centre, self.radius = np.asarray(centre, float), radius

    def mesh(self) -> trimesh.Trimesh:
        sphere = trimesh.creation.icosphere(subdivisions=6, radius=self.radius)
        return sphere.apply_translation(self.centre)

    def line_interval(self, points: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
        """Where the lines ``points + t * e_axis`` run inside: t in [low, high] (low > high: missed)."""
        offset = points - self.centre
        offset[:, axis] = 0
        squared = self.radius**2 - (offset**2).sum(axis=1)
        half = np.where(squared >= 0, np.sqrt(np.maximum(squared, 0)), -np.inf)
        return self.centre[axis] - half, self.centre[axis] + half

    def meets_cubes(self, low: np.ndarray, high: np.ndarray) -> np.ndarray:
        return np.linalg.norm(np.clip(self.centre, low, high) - self.centre, axis=1) <= self.radius


class _Box:
    """An oriented box: ``rotation`` columns are its axes, ``half`` its half extents."""

    def __init__(self, centre, half, rotation=np.eye(3)):
        self.centre, self.half, self.rotation = np.asarray(centre, float), np.asarray(half, float), rotation

    def mesh(self) -> trimesh.Trimesh:
        transform = np.eye(4)
        transform[:3, :3], transform[:3, 3] = self.rotation, self.centre
        return trimesh.creation.box(extents=2 * self.half, transform=transform)

    def line_interval(self, points: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
        start = (points - self.centre) @ self.rotation  # local coordinates
        direction = self.rotation[axis]  # e_axis in local coordinates
        low, high = np.full(len(points), -np.inf), np.full(len(points), np.inf)
        for j in range(3):
            if abs(direction[j]) < 1e-15:
                outside = np.abs(start[:, j]) > self.half[j]
                low[outside], high[outside] = np.inf, -np.inf
                continue
            a, b = (-self.half[j] - start[:, j]) / direction[j], (self.half[j] - start[:, j]) / direction[j]
            low, high = np.maximum(low, np.minimum(a, b)), np.minimum(high, np.maximum(a, b))
        return low + points[:, axis], high + points[:, axis]

    def meets_cubes(self, low: np.ndarray, high: np.ndarray) -> np.ndarray:
        assert np.allclose(self.rotation, np.eye(3)), "cube overlap written for axis-aligned boxes only"
        return np.all((low <= self.centre + self.half) & (high >= self.centre - self.half), axis=1)


_CUBE = ((-0.5, -0.5, -0.5), 1.0)


def _line_sampled_truth(shapes, resolution: int, samples: int) -> np.ndarray:
    """Analytic raster answer: a voxel is solid when one of its sample-line segments runs inside a shape."""
    lines = resolution * samples
    positions = -0.5 + (np.arange(lines) + 0.5) / lines
    truth = np.zeros((resolution,) * 3, bool)
    for axis in range(3):
        b, c = (axis + 1) % 3, (axis + 2) % 3
        points = np.zeros((lines * lines, 3))
        points[:, b], points[:, c] = np.repeat(positions, lines), np.tile(positions, lines)
        hit = np.zeros((lines * lines, resolution), bool)
        cell_low = -0.5 + np.arange(resolution) / resolution
        for shape in shapes:
            low, high = shape.line_interval(points, axis)
            hit |= (low[:, None] <= cell_low + 1 / resolution) & (high[:, None] >= cell_low) & (low <= high)[:, None]
        per_voxel = hit.reshape(resolution, samples, resolution, samples, resolution).any(axis=(1, 3))
        truth |= np.moveaxis(per_voxel, (0, 1, 2), (b, c, axis))
    return truth


def _cube_overlap_truth(shapes, resolution: int) -> np.ndarray:
    """Analytic exact answer: a voxel is solid when its cube meets a shape."""
    index = np.indices((resolution,) * 3).reshape(3, -1).T
    low = -0.5 + index / resolution
    hits = np.any([shape.meets_cubes(low, low + 1 / resolution) for shape in shapes], axis=0)
    return hits.reshape((resolution,) * 3)


def _rotation(axis, angle: float) -> np.ndarray:
    return trimesh.transformations.rotation_matrix(angle, axis)[:3, :3]


_SPHERES = [_Sphere((0.05, -0.02, 0.03), 0.41)]
_BOXES = [_Box((0, 0, 0), (0.3, 0.1, 0.1)), _Box((0.2, 0.1, 0), (0.1, 0.3, 0.1)),
          _Box((-0.2, 0.03, 0.1), (0.1, 0.1, 0.3))]
_ORIENTED = [_Box((0.02, 0.01, 0), (0.35, 0.08, 0.12), _rotation([1, 2, 3], 0.7)),
             _Box((-0.1, 0.05, 0.05), (0.1, 0.3, 0.1), _rotation([0, 1, 1], -0.4)),
             _Sphere((0.15, -0.15, 0.1), 0.18)]


@pytest.mark.parametrize("resolution", [32, 64])
@pytest.mark.parametrize("shapes", [_SPHERES, _BOXES, _ORIENTED], ids=["sphere", "boxes", "oriented-boxes+sphere"])
def test_raster_carve_matches_the_analytic_solid(resolution, shapes):
    mesh = trimesh.util.concatenate([shape.mesh() for shape in shapes])
    grid = voxelize(mesh, resolution, bounds=_CUBE)
    from voxforge.voxelize.grid import default_samples

    truth = _line_sampled_truth(shapes, resolution, default_samples(resolution))
    assert _iou(grid.occupancy, truth) >= 0.99


@pytest.mark.parametrize("resolution", [32, 64])
@pytest.mark.parametrize("shapes", [_SPHERES, _BOXES], ids=["sphere", "boxes"])
def test_exact_carve_matches_the_analytic_solid(resolution, shapes):
    mesh = trimesh.util.concatenate([shape.mesh() for shape in shapes])
    grid = voxelize(mesh, resolution, bounds=_CUBE, surface="exact")
    assert _iou(grid.occupancy, _cube_overlap_truth(shapes, resolution)) >= 0.99


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


def test_written_binvox_reads_back_in_trimesh_and_the_classic_reader_layout():
    """Our files open in trimesh, and follow the strict line order the classic binvox_rw reader assumes."""
    from trimesh.exchange.binvox import load_binvox

    grid = voxelize(trimesh.creation.annulus(r_min=0.2, r_max=0.45, height=0.6), 32)
    data = encode_binvox(grid)
    theirs = load_binvox(__import__("io").BytesIO(data))
    assert np.array_equal(theirs.matrix, grid.occupancy)
    assert np.allclose(theirs.translation, grid.origin, atol=1e-6)  # trimesh: voxel 0's corner
    lines = data.split(b"\n", 5)  # the classic reader: fixed order, then raw (value, count) byte pairs
    assert lines[0] == b"#binvox 1" and lines[1] == b"dim 32 32 32" and lines[4] == b"data"
    assert [float(x) for x in lines[2].split()[1:]] == pytest.approx(grid.origin.tolist(), abs=1e-7)
    assert float(lines[3].split()[1]) == pytest.approx(grid.voxel_size * 32)
    raw = np.frombuffer(lines[5], np.uint8)
    flat = np.repeat(raw[0::2], raw[1::2]).astype(bool)
    assert raw[1::2].min() >= 1 and np.array_equal(flat.reshape(32, 32, 32).transpose(0, 2, 1), grid.occupancy)


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


def _pool(grid: np.ndarray, factor: int) -> np.ndarray:
    n = grid.shape[0] // factor
    return grid.reshape(n, factor, n, factor, n, factor).any(axis=(1, 3, 5))


def test_voxelizer_agrees_with_shapenet_solid_voxels(shared_data):
    """Carve mode against ShapeNetCore v2's own 128^3 solid binvox, compared at 32^3 (reference pooled).

    The references were made from slightly different meshes, so 1.0 is out of reach; the issue asks for
    a median of at least 0.95 and none below 0.92, made directly at 32^3 and pooled from 128^3.
    """
    direct, pooled = [], []
    for reference_path in sorted(shared_data.glob("shapenetcore_v2/*/*/models/model_normalized.solid.binvox")):
        reference = read_binvox(reference_path)
        mesh = trimesh.load(reference_path.with_name("model_normalized.obj"), force="scene", process=False)
        ours = voxelize(mesh, 32, fill="carve")
        assert np.allclose(ours.origin, reference.origin, atol=1e-5)  # same ShapeNet/binvox cube
        target = _pool(reference.occupancy, 4)
        direct.append(_iou(ours.occupancy, target))
        pooled.append(_iou(_pool(voxelize(mesh, 128, fill="carve").occupancy, 4), target))
    for scores in (direct, pooled):
        assert len(scores) >= 6 and min(scores) >= 0.92 and np.median(scores) >= 0.95, (direct, pooled)


def test_exact_surface_is_worse_against_shapenet_than_binvox_rasterization(shared_data):
    """Why ``raster`` is the default: ShapeNet's files were rasterized, not voxelized exactly (binvox -e)."""
    path = next(iter(sorted(shared_data.glob("shapenetcore_v2/03001627/*/models/model_normalized.solid.binvox"))))
    target = _pool(read_binvox(path).occupancy, 4)
    mesh = trimesh.load(path.with_name("model_normalized.obj"), force="scene", process=False)
    raster = _iou(voxelize(mesh, 32).occupancy, target)
    exact = _iou(voxelize(mesh, 32, surface="exact").occupancy, target)
    assert raster > exact + 0.015, (raster, exact)


def _random_triangles(count: int, seed: int) -> tuple[np.ndarray, trimesh.Trimesh]:
    triangles = np.random.default_rng(seed).uniform(0.05, 0.95, size=(count, 3, 3))
    mesh = trimesh.Trimesh(triangles.reshape(-1, 3), np.arange(3 * count).reshape(-1, 3), process=False)
    return triangles, mesh


def test_surface_is_exactly_the_voxels_the_triangles_meet():
    """Exact mode: superset of every voxel holding a surface point; none further than its half-diagonal."""
    triangles, mesh = _random_triangles(40, 0)
    grid = voxelize(triangles, 16, fill="none", bounds=((0, 0, 0), 1.0), surface="exact")
    points, _ = sample_surface(mesh.vertices, mesh.faces, 50000, seed=1)
    index = np.floor(points.astype(np.float64) * 16).astype(int)
    assert grid.occupancy[tuple(index.T)].all()
    _, distance, _ = trimesh.proximity.closest_point(mesh, grid.centers())
    assert distance.max() <= np.sqrt(3) / 2 / 16 + 1e-9


def _sample_line_hits(triangles: np.ndarray, resolution: int) -> np.ndarray:
    """binvox's rasterization spelled out: intersect every axis-parallel centre line with every triangle."""
    hits = np.zeros((resolution,) * 3, bool)
    centres = (np.arange(resolution) + 0.5) / resolution
    for axis in range(3):
        direction = np.zeros(3)
        direction[axis] = 1.0
        for u in centres:
            for v in centres:
                origin = np.zeros(3)
                origin[(axis + 1) % 3], origin[(axis + 2) % 3] = u, v
                for a, b, c in triangles:  # Moeller-Trumbore, the line unbounded along ``axis``
                    e1, e2 = b - a, c - a
                    p = np.cross(direction, e2)
                    det = e1 @ p
                    if abs(det) < 1e-12:
                        continue
                    s = origin - a
                    bu = (s @ p) / det
                    q = np.cross(s, e1)
                    bv = (direction @ q) / det
                    if bu < 0 or bv < 0 or bu + bv > 1:
                        continue
                    depth = (e2 @ q) / det
                    cell = [0, 0, 0]
                    cell[axis] = int(np.floor(depth * resolution))
                    cell[(axis + 1) % 3] = int(np.floor(u * resolution))
                    cell[(axis + 2) % 3] = int(np.floor(v * resolution))
                    if 0 <= cell[axis] < resolution:
                        hits[tuple(cell)] = True
    return hits


def test_raster_surface_is_binvox_line_sampling():
    """One sample line: exactly the voxels where a centre line crosses a face, all within the exact shell."""
    triangles, _ = _random_triangles(6, 2)
    bounds = ((0, 0, 0), 1.0)
    raster = voxelize(triangles, 12, fill="none", bounds=bounds, samples=1).occupancy
    assert np.array_equal(raster, _sample_line_hits(triangles, 12))
    exact = voxelize(triangles, 12, fill="none", bounds=bounds, surface="exact").occupancy
    assert not (raster & ~exact).any() and raster.sum() < exact.sum()


def test_supersampled_raster_equals_the_fine_grid_pooled():
    """32^3 with 4 lines per voxel edge marks exactly the cells holding a marked 128^3 voxel."""
    triangles, _ = _random_triangles(60, 3)
    bounds = ((0, 0, 0), 1.0)
    coarse = voxelize(triangles, 32, fill="none", bounds=bounds, samples=4).occupancy
    fine = voxelize(triangles, 128, fill="none", bounds=bounds, samples=1).occupancy
    assert np.array_equal(coarse, _pool(fine, 4))


def test_wireframe_keeps_triangles_thinner_than_the_sample_lines():
    """A wire far thinner than the line spacing vanishes from the faces pass; -aw keeps every voxel it crosses."""
    wire = trimesh.creation.cylinder(radius=0.002, segment=[[-0.4, 0.013, 0.011], [0.4, 0.3, -0.2]], sections=6)
    bounds = ((-0.5, -0.5, -0.5), 1.0)
    plain = voxelize(wire, 32, fill="none", bounds=bounds, samples=1).occupancy
    traced = voxelize(wire, 32, fill="none", bounds=bounds, samples=1, wireframe=True).occupancy
    exact = voxelize(wire, 32, fill="none", bounds=bounds, surface="exact").occupancy
    axis = np.linspace([-0.4, 0.013, 0.011], [0.4, 0.3, -0.2], 20000)
    on_axis = np.zeros_like(traced)
    on_axis[tuple(np.floor((axis + 0.5) * 32).astype(int).T)] = True
    assert plain.sum() < on_axis.sum() / 2
    assert (traced >= on_axis).all() and not (traced & ~exact).any()


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
