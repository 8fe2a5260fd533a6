"""Loading a record's mesh and moving it into the normalized object frame.

The object frame: the bounding box of all triangles is centred at the origin and its diagonal has
length 1 (ShapeNet v1 and the 3D-R2N2 data use the same). ``object = (source - center) * scale``;
the inverse is kept with every sample so results can be mapped back to the source mesh.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import trimesh


class MeshError(ValueError):
    """The mesh cannot be used (no triangles, non-finite vertices, zero size)."""


@dataclass
class Normalization:
    center: np.ndarray  # (3,) source-mesh coordinates of the bounding-box centre
    scale: float  # 1 / bounding-box diagonal

    def matrix(self) -> np.ndarray:
        """4x4 source -> object frame."""
        matrix = np.eye(4) * self.scale
        matrix[3, 3] = 1.0
        matrix[:3, 3] = -self.center * self.scale
        return matrix

    def as_dict(self) -> dict:
        return {
            "center": [float(c) for c in self.center], "scale": float(self.scale),
            "source_to_object": self.matrix().tolist(),
            "convention": "object = (source - center) * scale; bbox centred at origin, unit diagonal",
        }


def mesh_geometry(scene: trimesh.Scene) -> list[trimesh.Trimesh]:
    """The scene's triangle meshes in scene coordinates (node transforms applied)."""
    return [g for g in scene.dump() if isinstance(g, trimesh.Trimesh) and len(g.faces) > 0]


def flatten(scene: trimesh.Scene) -> tuple[np.ndarray, np.ndarray]:
    """One (vertices, faces) soup of every triangle mesh in the scene."""
    parts = mesh_geometry(scene)
    if not parts:
        raise MeshError("the mesh file holds no triangles")
    offsets = np.cumsum([0] + [len(p.vertices) for p in parts[:-1]])
    vertices = np.concatenate([p.vertices for p in parts]).astype(np.float64)
    faces = np.concatenate([p.faces + o for p, o in zip(parts, offsets)]).astype(np.int64)
    return vertices, faces


def validate_and_normalize(scene: trimesh.Scene) -> tuple[trimesh.Scene, Normalization]:
    """Check the scene is usable and move it into the object frame (in place; returned for chaining)."""
    if not isinstance(scene, trimesh.Scene):
        scene = trimesh.Scene(scene)
    vertices, faces = flatten(scene)
    bad = ~np.isfinite(vertices).all(axis=1)
    if bad.any():
        raise MeshError(f"{int(bad.sum())} of {len(vertices)} vertices are NaN or infinite")
    used = vertices[np.unique(faces)]
    low, high = used.min(axis=0), used.max(axis=0)
    diagonal = float(np.linalg.norm(high - low))
    if diagonal == 0.0:
        raise MeshError("the mesh has zero size (all vertices coincide)")
    # any size normalizes in float64 (1e-30 as well as 1e30); what cannot is a size of fewer than 1000
    # float64 steps at the coordinates' own magnitude: the shape would be rounding noise
    magnitude = float(np.abs(used).max())
    if not diagonal > magnitude * np.finfo(np.float64).eps * 1000 or not np.isfinite(diagonal):
        raise MeshError(f"the mesh is {diagonal:.3g} units across at {magnitude:.3g} units from the origin: "
                        "its shape is below float64 precision")
    normalization = Normalization(center=(low + high) / 2.0, scale=1.0 / diagonal)
    recenter_geometry(scene)
    scene.apply_transform(normalization.matrix())
    return scene, normalization


def recenter_geometry(scene: trimesh.Scene) -> None:
    """Move each mesh's vertices to around its own origin (float64) and its nodes' transforms the other way.

    The scene is unchanged in exact arithmetic; what changes is that renderers, which take vertices and
    node matrices as float32, no longer see raw coordinates like 1e6 (where float32 steps are 0.06:
    masks of a unit-sized object shifted there matched the unshifted ones at IoU 0.05-0.9)."""
    for name, geometry in scene.geometry.items():
        if not isinstance(geometry, trimesh.Trimesh) or not len(geometry.vertices):
            continue
        vertices = geometry.vertices.view(np.ndarray)  # not the tracked array: reading must not rehash it
        low, high = vertices.min(axis=0), vertices.max(axis=0)
        center = (low + high) / 2.0
        if not np.isfinite(center).all() or np.abs(center).max() <= (high - low).max():
            continue  # already around its origin (relative to its size), or not finite (reported elsewhere)
        geometry.vertices = vertices.astype(np.float64) - center
        graph = scene.graph.transforms
        shift = np.eye(4)
        shift[:3, 3] = center
        for node in scene.graph.geometry_nodes.get(name, []):
            parent = graph.parents[node]
            local = np.asarray(graph.edge_data[(parent, node)].get("matrix", np.eye(4)), dtype=np.float64)
            scene.graph.update(frame_from=parent, frame_to=node, matrix=local @ shift, geometry=name)
