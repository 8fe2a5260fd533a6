"""Soft Rasterizer (Liu et al., ICCV 2019) for mesh-from-silhouettes models: the differentiable soft
silhouette rasterizer on voxforge's cameras (:mod:`.rasterizer`), silhouette IoU and its loss
(:mod:`.silhouette`), the icosphere template a mesh is deformed from (:mod:`.template`), the reconstruction
network and its regularizers (:mod:`.model`), training on the shared engine, evaluation by voxelizing
predictions (:mod:`.train`) and its commands (:mod:`.commands`)."""

from voxforge.models.softras.rasterizer import soft_silhouettes
from voxforge.models.softras.template import icosahedron, icosphere

__all__ = ["icosahedron", "icosphere", "soft_silhouettes"]
