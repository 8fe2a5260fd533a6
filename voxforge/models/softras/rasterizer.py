"""Soft Rasterizer's differentiable silhouettes (Liu, Li, Chen and Li, "Soft Rasterizer: A Differentiable
Renderer for Image-based 3D Reasoning", ICCV 2019), in plain PyTorch, on voxforge's cameras.

Every triangle j covers pixel i with the probability (the paper's probability map, Sec. 3.2)::

    D_j(i) = sigmoid(delta_ij * d(i, j)**2 / sigma)

where ``d(i, j)`` is the distance from the centre of pixel i to the projected triangle's boundary (its
nearest edge or vertex) and ``delta_ij`` is +1 when the centre is inside the triangle, -1 outside; the
silhouette aggregates all triangles with the logical-or aggregate function ``A_O`` (Sec. 3.3)::

    A(i) = 1 - prod_j (1 - D_j(i))

computed here as ``-expm1(sum_j log(1 - D_j(i)))`` with ``log(1 - D) = logsigmoid(-delta d**2 / sigma)``,
which neither underflows nor divides by zero for any sigma. (Equation numbers are not cited because they
could not be checked against the published text; the formula is the ``euclidean`` distance and
``logical-or`` alpha mode of the authors' code, github.com/ShichenLiu/SoftRas, which also fixes the units
below.)

Units: distances are in SoftRas's normalized device coordinates, where the image spans [-1, 1] along both
axes (pixel edges at -1 and +1, the centre of pixel column u at ``(2u + 1) / size - 1``), so one pixel is
``2 / size`` long and ``sigma`` means what it means in SoftRas at the same image size: its reconstruction
model trains with ``sigma=1e-4`` at 64 px, i.e. sqrt(sigma) = 0.01 = 0.32 px. Row 0 of the output is the top
of the image (voxforge's and OpenCV's convention; SoftRas's own images count rows from the bottom, which
changes no distance).

Sharp limit: thresholded at 0.5, the silhouette tends to the hard coverage of pixel centres as sigma -> 0,
but a centre within about sqrt(sigma) of the edges of several faces at once (each D ~ 0.5) is or-aggregated
above 0.5. On ShapeNet chairs at 127 px, sigma = 1e-7 still marks 5-17 such pixels per view outside the
hard coverage; at 1e-9 the silhouettes differ from pyrender's masks by at most 2 pixels per view, and at
1e-11 (float64) not at all from the exact point-in-triangle coverage of the pixel centres.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

# Coverage below which a (pixel, face) pair is left out (the culling radius: D < CULL_PROBABILITY exactly
# when the pixel is outside and d**2 > sigma * ln(1 / CULL_PROBABILITY - 1)).
CULL_PROBABILITY = 1e-8
# Squared edge length (NDC units) under which an edge counts as a point: keeps degenerate faces finite.
_MIN_EDGE_SQUARED = 1e-12


def soft_silhouettes(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    K: torch.Tensor | Sequence,
    world_to_camera: torch.Tensor | Sequence,
    size: int,
    sigma: float = 1e-4,
    *,
    near: float = 1e-2,
    tile: int = 32,
    max_pairs: int = 1 << 18,
    cull: bool = True,
    recompute: bool = True,
) -> torch.Tensor:
    """Soft silhouettes (B, size, size) in [0, 1] of B meshes, each seen by its own camera.

    Arguments:
        vertices: (B, V, 3) floating tensor, object frame (voxforge's normalized frame for voxforge data).
            Its device and dtype are those of the computation and of the result (float16 and bfloat16 are
            computed in float32; autocast is switched off inside).
        faces: (F, 3) integer tensor shared by the batch, or (B, F, 3) one per mesh: vertex indices in
            [0, V). Winding does not matter (silhouettes are two-sided).
        K: (B, 3, 3) intrinsics in pixels for a ``size`` x ``size`` image, pixel centres at integer
            coordinates (voxforge's ``cameras.intrinsics``); a tensor or anything ``torch.as_tensor`` takes
            (e.g. a dataset's numpy arrays). Moved to ``vertices``' dtype and device (differentiably).
        world_to_camera: (B, 3, 4) ``[R|t]`` from the object frame to OpenCV camera coordinates (x right,
            y down, z forward), as ``cameras.look_at`` makes and every voxforge sample stores. A point p lands
            on pixel (column, row) = ``(K @ (R p + t))[:2] / (R p + t)[2]`` (``cameras.project``).
        size: image side in pixels (voxforge's images are square).
        sigma: sharpness in squared NDC units (see the module docstring); smaller is sharper, and as sigma
            goes to 0 the silhouette thresholded at 0.5 becomes a hard rasterizer's coverage of the pixel
            centres.
        near: faces with any vertex at camera depth z <= ``near`` (object-frame units) are left out whole
            (not clipped), so geometry at or behind the camera never projects to infinity or flips.
        tile: the image is cut into tiles of ``tile`` x ``tile`` pixels; each (face, tile) pair whose pixels
            the face may reach is one unit of work of at most ``tile**2`` (pixel, face) pairs.
        max_pairs: the (face, tile) units are processed in chunks of at most ``max_pairs`` + ``tile**2``
            (pixel, face) pairs.
        cull: a face is evaluated only at the pixels inside its screen bounding box grown by
            ``sqrt(sigma * ln(1 / CULL_PROBABILITY - 1))`` NDC units, the distance beyond which D < 1e-8;
            each (pixel, face) pair so left out changes ``log(1 - A)`` by less than 1e-8. ``cull=False``
            evaluates every face in front of the near plane at every pixel: the exact formula, slowly.
        recompute: under autograd, keep only each chunk's (face, tile) list and recompute its per-pair
            terms in backward (checkpointing), so backward stays within the memory bound below; first-order
            gradients only (a second backward through it raises). False keeps every chunk's intermediates
            instead: twice differentiable, a little faster, memory proportional to the total number of
            (pixel, face) pairs evaluated.

    Returns:
        (B, size, size) tensor of the computation's dtype and ``vertices``' device, values in [0, 1], row 0
        at the top of the image; differentiable with respect to ``vertices`` (and ``K``,
        ``world_to_camera`` when they are tensors that require grad). No in-place operation touches anything
        autograd saved. The result does not depend on ``tile`` or ``max_pairs`` (they only change the order
        of a sum: rounding).

    Memory: the work is a list of (pixel, face) pairs (each face against the pixels it can reach, not the
    whole image), done in chunks of at most ``max_pairs + tile**2`` pairs, so the peak extra memory is
    O(max_pairs + tile**2) -- about 250 bytes per pair in float32 (measured with torch.profiler's memory
    timeline: a 66 MB peak of live tensors at the defaults with every chunk full, 4.4 MB with
    ``max_pairs=16384``) -- whatever the mesh and image size, plus O(B * F) for the projected faces,
    48 bytes per (face, tile) unit (with culling a face small on screen meets 1 to 4 tiles; without, every
    face meets all ``(size / tile)**2``), and O(B * size**2) for the result and each chunk's partial sums.
    With autograd and ``recompute=True`` backward recomputes one chunk at a time within the same bound;
    between forward and backward the graph keeps O(B * F + units + B * size**2).

    Raises:
        TypeError: ``vertices`` is not a floating tensor, or ``faces`` is not an integer tensor.
        ValueError: a shape does not match the ones above (batch sizes differ, V = 0, ...), a face index is
            out of range, ``size``, ``tile`` or ``max_pairs`` is not a positive integer, or ``sigma`` is
            not positive and finite.
    """
    batch, faces = _check_inputs(vertices, faces, size, sigma, tile, max_pairs)
    if vertices.dtype not in (torch.float32, torch.float64):
        vertices = vertices.float()  # half precision cannot place a vertex to a fraction of a pixel
    with torch.autocast(device_type=vertices.device.type, enabled=False):  # nor can autocast's matmuls
        return _soft_silhouettes(vertices, faces, K, world_to_camera, batch, size, sigma, near, tile, max_pairs,
                                 cull, recompute)


def _soft_silhouettes(vertices, faces, K, world_to_camera, batch, size, sigma, near, tile, max_pairs, cull,
                      recompute) -> torch.Tensor:
    dtype, device = vertices.dtype, vertices.device
    K = torch.as_tensor(K).to(dtype=dtype, device=device)
    world_to_camera = torch.as_tensor(world_to_camera).to(dtype=dtype, device=device)
    if K.shape != (batch, 3, 3):
        raise ValueError(f"K must be (B, 3, 3) with B = {batch}, got {tuple(K.shape)}")
    if world_to_camera.shape != (batch, 3, 4):
        raise ValueError(f"world_to_camera must be (B, 3, 4) with B = {batch}, got {tuple(world_to_camera.shape)}")

    # object frame -> camera -> pixels -> NDC; depths at or before the near plane are replaced before the
    # division (their faces are dropped below) so that neither the values nor the gradients become inf/NaN
    # (products and sums rather than matmuls: TF32 matmuls, if enabled, would move vertices by ~1e-3)
    camera = (vertices[:, :, None, :] * world_to_camera[:, None, :, :3]).sum(-1) + world_to_camera[:, None, :, 3]
    depth = camera[..., 2]
    in_front = depth > near
    safe_depth = torch.where(in_front, depth, torch.ones_like(depth))
    pixels = (camera[:, :, None, :] * K[:, None, :2, :]).sum(-1) / safe_depth[..., None]
    ndc = (2.0 * pixels + 1.0) / size - 1.0  # (B, V, 2)
    items = torch.arange(batch, device=device)[:, None, None]
    triangles = ndc[items, faces].reshape(-1, 3, 2)  # (B * F, 3, 2), batch item b's faces first
    keep = in_front[items, faces].all(dim=-1).reshape(-1)

    units = _face_tile_units(triangles.detach(), keep, size, sigma, tile, cull)
    log_empty = triangles.new_zeros(batch * size * size)  # sum_j log(1 - D_j) per batch item and pixel
    use_recompute = recompute and torch.is_grad_enabled() and triangles.requires_grad
    for chunk in _chunks(units, max_pairs):
        arguments = (triangles, chunk, faces.shape[1], batch, size, sigma)
        if use_recompute:
            part = _RecomputedChunk.apply(*arguments)
        else:
            part = _log_uncovered(*arguments)
        log_empty = log_empty + part
    return 0.0 - torch.expm1(log_empty.reshape(batch, size, size))  # 0.0 - : no -0.0 where nothing is


class _RecomputedChunk(torch.autograd.Function):
    """:func:`_log_uncovered` whose backward recomputes the chunk's terms instead of keeping them: only
    its inputs (the shared triangles and the chunk's small (face, tile) list) stay saved until backward."""

    @staticmethod
    def forward(ctx, triangles, units, faces_per_item, batch, size, sigma):
        ctx.save_for_backward(triangles, units)
        ctx.constants = (faces_per_item, batch, size, sigma)
        return _log_uncovered(triangles, units, faces_per_item, batch, size, sigma)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        triangles, units = ctx.saved_tensors
        with torch.enable_grad():
            leaf = triangles.detach().requires_grad_(True)
            # a scalar: torch.autograd.grad with grad_outputs imports sympy (seconds) on its first call
            (gradient,) = torch.autograd.grad((_log_uncovered(leaf, units, *ctx.constants) * grad).sum(), leaf)
        return gradient, None, None, None, None, None


def _face_tile_units(triangles: torch.Tensor, keep: torch.Tensor, size: int, sigma: float, tile: int,
                     cull: bool) -> torch.Tensor:
    """The units of work: (U, 6) long rows (face, first column, first row, columns, rows, pairs), one for
    each (face, tile) pair where the face's reach (its pixel bounding box grown by the culling distance,
    or the whole image) meets the tile, the rectangle being that intersection."""
    last = size - 1
    if cull:
        reach = math.sqrt(sigma * math.log(1.0 / CULL_PROBABILITY - 1.0)) * size / 2.0  # in pixels
        corners = ((triangles + 1.0) * size - 1.0) / 2.0  # NDC -> pixel coordinates
        low = (corners.amin(dim=1) - reach).clamp(-1.0, size).ceil().long()  # (N, 2) first (column, row)
        high = (corners.amax(dim=1) + reach).clamp(-1.0, size).floor().long()
        low, high = low.clamp(0, last), high.clamp(0, last)
        keep = keep & (corners.amax(dim=1) + reach >= 0.0).all(dim=1) & (corners.amin(dim=1) - reach <= last).all(dim=1)
    else:
        low = torch.zeros(len(triangles), 2, dtype=torch.long, device=triangles.device)
        high = torch.full_like(low, last)
    face = torch.nonzero(keep).squeeze(1)
    low, high = low[face], high[face]
    first_tile, last_tile = low // tile, high // tile
    across = last_tile - first_tile + 1  # (n, 2) tiles along columns and rows
    count = across[:, 0] * across[:, 1]
    total = int(count.sum())
    owner = torch.repeat_interleave(torch.arange(len(face), device=face.device), count, output_size=total)
    local = torch.arange(total, device=face.device) - (torch.cumsum(count, 0) - count)[owner]
    columns = across[owner, 0]
    tile_at = first_tile[owner] + torch.stack([local % columns, local // columns], dim=1)
    start = torch.maximum(low[owner], tile_at * tile)
    stop = torch.minimum(high[owner], tile_at * tile + tile - 1)
    extent = stop - start + 1
    return torch.cat([face[owner, None], start, extent, (extent[:, 0] * extent[:, 1])[:, None]], dim=1)


def _chunks(units: torch.Tensor, max_pairs: int) -> list[torch.Tensor]:
    """``units`` split into consecutive chunks of at most ``max_pairs`` + one unit's pairs."""
    if len(units) == 0:
        return []
    before = (torch.cumsum(units[:, 5], 0) - units[:, 5]).cpu()  # pairs before each unit
    bounds = torch.searchsorted(before, torch.arange(0, int(before[-1]) + 1, max_pairs)).tolist()
    bounds = sorted(set(bounds + [len(units)]))
    return [units[a:b] for a, b in pairwise(bounds) if b > a]


def _log_uncovered(triangles: torch.Tensor, units: torch.Tensor, faces_per_item: int, batch: int, size: int,
                   sigma: float) -> torch.Tensor:
    """sum of log(1 - D) over the (pixel, face) pairs of ``units`` (see :func:`_face_tile_units`), per
    batch item and pixel: (B * size * size,), from the faces' NDC triangles (B * F, 3, 2)."""
    pairs = units[:, 5]
    total = int(pairs.sum())
    unit = torch.repeat_interleave(torch.arange(len(units), device=units.device), pairs, output_size=total)
    local = torch.arange(total, device=units.device) - (torch.cumsum(pairs, 0) - pairs)[unit]
    columns = units[unit, 3]
    x = units[unit, 1] + local % columns
    y = units[unit, 2] + local // columns
    face = units[unit, 0]
    del unit, local, columns
    px = (2.0 * x.to(triangles.dtype) + 1.0) / size - 1.0
    py = (2.0 * y.to(triangles.dtype) + 1.0) / size - 1.0
    corners = triangles[face]  # (pairs, 3, 2)
    ax, ay = corners[..., 0], corners[..., 1]
    ex, ey = ax.roll(-1, dims=1) - ax, ay.roll(-1, dims=1) - ay  # edge k runs from vertex k to vertex k + 1
    inverse_length = 1.0 / (ex * ex + ey * ey).clamp_min(_MIN_EDGE_SQUARED)
    orientation = torch.sign(ey[:, 0] * ex[:, 2] - ex[:, 0] * ey[:, 2])  # sign of twice the signed area
    squared = inside = None
    for k in range(3):
        wx, wy = px - ax[:, k], py - ay[:, k]  # from the edge's start to the pixel centre
        t = ((wx * ex[:, k] + wy * ey[:, k]) * inverse_length[:, k]).clamp(0.0, 1.0)
        dx, dy = wx - t * ex[:, k], wy - t * ey[:, k]  # to the nearest point of the edge segment
        edge_squared = dx * dx + dy * dy
        left = (ex[:, k] * wy - ey[:, k] * wx) * orientation > 0.0  # strictly on the inner side
        squared = edge_squared if squared is None else torch.minimum(squared, edge_squared)
        inside = left if inside is None else inside & left
    # log(1 - sigmoid(x)) = logsigmoid(-x), x = +d^2 / sigma inside and -d^2 / sigma outside; a zero-area
    # face has orientation 0, is inside nowhere, and stays finite (its edges are segments or points)
    terms = F.logsigmoid(torch.where(inside, -squared, squared) / sigma)
    target = (face // faces_per_item) * (size * size) + y * size + x
    return terms.new_zeros(batch * size * size).index_add(0, target, terms)


def _check_inputs(vertices, faces, size, sigma, tile, max_pairs) -> tuple[int, torch.Tensor]:
    """Batch size and faces as (B, F, 3) long on ``vertices``' device, after checking what the docstring
    promises."""
    if not isinstance(vertices, torch.Tensor) or not vertices.is_floating_point():
        raise TypeError(f"vertices must be a floating-point tensor, got {type(vertices).__name__} "
                        f"{getattr(vertices, 'dtype', '')}")
    if vertices.ndim != 3 or vertices.shape[2] != 3 or vertices.shape[1] == 0:
        raise ValueError(f"vertices must be (B, V, 3) with V > 0, got {tuple(vertices.shape)}")
    if not isinstance(faces, torch.Tensor) or faces.is_floating_point() or faces.is_complex() \
            or faces.dtype == torch.bool:
        raise TypeError(f"faces must be an integer tensor, got {type(faces).__name__} {getattr(faces, 'dtype', '')}")
    batch, count = vertices.shape[0], vertices.shape[1]
    if faces.ndim == 2 and faces.shape[1] == 3:
        faces = faces.expand(batch, -1, -1)
    elif not (faces.ndim == 3 and faces.shape[0] == batch and faces.shape[2] == 3):
        raise ValueError(f"faces must be (F, 3) or (B, F, 3) with B = {batch}, got {tuple(faces.shape)}")
    faces = faces.to(device=vertices.device, dtype=torch.long)
    if faces.numel() and (faces.min() < 0 or faces.max() >= count):
        raise ValueError(f"face indices must lie in [0, {count}), got [{int(faces.min())}, {int(faces.max())}]")
    for name, value in (("size", size), ("tile", tile), ("max_pairs", max_pairs)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be positive and finite, got {sigma!r}")
    return batch, faces
