"""voxforge: turn 3D mesh collections into learning-ready multi-view, voxel and point datasets."""

__version__ = "0.1.0"
