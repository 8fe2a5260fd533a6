"""Soft Rasterizer's silhouettes (voxforge.models.softras): the formula and its units against a brute-force
reference, the hard limit against pyrender's masks of real ShapeNet meshes on voxforge's cameras, gradients
against finite differences, exact tiling within the memory bound, degenerate and behind-the-camera faces,
the icosphere template, and CPU/CUDA agreement."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import trimesh
from conftest import gpu_only

from voxforge.models.softras import icosahedron, icosphere, rasterizer, soft_silhouettes
from voxforge.pipeline.sources import ObjectRecord
from voxforge.pipeline.stages import load_stage
from voxforge.renderers import sample_lighting
from voxforge.renderers.cameras import (
    CameraRanges,
    camera_position,
    intrinsics,
    look_at,
    project,
    sample_cameras,
)


@pytest.fixture(autouse=True)
def one_thread():
    """These tensors are small: a second intra-op thread only adds OpenMP barriers, which cost 10x the
    whole test on a loaded 2-core machine (measured: the gradcheck 2.5 s on one thread, 29 s on two)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


CHAIRS = ["shapenetcore_v2/03001627/341fcdd8a40a2612456cbf78e1e89022/models/model_normalized.obj",  # 9552 faces
          "shapenetcore_v2/03001627/360b02dcfeabe768492d9da2668ec34c/models/model_normalized.obj"]  # 2512 faces


def orbit_cameras(views: int, size: int, distance: float = 2.0, elevation: float = 25.0):
    K = np.stack([intrinsics(size, 2.1875)] * views)
    world_to_camera = np.stack([look_at(camera_position(360.0 * v / views + 10.0, elevation, distance))
                                for v in range(views)])
    return torch.from_numpy(K), torch.from_numpy(world_to_camera)


def sphere_batch(level: int, batch: int, dtype=torch.float64, radius: float = 0.5, noise: float = 0.03, seed: int = 0):
    vertices, faces = icosphere(level, radius)
    generator = torch.Generator().manual_seed(seed)
    base = torch.from_numpy(vertices).to(dtype)
    jitter = noise * torch.randn(batch, *base.shape, generator=generator, dtype=dtype)
    return base[None] + jitter, torch.from_numpy(faces)


def reference_silhouettes(vertices, faces, K, world_to_camera, size, sigma) -> np.ndarray:
    """Brute force, float64, straight from the definition: pixel coordinates from voxforge's ``project``,
    NDC = (2 u + 1) / size - 1, d = distance to the nearest point of the triangle's three edge segments,
    inside by point-in-triangle, D = sigmoid(+-d^2 / sigma), A = 1 - prod(1 - D)."""
    rows, columns = np.mgrid[:size, :size]
    centres = np.stack([(2.0 * columns + 1.0) / size - 1.0, (2.0 * rows + 1.0) / size - 1.0], -1).reshape(-1, 2)
    images = []
    for item in range(len(vertices)):
        uv, _ = project(np.asarray(vertices[item], float), np.asarray(K[item]), np.asarray(world_to_camera[item]))
        ndc = (2.0 * uv + 1.0) / size - 1.0
        uncovered = np.ones(len(centres))
        for face in np.asarray(faces[item] if np.ndim(faces) == 3 else faces):
            a, b, c = ndc[face]
            distances, sides = [], []
            for start, end in ((a, b), (b, c), (c, a)):
                edge, offset = end - start, centres - start
                t = np.clip(offset @ edge / (edge @ edge), 0.0, 1.0)
                distances.append(np.linalg.norm(offset - t[:, None] * edge, axis=1))
                sides.append(edge[0] * offset[:, 1] - edge[1] * offset[:, 0])
            sides = np.stack(sides)
            inside = (sides > 0).all(axis=0) | (sides < 0).all(axis=0)
            squared = np.min(distances, axis=0) ** 2
            uncovered *= 1.0 - 1.0 / (1.0 + np.exp(-np.where(inside, 1.0, -1.0) * squared / sigma))
        images.append((1.0 - uncovered).reshape(size, size))
    return np.stack(images)


