"""Geometry prepared for shading the same way by every renderer.

Meshes from ModelNet, ShapeNet and Objaverse often hold every face twice, once per winding, to look
two-sided in viewers that cull back faces; have inconsistent winding; or are open shells with no outside.
A rasterizer shrugs; a path tracer does not: each copy of a coincident pair shadows the other (the shadow
ray leaves the surface and hits its twin at distance ~0), so Cycles showed ModelNet's bathtub_0001 nearly
black and speckled (mean object luminance 17.7 against pyrender's 118.3 on the same cameras and lights,
64 px, 2026-11-29) while pyrender's face normals pointing away from the camera left such faces to the
ambient term alone.

What every renderer does with the geometry it shades (voxels and points are made from the untouched
triangles: they do not depend on winding or duplicates):

- :func:`prepare_for_shading`: of faces with the same three corner positions (whatever their winding,
  vertex indices or mesh), one is kept: a textured one before an untextured one, then the brighter
  material, then the first (:func:`keep_rank`: the materials decide, not the order a reader lists faces in);
- consistent winding within each connected component, closed components turned outward: this matters
  where normals are interpolated (smooth shading), i.e. in files Blender imports with their own normals,
  and Blender does it (:func:`voxforge.renderers.blender.geometry.clean_for_shading`). Meshes built from
  trimesh triangles (pyrender, and Blender for formats it cannot read) are shaded with face normals,
  two-sided, so their winding does not change the image, and trimesh's winding repair (a walk over the
  face graph in Python: 0.9 s for the 16k-face bunny here) is not spent on them;
- two-sided shading: a face seen from behind is lit as if its normal faced the camera (Cycles and
  Workbench do this themselves; pyrender gets it from :func:`two_sided_fragment_shader`);
- the same colours: face and vertex colours are sRGB values, converted to linear light for every
  renderer (:func:`linear_vertex_colors` for pyrender, which used them as linear), and a mesh with no
  colour or material is :data:`PLAIN_COLOR`, not metallic, everywhere.

"""

from __future__ import annotations

import logging

import numpy as np
import trimesh

log = logging.getLogger(__name__)

# Corner positions are compared on a grid this fine relative to the mesh's bounding-box diagonal, so the
# copies of a face that a file stores twice compare equal after float noise.
COINCIDENCE_RELATIVE = 1e-6
# pyrender's fragment shader line where the surface normal is computed; the two-sided version flips it
# for back faces (gl_FrontFacing is false when the face's winding runs clockwise on screen).
PYRENDER_NORMAL_LINE = "vec3 n = normalize(get_normal());"
TWO_SIDED_NORMAL = PYRENDER_NORMAL_LINE + "\n    if (!gl_FrontFacing) { n = -n; }  // voxforge: two-sided shading"


# sRGB of a mesh with no colour, material or texture, in every renderer
PLAIN_COLOR = (180, 180, 180, 255)


def srgb_to_linear(values: np.ndarray) -> np.ndarray:
    """sRGB-encoded values in [0, 1] to linear light (IEC 61966-2-1), float64."""
    values = np.asarray(values, np.float64)
    return np.where(values <= 0.04045, values / 12.92, ((values + 0.055) / 1.055) ** 2.4)


def linear_vertex_colors(color_0: np.ndarray) -> np.ndarray:
    """pyrender's per-vertex RGBA (float in [0, 1], sRGB-encoded as files and trimesh store them) with the
    RGB in linear light, which is what pyrender's shader multiplies its linear lighting by before it
    gamma-encodes the result (its textures it decodes itself; these it does not, so without this a face
    colour of 200 rendered brighter than 200 under white light, where Blender converts it)."""
    color_0 = np.asarray(color_0, np.float64)
    return np.concatenate([srgb_to_linear(color_0[:, :3]), color_0[:, 3:]], axis=1)


