"""Single-view mesh reconstruction learned from silhouettes, in the spirit of Soft Rasterizer's
reconstruction network (Liu et al., ICCV 2019; itself Kato et al.'s Neural Mesh Renderer set-up).

Network (sizes of the authors' released model, github.com/ShichenLiu/SoftRas ``examples/recon``):

- :class:`Encoder`: three 5x5 stride-2 convolutions (64, 128, 256 channels, batch norm, ReLU) on the
  RGBA input (the object's RGB and its alpha mask, as SoftRas's datasets hold), then fully connected layers
  1024 -> 1024 -> 512, giving a 512-d code. ``width`` scales the channels and hidden sizes (1.0 = the
  released ones; smaller for CPU runs). :class:`ResidualEncoder` is the optional ResNet-like variant.
- :class:`SphereDecoder`: fully connected 512 -> 1024 -> 2048, then a centroid c (3) and per-vertex
  offsets (V, 3) moving the vertices of a generated 642-vertex icosphere template
  (:func:`voxforge.models.softras.template.icosphere`, level 3, radius 0.25). Every coordinate stays
  inside the object frame's cube [-0.5, 0.5]: in units of the half cube, a template coordinate b in
  (-1, 1) moves to ``tanh(atanh(b) + offset) * (1 - |c|) + c`` with ``c = 0.1 tanh(.)`` (SoftRas bounds
  its vertices with sigmoids in the same spirit). The offset layer starts at zero, so an untrained model
  predicts the template sphere.

Output vertices are in voxforge's object frame (bounding box centred at the origin, unit diagonal, +Y up:
docs/FORMAT.md), where the dataset's cameras (``K``, ``world_to_camera``) and voxels live, so silhouettes
are rendered with the dataset's own cameras and predictions are voxelized into its voxel cube.

Regularizers on the predicted mesh (weights in :class:`voxforge.models.softras.train.SoftRasConfig`):
:func:`laplacian_loss` (uniform Laplacian, squared, summed over vertices) and :func:`flatten_loss`
((1 + cos theta)^2 summed over edges, theta the angle between the two faces' heights on the shared edge:
0 for a flat surface), as in SoftRas.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from voxforge.models.softras.template import icosphere

TEMPLATE_LEVEL = 3  # 642 vertices, 1280 faces
TEMPLATE_RADIUS = 0.25  # object-frame units: half the half-cube, as SoftRas's template (0.5 of its [-1, 1] box)
CUBE_HALF = 0.5  # the object frame's cube is [-0.5, 0.5]^3 (unit diagonal bounding box fits inside)
CENTROID_SCALE = 0.1  # the centroid moves at most 0.1 half-cubes (SoftRas's ``centroid_scale``)


def _channels(value: float, width: float) -> int:
    return max(4, int(round(value * width)))


class Encoder(nn.Module):
    """(B, in_channels, S, S) float images in [0, 1] -> (B, 512) codes; S divisible by 8 (64 in SoftRas)."""

    def __init__(self, image_size: int = 64, width: float = 1.0, in_channels: int = 4, code: int = 512) -> None:
        super().__init__()
        if image_size % 8:
            raise ValueError(f"the encoder needs an image side divisible by 8, got {image_size}")
        c1, c2, c3 = (_channels(c, width) for c in (64, 128, 256))
        hidden = _channels(1024, width)
        layers: list[nn.Module] = []
        for before, after in ((in_channels, c1), (c1, c2), (c2, c3)):
            layers += [nn.Conv2d(before, after, 5, stride=2, padding=2), nn.BatchNorm2d(after), nn.ReLU(inplace=True)]
        self.convolutions = nn.Sequential(*layers)
        self.fully_connected = nn.Sequential(
            nn.Linear(c3 * (image_size // 8) ** 2, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, code), nn.ReLU(inplace=True))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fully_connected(self.convolutions(images).flatten(1))


class _Residual(nn.Module):
    def __init__(self, before: int, after: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(before, after, 3, stride=2, padding=1), nn.BatchNorm2d(after),
                                  nn.ReLU(inplace=True), nn.Conv2d(after, after, 3, padding=1), nn.BatchNorm2d(after))
        self.skip = nn.Sequential(nn.Conv2d(before, after, 1, stride=2), nn.BatchNorm2d(after))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.skip(x))


class ResidualEncoder(Encoder):
    """The encoder with each 5x5 convolution replaced by a residual block (two 3x3 convolutions and a
    strided 1x1 shortcut); same input, same 512-d code."""

    def __init__(self, image_size: int = 64, width: float = 1.0, in_channels: int = 4, code: int = 512) -> None:
        super().__init__(image_size, width, in_channels, code)
        c1, c2, c3 = (_channels(c, width) for c in (64, 128, 256))
        self.convolutions = nn.Sequential(_Residual(in_channels, c1), _Residual(c1, c2), _Residual(c2, c3))


class SphereDecoder(nn.Module):
    """(B, 512) codes -> (B, V, 3) vertices of the deformed template, inside [-0.5, 0.5]^3."""

    def __init__(self, template_vertices: torch.Tensor, width: float = 1.0, code: int = 512) -> None:
        super().__init__()
        count = template_vertices.shape[0]
        h1, h2 = _channels(1024, width), _channels(2048, width)
        self.hidden = nn.Sequential(nn.Linear(code, h1), nn.ReLU(inplace=True), nn.Linear(h1, h2), nn.ReLU(inplace=True))
        self.centroid = nn.Linear(h2, 3)
        self.offsets = nn.Linear(h2, count * 3)
        for layer in (self.centroid, self.offsets):  # start at the template: a stable first step
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        base = (template_vertices / CUBE_HALF).clamp(-1 + 1e-6, 1 - 1e-6)
        self.register_buffer("base_logits", torch.atanh(base), persistent=False)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        hidden = self.hidden(codes)
        centroid = CENTROID_SCALE * torch.tanh(self.centroid(hidden))[:, None, :]  # (B, 1, 3), half-cube units
        offsets = self.offsets(hidden).view(codes.shape[0], -1, 3)
        moved = torch.tanh(self.base_logits + offsets) * (1 - centroid.abs()) + centroid
        return CUBE_HALF * moved


class MeshReconstructor(nn.Module):
    """Image -> mesh: ``forward(images (B, 4, S, S))`` gives vertices (B, 642, 3) in the object frame;
    ``faces`` (1280, 3) int64 is the template's (fixed) topology, outward winding."""

    def __init__(self, image_size: int = 64, width: float = 1.0, encoder: str = "plain", in_channels: int = 4) -> None:
        super().__init__()
        self.image_size = image_size
        vertices, faces = icosphere(TEMPLATE_LEVEL, TEMPLATE_RADIUS)
        kinds = {"plain": Encoder, "residual": ResidualEncoder}
        if encoder not in kinds:
            raise ValueError(f"encoder must be one of {', '.join(kinds)}, got {encoder!r}")
        self.encoder = kinds[encoder](image_size, width, in_channels)
        self.decoder = SphereDecoder(torch.from_numpy(vertices).float(), width)
        self.register_buffer("faces", torch.from_numpy(faces), persistent=False)
        self.register_buffer("template", torch.from_numpy(vertices).float(), persistent=False)
        self.register_buffer("laplacian", uniform_laplacian(len(vertices), faces), persistent=False)
        self.register_buffer("edge_quads", edge_quads(faces), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(images))