def test_matches_the_definition_in_ndc_units():
    """Random triangles (overlapping, some partly off-screen), two items with their own faces: the
    rasterizer equals the brute-force definition, so sigma is in SoftRas's NDC units."""
    rng = np.random.default_rng(1)
    size, sigma = 20, 3e-3
    vertices = torch.from_numpy(rng.uniform(-0.6, 0.6, size=(2, 9, 3)))
    faces = torch.from_numpy(np.stack([rng.permutation(9)[:9].reshape(3, 3) for _ in range(2)]))
    K, world_to_camera = orbit_cameras(2, size)
    expected = reference_silhouettes(vertices.numpy(), faces.numpy(), K.numpy(), world_to_camera.numpy(), size, sigma)
    actual = soft_silhouettes(vertices, faces, K, world_to_camera, size, sigma, cull=False)
    assert actual.shape == (2, size, size) and actual.dtype == torch.float64
    np.testing.assert_allclose(actual.numpy(), expected, rtol=0, atol=1e-12)
    culled = soft_silhouettes(vertices, faces, K, world_to_camera, size, sigma)  # culling: D < 1e-8 dropped
    np.testing.assert_allclose(culled.numpy(), expected, rtol=0, atol=3 * 1e-8)


def test_one_pixel_by_hand():
    """A camera at the origin looking down +z with focal 1 (NDC = x / z): the pixel centre 0.15 NDC left of
    a vertical edge is covered by sigmoid(-0.15**2 / sigma), the one 0.05 right of it, inside, by
    sigmoid(+0.05**2 / sigma); row 0 is the top (OpenCV: +y is down)."""
    size, sigma = 20, 1e-2
    vertices = torch.tensor([[[0.1, -0.9, 1.0], [0.1, 0.9, 1.0], [0.95, 0.0, 1.0]]], dtype=torch.float64)
    K = torch.from_numpy(intrinsics(size, 1.0))[None]
    world_to_camera = torch.eye(3, 4, dtype=torch.float64)[None]
    image = soft_silhouettes(vertices, torch.tensor([[0, 1, 2]]), K, world_to_camera, size, sigma)[0]
    # column 9 is at x = -0.05, column 11 at +0.15; row 10 at y = +0.05
    assert image[10, 9].item() == pytest.approx(1.0 / (1.0 + np.exp(0.15 ** 2 / sigma)), rel=1e-12)
    assert image[10, 11].item() == pytest.approx(1.0 / (1.0 + np.exp(-0.05 ** 2 / sigma)), rel=1e-12)
    top = soft_silhouettes(vertices * torch.tensor([1.0, 0.5, 1.0]) - torch.tensor([0.0, 0.45, 0.0]),
                           torch.tensor([[0, 1, 2]]), K, world_to_camera, size, 1e-9)[0]
    assert (top[:10] >= 0.5).any() and not (top[10:] >= 0.5).any()  # moved up (-y): in the upper half


@pytest.mark.parametrize("mesh", CHAIRS, ids=["chair-9552", "chair-2512"])
def test_sharp_limit_matches_pyrender_masks(shared_data, pyrender_no_aa, mesh):
    """sigma -> 0 on voxforge's cameras: thresholded at 0.5, the silhouettes are pyrender's masks (alpha >=
    128, no anti-aliasing) at 127 px, IoU >= 0.99 per view (measured: 0 to 2 pixels differ per view).

    sigma = 1e-9 NDC^2 (3e-5 NDC, 0.002 px): at 1e-7 the aggregate already marks 5-17 extra pixels per
    view of these chairs (IoU down to 0.989), centres within a few hundredths of a pixel of the edges of
    several small faces at once, whose D ~ 0.5 each or-aggregate above 0.5; that is the formula, not the
    cameras (at 1e-11 in float64 it is exactly the point-in-triangle coverage of the pixel centres)."""
    loaded = load_stage(ObjectRecord(object_id="chair", category="chair", source="local", uri=str(shared_data / mesh)))
    cameras = sample_cameras(4, 127, np.random.default_rng(0), CameraRanges(), object_radius=0.5)
    masks = pyrender_no_aa.render(loaded["scene"], cameras, sample_lighting(4, np.random.default_rng(0))).alpha >= 128
    vertices = torch.from_numpy(np.asarray(loaded["vertices"])).float()
    faces = torch.from_numpy(np.asarray(loaded["faces"])).long()
    started = time.perf_counter()
    with torch.no_grad():
        soft = soft_silhouettes(vertices[None].expand(4, -1, -1), faces, cameras.K, cameras.world_to_camera, 127,
                                sigma=1e-9)
    elapsed = time.perf_counter() - started
    hard = soft.numpy() >= 0.5
    for view in range(4):
        iou = (hard[view] & masks[view]).sum() / (hard[view] | masks[view]).sum()
        assert iou >= 0.99, (view, iou)
    print(f"{len(faces)} faces, 4 views at 127 px: {elapsed:.2f} s")