def coincident_polygon_mask(vertices: np.ndarray, loop_vertices: np.ndarray, loop_start: np.ndarray,
                            loop_total: np.ndarray, relative: float = COINCIDENCE_RELATIVE,
                            priority: np.ndarray | None = None) -> np.ndarray:
    """(P,) bool: True for each polygon whose corner positions (any order, any winding) equal another's that
    is kept: of each such group, the polygon with the lowest ``priority`` ((P,) ints, default all 0) and,
    among those, the earliest is kept. Polygon p has the corners
    ``vertices[loop_vertices[loop_start[p] : loop_start[p] + loop_total[p]]]`` (Blender's mesh layout;
    triangles are the case ``loop_total == 3``)."""
    vertices = np.asarray(vertices, np.float64)
    loop_start, loop_total = np.asarray(loop_start, np.int64), np.asarray(loop_total, np.int64)
    priority = np.zeros(len(loop_start), np.int64) if priority is None else np.asarray(priority, np.int64)
    duplicate = np.zeros(len(loop_start), bool)
    if len(loop_start) == 0 or len(vertices) == 0:
        return duplicate
    diagonal = float(np.linalg.norm(vertices.max(axis=0) - vertices.min(axis=0)))
    quantized = np.rint(vertices / (relative * max(diagonal, 1e-30))).astype(np.int64)
    for count in np.unique(loop_total):
        which = np.flatnonzero(loop_total == count)
        corners = quantized[np.asarray(loop_vertices)[loop_start[which, None] + np.arange(count)]]  # (k, n, 3)
        order = np.lexsort(corners.transpose(2, 0, 1)[::-1], axis=-1)  # each polygon's corners sorted
        keys = np.take_along_axis(corners, order[..., None], axis=1).reshape(len(which), -1)
        # sorted by corners, then priority, then position; the first of each run of equal corners is kept
        ranked = np.lexsort((np.arange(len(which)), priority[which], *keys.T[::-1]))
        ranked_keys = keys[ranked]
        first = np.ones(len(which), bool)
        first[1:] = (ranked_keys[1:] != ranked_keys[:-1]).any(axis=1)
        repeated = np.ones(len(which), bool)
        repeated[ranked[first]] = False
        duplicate[which[repeated]] = True
    return duplicate


def coincident_face_mask(vertices: np.ndarray, faces: np.ndarray, relative: float = COINCIDENCE_RELATIVE,
                         priority: np.ndarray | None = None) -> np.ndarray:
    """(F,) bool: True for each triangle whose three corner positions (any order) equal a kept one's (the
    lowest ``priority``, then the earliest: :func:`coincident_polygon_mask`)."""
    faces = np.asarray(faces, np.int64)
    return coincident_polygon_mask(vertices, faces.ravel(), 3 * np.arange(len(faces)), np.full(len(faces), 3),
                                   relative, priority)


def drop_coincident_faces(mesh: trimesh.Trimesh) -> int:
    """Remove, in place, every face that repeats an earlier face's corner positions; returns how many.

    Visuals (UVs, face colours) follow the kept faces (trimesh's ``update_faces``)."""
    duplicate = coincident_face_mask(mesh.vertices, mesh.faces)
    count = int(duplicate.sum())
    if count:
        mesh.update_faces(~duplicate)
    return count


def keep_rank(textured: bool, base_color) -> int:
    """Which of coincident faces every renderer keeps: the lowest rank, a textured face before an untextured
    one, then the brighter base colour (``base_color``: RGB in 0..1 as the file stores it), so the choice
    depends on the faces' materials, not on the order a reader lists them in (trimesh groups an OBJ's faces
    by material, Blender keeps the file's order)."""
    level = int(round(255 * float(np.clip(np.mean(np.asarray(base_color, np.float64)[:3]), 0.0, 1.0))))
    return (0 if textured else 256) + 255 - level