def uniform_laplacian(vertex_count: int, faces: np.ndarray) -> torch.Tensor:
    """Dense (V, V) float32 ``I - D^-1 A`` of the mesh graph (A: vertex adjacency, D: degrees)."""
    adjacency = np.zeros((vertex_count, vertex_count), np.float32)
    for i, j in ((0, 1), (1, 2), (2, 0)):
        adjacency[faces[:, i], faces[:, j]] = 1.0
        adjacency[faces[:, j], faces[:, i]] = 1.0
    degree = adjacency.sum(1, keepdims=True)
    return torch.from_numpy(np.eye(vertex_count, dtype=np.float32) - adjacency / np.maximum(degree, 1.0))


def edge_quads(faces: np.ndarray) -> torch.Tensor:
    """(E, 4) int64 ``(a, b, c, d)`` for every edge (a, b) shared by two faces, c and d their third vertices.

    Raises ValueError when an edge does not have exactly two faces (the template is closed and manifold).
    """
    opposite: dict[tuple[int, int], list[int]] = {}
    for a, b, c in faces.tolist():
        for u, v, w in ((a, b, c), (b, c, a), (c, a, b)):
            opposite.setdefault((min(u, v), max(u, v)), []).append(w)
    quads = []
    for (u, v), others in sorted(opposite.items()):
        if len(others) != 2:
            raise ValueError(f"edge ({u}, {v}) has {len(others)} faces; the template must be closed and manifold")
        quads.append((u, v, others[0], others[1]))
    return torch.tensor(quads, dtype=torch.int64)


def laplacian_loss(vertices: torch.Tensor, laplacian: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of sum_v ||(L x)_v||^2 for vertices (B, V, 3) and L (V, V): 0 for a mesh
    whose every vertex is the mean of its neighbours."""
    return (laplacian @ vertices).pow(2).sum(dim=(1, 2)).mean()


def flatten_loss(vertices: torch.Tensor, quads: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Mean over the batch of sum over edges of (1 + cos theta)^2, theta the angle between the heights of the
    two faces on the edge (from the edge to each opposite vertex): 0 when the two faces are coplanar."""
    a, b, c, d = (vertices[:, quads[:, k]] for k in range(4))
    edge = b - a
    edge = edge / (edge.norm(dim=-1, keepdim=True) + eps)

    def height(point: torch.Tensor) -> torch.Tensor:
        along = point - a
        return along - (along * edge).sum(-1, keepdim=True) * edge

    hc, hd = height(c), height(d)
    cos = (hc * hd).sum(-1) / (hc.norm(dim=-1) * hd.norm(dim=-1) + eps)
    return (1.0 + cos).pow(2).sum(dim=1).mean()