@pytest.mark.parametrize("recompute", [True, False])
def test_gradients_match_finite_differences(recompute):
    """float64 gradcheck w.r.t. the vertices of a jittered level-0 icosphere, two views, 8 px, sigma 1e-2
    (smooth); every face evaluated at every pixel (cull=False: the exact, smooth function). The full check
    (one backward per output pixel) with recompute, the random-projection one without."""
    vertices, faces = sphere_batch(0, 2, noise=0.05, seed=3)
    K, world_to_camera = orbit_cameras(2, 8)
    vertices.requires_grad_(True)

    def render(points):
        return soft_silhouettes(points, faces, K, world_to_camera, 8, 1e-2, cull=False, recompute=recompute)

    assert torch.autograd.gradcheck(render, (vertices,), eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=not recompute)


def test_recompute_is_first_order_only():
    vertices, faces = sphere_batch(0, 1, seed=7)
    K, world_to_camera = orbit_cameras(1, 8)
    grads = []
    for recompute in (True, False):
        points = vertices.clone().requires_grad_(True)
        image = soft_silhouettes(points, faces, K, world_to_camera, 8, 1e-2, recompute=recompute)
        (gradient,) = torch.autograd.grad(image.sum(), points, create_graph=True)
        grads.append(gradient.detach())
        if recompute:
            with pytest.raises(RuntimeError, match="once_differentiable|does not require grad"):
                gradient.sum().backward()
        else:
            gradient.sum().backward()  # keeping the intermediates, it is twice differentiable
            assert torch.isfinite(points.grad).all()
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-12, atol=1e-14)