def _mesh_rank(mesh: trimesh.Trimesh) -> int:
    visual = mesh.visual
    if isinstance(visual, trimesh.visual.TextureVisuals) and visual.material is not None:
        material = visual.material
        color = getattr(material, "diffuse", None)
        if color is None:
            color = getattr(material, "baseColorFactor", None)
        color = np.asarray(color if color is not None else (255, 255, 255))
        scale = 255.0 if np.issubdtype(color.dtype, np.integer) else 1.0  # trimesh keeps uint8; floats are 0..1
        return keep_rank(is_textured(mesh), color[:3].astype(np.float64) / scale)
    if isinstance(visual, trimesh.visual.ColorVisuals) and visual.defined:
        return keep_rank(False, np.asarray(visual.main_color, np.float64)[:3] / 255.0)
    return keep_rank(False, np.asarray(PLAIN_COLOR[:3]) / 255.0)


def is_textured(mesh: trimesh.Trimesh) -> bool:
    """Whether the mesh shows a texture image: texture visuals with per-vertex UVs and an image in its
    material (``SimpleMaterial.image`` from OBJ/MTL, ``PBRMaterial.baseColorTexture`` from glTF)."""
    visual = mesh.visual
    if not isinstance(visual, trimesh.visual.TextureVisuals) or visual.uv is None or len(visual.uv) != len(mesh.vertices):
        return False
    material = visual.material
    return getattr(material, "image", None) is not None or getattr(material, "baseColorTexture", None) is not None


def prepare_for_shading(scene: trimesh.Scene) -> tuple[trimesh.Scene, int]:
    """The scene as every renderer shades it, and the number of faces dropped; the input is not modified.

    Each mesh instance is placed in the object frame (its node transform applied, one mesh per node, in the
    scene graph's order), and of faces with the same corner positions, in one mesh or several (ShapeNet's
    models hold most faces twice, often a textured copy over a plain one), one is kept: a textured one
    (:func:`is_textured`) before an untextured one, then the brighter material (:func:`keep_rank`), then
    the earliest; Blender keeps the same one
    (:func:`voxforge.renderers.blender.geometry.clean_for_shading`). Winding is left
    as it is: these meshes are shaded with face normals, two-sided. A renderer that draws the meshes in the
    returned order gets the same image every time (pyrender draws meshes in a set's order otherwise)."""
    pieces = []
    for node_name in scene.graph.nodes_geometry:
        transform, geometry_name = scene.graph[node_name]
        geometry = scene.geometry[geometry_name]
        if not isinstance(geometry, trimesh.Trimesh) or len(geometry.faces) == 0:
            continue
        mesh = geometry.copy()
        mesh.apply_transform(transform)
        pieces.append((node_name, mesh))
    prepared = trimesh.Scene()
    prepared.metadata.update(scene.metadata)
    if not pieces:
        return prepared, 0
    offsets = np.cumsum([0] + [len(mesh.vertices) for _, mesh in pieces])
    priority = np.concatenate([np.full(len(mesh.faces), _mesh_rank(mesh)) for _, mesh in pieces])
    duplicate = coincident_face_mask(np.concatenate([mesh.vertices for _, mesh in pieces]),
                                     np.concatenate([mesh.faces + offset for (_, mesh), offset in zip(pieces, offsets)]),
                                     priority=priority)
    start = 0
    for node_name, mesh in pieces:
        mine = duplicate[start:start + len(mesh.faces)]
        start += len(mesh.faces)
        if mine.all():
            continue
        if mine.any():
            mesh.update_faces(~mine)
        prepared.add_geometry(mesh, node_name=node_name, geom_name=node_name)
    dropped = int(duplicate.sum())
    if dropped:
        log.debug("dropped %d coincident faces before shading", dropped)
    return prepared, dropped


def two_sided_fragment_shader(source: str) -> str:
    """pyrender's ``mesh.frag`` with back faces lit through their flipped normal.

    Raises RuntimeError when the shader does not have the expected normal line (another pyrender version)."""
    if PYRENDER_NORMAL_LINE not in source:
        raise RuntimeError("pyrender's mesh.frag has changed: cannot make its shading two-sided "
                           f"(no line {PYRENDER_NORMAL_LINE!r})")
    return source.replace(PYRENDER_NORMAL_LINE, TWO_SIDED_NORMAL, 1)
