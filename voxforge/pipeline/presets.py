"""Presets: the settings of published 3D-reconstruction datasets, one ``--preset`` away.

A preset only fills in run settings; any option given explicitly on the command line wins. The name
is saved in ``dataset.json`` (``config.preset``) with the values it produced.

- ``r2n2``: 3D-R2N2's ShapeNetRendering / ShapeNetVox32 (Choy et al. 2016). 24 views of 137x137 RGBA
  (alpha stored as ``mask_NN.png``; ``pipeline export --layout r2n2`` writes the RGBA PNGs), azimuth
  uniform in [0, 360), elevation uniform in [25, 30], no in-plane rotation, distance ratio uniform in
  [0.65, 0.95] x 1.75, focal 2.1875 half-image units; distances are not raised to keep objects in frame
  (the original renders were not either). Voxels 32^3 as ``binvox -d 32 -cb -dc -aw``: carve-dilated,
  wireframe pass, one sample line per voxel, cube centred on the object.
- ``softras``: Kato et al.'s Neural Mesh Renderer data, used by Soft Rasterizer (and the setup of
  Perspective Transformer Nets): 24 views of 64x64 RGBA at azimuths 15 degrees apart (SoftRas's view k
  is azimuth -15k in its own ``get_points_from_angles``), elevation 30, distance 2.732, viewing angle 15
  degrees (focal 1 / tan 15); 32^3 voxels on SoftRas's fixed grid (cube of edge 32/31 centred at the
  origin). ``pipeline export --layout softras`` writes its per-category ``.npz`` files
  (:mod:`voxforge.loaders.softras`).
- ``pointcloud``: the point-set generation baselines (PSGN, 3D-LMNet, 3D-ReConstNet) take 3D-R2N2's
  renders as input, so this is ``r2n2`` plus 16384 area-uniform surface points per object whose first
  1024 are a farthest-point subset (``points[:1024]``). Points stay in the object frame (bbox centred,
  unit diagonal: ShapeNet v1's, where 3D-LMNet's ground-truth clouds live); the papers' evaluation
  normalizations are applied at evaluation time by name (:mod:`voxforge.models.reconstnet.metrics`).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace

from voxforge.loaders import softras
from voxforge.pipeline.config import RunConfig
from voxforge.renderers.cameras import R2N2_DISTANCE_SCALE, R2N2_FOCAL_NORMALIZED


@dataclass(frozen=True)
class Preset:
    name: str
    summary: str
    values: dict


_R2N2_VALUES = dict(
    size=137, views=24, camera_layout="random", azimuth=(0.0, 360.0), elevation=(25.0, 30.0),
    distance=(0.65 * R2N2_DISTANCE_SCALE, 0.95 * R2N2_DISTANCE_SCALE), focal=R2N2_FOCAL_NORMALIZED, keep_in_frame=False,
    resolution=32, fill="carve-dilated", voxel_surface="raster", wireframe=True, voxel_samples=1, voxel_extent=None,
)

PRESETS = {
    preset.name: preset for preset in (
        Preset("r2n2", "3D-R2N2 ShapeNetRendering + ShapeNetVox32 (137 px RGBA, 24 random views, 32^3)", _R2N2_VALUES),
        Preset("softras", "SoftRas / NMR data (64 px RGBA, 24 views 15 deg apart, elev. 30, dist. 2.732, 32^3)", dict(
            size=softras.IMAGE_SIZE, views=softras.VIEWS, camera_layout="orbit",
            azimuth=(0.0, softras.AZIMUTH_STEP_DEG * softras.VIEWS),
            elevation=(softras.ELEVATION_DEG, softras.ELEVATION_DEG), distance=(softras.DISTANCE, softras.DISTANCE),
            focal=softras.FOCAL_NORMALIZED, keep_in_frame=False, resolution=softras.VOXEL_RESOLUTION, fill="carve",
            voxel_surface="raster", wireframe=False, voxel_samples=None, voxel_extent=softras.VOXEL_EXTENT,
        )),
        Preset("pointcloud", "3D-R2N2 renders + 16384 surface points, the first 1024 farthest-point sampled",
               dict(_R2N2_VALUES, points=16384, even_points=False, fps_prefix=1024)),
    )
}


def preset_names() -> list[str]:
    return sorted(PRESETS)


def apply_preset(config: RunConfig, name: str, explicit: set[str] = frozenset()) -> RunConfig:
    """``config`` with the preset's values, except the settings in ``explicit`` (given by the user)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(preset_names())}")
    values = {key: value for key, value in PRESETS[name].values.items() if key not in explicit}
    return replace(config, preset=name, **values)


def explicit_run_options(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """Destinations of the ``run`` options the user actually typed (abbreviations and ``--x=y`` included).

    Parses ``argv`` again with every default of the ``run`` sub-command suppressed, so only given
    options appear in the result.
    """
    run_parser = next(action for action in parser._actions
                      if isinstance(action, argparse._SubParsersAction)).choices["run"]
    for action in run_parser._actions:
        action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv))) - {"command"}