def test_culled_gradients_agree():
    vertices, faces = sphere_batch(1, 2, seed=4)
    K, world_to_camera = orbit_cameras(2, 16)
    weights = torch.rand(2, 16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    grads = []
    for cull in (True, False):
        points = vertices.clone().requires_grad_(True)
        (soft_silhouettes(points, faces, K, world_to_camera, 16, 1e-3, cull=cull) * weights).sum().backward()
        grads.append(points.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-6, atol=1e-6)


def test_tiling_is_exact_and_chunks_stay_within_the_bound(monkeypatch):
    """Many small tiles and chunks give the one-tile result and gradients (up to summation order), and no
    chunk holds more than max_pairs + tile**2 (pixel, face) pairs."""
    vertices, faces = sphere_batch(2, 2, seed=5)
    K, world_to_camera = orbit_cameras(2, 32)
    weights = torch.rand(2, 32, 32, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    chunk_pairs = []
    original = rasterizer._log_uncovered

    def spy(triangles, units, *rest):
        chunk_pairs.append(int(units[:, 5].sum()))
        return original(triangles, units, *rest)

    monkeypatch.setattr(rasterizer, "_log_uncovered", spy)
    results = []
    for tile, max_pairs in ((32, 1 << 30), (3, 2000)):
        chunk_pairs.clear()
        points = vertices.clone().requires_grad_(True)
        image = soft_silhouettes(points, faces, K, world_to_camera, 32, 1e-3, tile=tile, max_pairs=max_pairs)
        (image * weights).sum().backward()
        results.append((image.detach(), points.grad))
        assert max(chunk_pairs) <= max_pairs + tile ** 2
    assert len(chunk_pairs) > 20  # the small tiles did split the work (forward and recomputation)
    torch.testing.assert_close(results[1][0], results[0][0], rtol=0, atol=1e-13)
    torch.testing.assert_close(results[1][1], results[0][1], rtol=1e-10, atol=1e-12)


def test_degenerate_faces_and_faces_behind_the_camera():
    """Zero-area faces (a repeated index, collinear points, one point) stay finite in value and gradient;
    faces with a vertex at or behind the near plane are left out (values as without them, no NaN from the
    vertex at the camera centre, zero gradient for vertices only they use)."""
    size = 16
    K, world_to_camera = orbit_cameras(1, size)
    eye = torch.from_numpy(camera_position(10.0, 25.0, 2.0))
    behind = 2.5 * eye  # 3 behind the camera
    points = torch.stack([
        torch.tensor([-0.3, -0.2, 0.0]), torch.tensor([0.3, -0.2, 0.0]), torch.tensor([0.0, 0.3, 0.1]),
        torch.tensor([0.1, 0.1, 0.1]), torch.tensor([0.2, 0.2, 0.2]), torch.tensor([0.3, 0.3, 0.3]),  # collinear
        eye.float(), behind.float(),
    ]).double()[None]
    good = torch.tensor([[0, 1, 2]])
    degenerate = torch.tensor([[0, 0, 1], [3, 4, 5], [2, 2, 2]])
    hidden = torch.tensor([[0, 1, 6], [1, 2, 7]])
    for sigma in (1e-2, 1e-4, 1e-9):
        variable = points.clone().requires_grad_(True)
        image = soft_silhouettes(variable, torch.cat([good, degenerate, hidden]), K, world_to_camera, size, sigma)
        image.sum().backward()
        assert torch.isfinite(image).all() and torch.isfinite(variable.grad).all()
        assert (variable.grad[0, 6:] == 0).all()
        assert ((image >= 0) & (image <= 1)).all()
        without = soft_silhouettes(points, torch.cat([good, degenerate]), K, world_to_camera, size, sigma)
        assert torch.equal(image.detach(), without)
    nothing = soft_silhouettes(points, torch.zeros(0, 3, dtype=torch.long), K, world_to_camera, size)
    assert nothing.shape == (1, size, size) and (nothing == 0).all() and not torch.signbit(nothing).any()


def test_bad_inputs_are_refused():
    vertices, faces = sphere_batch(0, 2, dtype=torch.float32)
    K, world_to_camera = orbit_cameras(2, 8)
    def call(**changes):
        arguments = {"vertices": vertices, "faces": faces, "K": K, "world_to_camera": world_to_camera, "size": 8}
        return soft_silhouettes(**{**arguments, **changes})

    assert call().shape == (2, 8, 8) and call().dtype == torch.float32
    with pytest.raises(TypeError, match="vertices"):
        call(vertices=vertices.long())
    with pytest.raises(TypeError, match="faces"):
        call(faces=faces.float())
    with pytest.raises(ValueError, match="vertices"):
        call(vertices=vertices[0])
    with pytest.raises(ValueError, match="faces"):
        call(faces=faces[None].expand(3, -1, -1))
    with pytest.raises(ValueError, match=r"in \[0, 12\)"):
        call(faces=faces + 1)
    with pytest.raises(ValueError, match="K"):
        call(K=K[:1])
    with pytest.raises(ValueError, match="world_to_camera"):
        call(world_to_camera=world_to_camera[:, :, :3])
    for name, value in (("size", 0), ("tile", 2.5), ("max_pairs", -1), ("sigma", 0.0), ("sigma", float("nan"))):
        with pytest.raises(ValueError, match=name):
            call(**{name: value})


@pytest.mark.parametrize("level,vertex_count", [(0, 12), (1, 42), (2, 162), (3, 642)])
def test_icosphere(level, vertex_count):
    vertices, faces = icosphere(level)
    assert vertices.shape == (vertex_count, 3) and faces.shape == (2 * vertex_count - 4, 3)
    assert vertices.dtype == np.float64 and faces.dtype == np.int64
    np.testing.assert_allclose(np.linalg.norm(vertices, axis=1), 1.0, rtol=0, atol=1e-12)
    mesh = trimesh.Trimesh(vertices, faces, process=False)
    assert mesh.is_watertight and mesh.is_winding_consistent and mesh.volume > 0
    centres = vertices[faces].mean(axis=1)
    assert (np.einsum("ij,ij->i", mesh.face_normals, centres) > 0).all()  # every face outward
    assert len(np.unique(np.round(vertices, 9), axis=0)) == vertex_count  # shared midpoints, no duplicates
    scaled, same = icosphere(level, radius=0.25)
    np.testing.assert_allclose(scaled, 0.25 * vertices)
    np.testing.assert_array_equal(same, faces)


def test_icosahedron_is_regular():
    vertices, faces = icosahedron()
    edges = np.linalg.norm(vertices[faces] - vertices[np.roll(faces, 1, axis=1)], axis=-1)
    np.testing.assert_allclose(edges, edges.flat[0], rtol=1e-12)  # 30 equal edges, all faces equilateral
    with pytest.raises(ValueError):
        icosphere(-1)
    with pytest.raises(ValueError):
        icosphere(1, radius=0.0)


@pytest.mark.parametrize("device", [pytest.param("cuda", marks=gpu_only)])
def test_cpu_and_cuda_agree(device):
    vertices, faces = sphere_batch(3, 4, dtype=torch.float32, seed=6)
    K, world_to_camera = orbit_cameras(4, 64)
    weights = torch.rand(4, 64, 64, generator=torch.Generator().manual_seed(2))
    outputs = []
    for where in ("cpu", device):
        points = vertices.to(where).requires_grad_(True)
        image = soft_silhouettes(points, faces.to(where), K, world_to_camera, 64, 1e-4)
        (image * weights.to(where)).sum().backward()
        assert image.device.type == where
        outputs.append((image.detach().cpu(), points.grad.cpu()))
    torch.testing.assert_close(outputs[1][0], outputs[0][0], rtol=0, atol=1e-4)  # float32, dA/dx ~ 50 per NDC
    scale = outputs[0][1].abs().max()
    torch.testing.assert_close(outputs[1][1] / scale, outputs[0][1] / scale, rtol=0, atol=1e-3)
