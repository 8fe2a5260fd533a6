"""Soft Rasterizer (Liu et al., ICCV 2019) for mesh-from-silhouettes models: the differentiable soft
silhouette rasterizer on voxforge's cameras, and the icosphere template a mesh is deformed from."""

from voxforge.models.softras.rasterizer import soft_silhouettes
from voxforge.models.softras.template import icosahedron, icosphere

__all__ = ["icosahedron", "icosphere", "soft_silhouettes"]
