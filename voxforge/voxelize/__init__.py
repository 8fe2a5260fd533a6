"""Voxel grids (solid occupancy), binvox I/O and surface point sampling."""

from voxforge.voxelize.binvox import BinvoxError, decode_binvox, encode_binvox, read_binvox, write_binvox
from voxforge.voxelize.grid import FILL_MODES, VoxelGrid, VoxelizeError, voxelize
from voxforge.voxelize.points import sample_surface

__all__ = [
    "FILL_MODES", "BinvoxError", "VoxelGrid", "VoxelizeError", "decode_binvox", "encode_binvox",
    "read_binvox", "sample_surface", "voxelize", "write_binvox",
]
