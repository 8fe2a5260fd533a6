"""Moving triangles between trimesh and Blender: building objects from a trimesh scene, and reading
the evaluated triangles of what Blender has loaded.

A trimesh scene is built directly (no temporary file) when there is no file Blender can read: the
procedural source, OFF files, a file whose import did not land where the pipeline's geometry is.
Face and vertex colours become per-colour materials (few colours, as the procedural objects have) or
a colour attribute; a texture becomes an image texture on the mesh's UVs.
"""

from __future__ import annotations

import numpy as np
import trimesh

from voxforge.renderers.shading import PLAIN_COLOR, srgb_to_linear  # noqa: F401 - srgb_to_linear: the renderer's too

MAX_COLOR_MATERIALS = 32  # beyond this many distinct face colours, one colour attribute is used instead
GEOMETRY_TYPES = {"MESH", "CURVE", "SURFACE", "FONT", "META", "CURVES", "POINTCLOUD", "VOLUME"}


def _new_mesh(bpy, name: str, vertices: np.ndarray, faces: np.ndarray):
    mesh = bpy.data.meshes.new(name)
    mesh.vertices.add(len(vertices))
    mesh.vertices.foreach_set("co", np.ascontiguousarray(vertices, np.float32).ravel())
    mesh.loops.add(3 * len(faces))
    mesh.loops.foreach_set("vertex_index", np.ascontiguousarray(faces, np.int32).ravel())
    mesh.polygons.add(len(faces))
    mesh.polygons.foreach_set("loop_start", np.arange(0, 3 * len(faces), 3, dtype=np.int32))
    mesh.update(calc_edges=True)
    return mesh


def _principled(material):
    return next(n for n in material.node_tree.nodes if n.type == "BSDF_PRINCIPLED")


def _color_material(bpy, name: str, rgba: np.ndarray):
    """A plain material of one sRGB colour (uint8 RGBA), shown by every engine."""
    material = bpy.data.materials.new(name)
    linear = srgb_to_linear(rgba[:3] / 255.0)
    color = (*linear, rgba[3] / 255.0)
    _principled(material).inputs["Base Color"].default_value = color
    material.diffuse_color = color  # what Workbench shows
    return material


def _attribute_material(bpy, name: str, attribute: str):
    """A material whose base colour is the mesh's colour attribute ``attribute``."""
    material = bpy.data.materials.new(name)
    nodes, links = material.node_tree.nodes, material.node_tree.links
    node = nodes.new("ShaderNodeAttribute")
    node.attribute_name = attribute
    links.new(node.outputs["Color"], _principled(material).inputs["Base Color"])
    return material


def _image_from_pil(bpy, name: str, image) -> object:
    rgba = np.asarray(image.convert("RGBA"), np.float32) / 255.0
    height, width = rgba.shape[:2]
    blender_image = bpy.data.images.new(name, width, height, alpha=True)
    blender_image.pixels.foreach_set(np.ascontiguousarray(rgba[::-1]).ravel())  # Blender's rows go up
    blender_image.pack()
    return blender_image


def _texture_material(bpy, name: str, visual) -> object:
    material = bpy.data.materials.new(name)
    source = visual.material
    image = getattr(source, "image", None) or getattr(source, "baseColorTexture", None)
    principled = _principled(material)
    if image is not None:
        nodes = material.node_tree.nodes
        texture = nodes.new("ShaderNodeTexImage")
        texture.image = _image_from_pil(bpy, name, image)
        material.node_tree.links.new(texture.outputs["Color"], principled.inputs["Base Color"])
        nodes.active = texture  # Workbench's texture mode shows the active image node
    else:
        rgba = np.asarray(source.main_color, np.float64)
        principled.inputs["Base Color"].default_value = (*srgb_to_linear(rgba[:3] / 255.0), 1.0)
    material.diffuse_color = (*srgb_to_linear(np.asarray(source.main_color[:3]) / 255.0), 1.0)
    return material


def _dress(bpy, mesh, geometry: trimesh.Trimesh, name: str) -> None:
    """Materials, UVs and colours from the trimesh visual (plain grey when there is none)."""
    visual = geometry.visual
    faces = geometry.faces
    if isinstance(visual, trimesh.visual.TextureVisuals) and visual.uv is not None and len(visual.uv) == len(geometry.vertices):
        uv_layer = mesh.uv_layers.new(name="UVMap")
        uv_layer.data.foreach_set("uv", np.ascontiguousarray(visual.uv[faces], np.float32).ravel())
        mesh.materials.append(_texture_material(bpy, name, visual))
        return
    if isinstance(visual, trimesh.visual.ColorVisuals) and visual.kind in ("face", "vertex"):
        if visual.kind == "face":
            colors, inverse = np.unique(visual.face_colors, axis=0, return_inverse=True)
            if len(colors) <= MAX_COLOR_MATERIALS:
                for index, rgba in enumerate(colors):
                    mesh.materials.append(_color_material(bpy, f"{name}.{index}", rgba))
                mesh.polygons.foreach_set("material_index", inverse.ravel().astype(np.int32))
                return
            corner_colors = np.repeat(visual.face_colors, 3, axis=0)
        else:
            corner_colors = visual.vertex_colors[faces.ravel()]
        attribute = mesh.color_attributes.new("Color", "BYTE_COLOR", "CORNER")
        attribute.data.foreach_set("color_srgb", (corner_colors / 255.0).astype(np.float32).ravel())
        mesh.color_attributes.active_color = attribute
        mesh.materials.append(_attribute_material(bpy, name, "Color"))
        return
    material = getattr(visual, "material", None)  # a texture without UVs (COLLADA, say): its main colour
    color = np.asarray(material.main_color) if material is not None else np.array(PLAIN_COLOR)
    mesh.materials.append(_color_material(bpy, name, color))


def build_from_trimesh(bpy, scene: trimesh.Scene, collection) -> list:
    """Blender objects for every triangle mesh of ``scene`` (node transforms kept, meshes shared)."""
    meshes, objects = {}, []
    for node_name in scene.graph.nodes_geometry:
        transform, geometry_name = scene.graph[node_name]
        geometry = scene.geometry[geometry_name]
        if not isinstance(geometry, trimesh.Trimesh) or len(geometry.faces) == 0:
            continue
        if geometry_name not in meshes:
            mesh = _new_mesh(bpy, geometry_name, geometry.vertices, geometry.faces)
            _dress(bpy, mesh, geometry, geometry_name)
            meshes[geometry_name] = mesh
        obj = bpy.data.objects.new(node_name, meshes[geometry_name])
        obj.matrix_world = blender_matrix(transform)
        collection.objects.link(obj)
        objects.append(obj)
    return objects


def evaluated_triangles(bpy) -> list[np.ndarray]:
    """World-space triangles (T, 3, 3) of every rendered geometry instance, modifiers applied."""
    depsgraph = bpy.context.evaluated_depsgraph_get()
    parts = []
    for instance in depsgraph.object_instances:
        obj = instance.object
        if obj.type not in GEOMETRY_TYPES or not instance.show_self or obj.hide_render:
            continue
        try:
            mesh = obj.to_mesh()
        except RuntimeError:
            continue
        if mesh is None:
            continue
        try:
            mesh.calc_loop_triangles()
            count = len(mesh.loop_triangles)
            if count:
                vertices = np.empty(3 * len(mesh.vertices), np.float32)
                mesh.vertices.foreach_get("co", vertices)
                indices = np.empty(3 * count, np.int32)
                mesh.loop_triangles.foreach_get("vertices", indices)
                matrix = np.array(instance.matrix_world, np.float64)
                points = vertices.reshape(-1, 3).astype(np.float64) @ matrix[:3, :3].T + matrix[:3, 3]
                parts.append(points[indices.reshape(-1, 3)])
        finally:
            obj.to_mesh_clear()
    return parts


def triangle_summary(triangles: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bounding box low/high and area-weighted centroid of (T, 3, 3) triangles.

    The centroid catches a mirrored or rotated import that a centred bounding box cannot.
    """
    low, high = triangles.reshape(-1, 3).min(axis=0), triangles.reshape(-1, 3).max(axis=0)
    areas = 0.5 * np.linalg.norm(np.cross(triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0]), axis=1)
    centers = triangles.mean(axis=1)
    centroid = (centers * areas[:, None]).sum(axis=0) / max(areas.sum(), 1e-30)
    return low, high, centroid


def trimesh_triangles(scene: trimesh.Scene) -> np.ndarray:
    parts = [g.triangles for g in scene.dump() if isinstance(g, trimesh.Trimesh) and len(g.faces)]
    return np.concatenate(parts) if parts else np.zeros((0, 3, 3))


def blender_matrix(array: np.ndarray):
    """A 4x4 array as a ``mathutils.Matrix`` (row-major; a nested list given to bpy would be read by columns)."""
    import mathutils

    return mathutils.Matrix([[float(value) for value in row] for row in np.asarray(array, float)])


def linear_to_srgb(values: np.ndarray) -> np.ndarray:
    """Blender's ``Standard`` view transform for an sRGB display: clip, then the sRGB curve."""
    values = np.clip(values, 0.0, 1.0)
    return np.where(values <= 0.0031308, values * 12.92, 1.055 * np.power(values, 1 / 2.4) - 0.055)


def shows_texture(material) -> bool:
    """Whether ``material`` shows an image: an image-texture node with an image, feeding something (an
    image left out as unsafe or missing has had its links removed)."""
    tree = material.node_tree if material is not None else None
    return tree is not None and any(node.type == "TEX_IMAGE" and node.image is not None
                                    and any(output.is_linked for output in node.outputs) for node in tree.nodes)


def _material_rank(material) -> int:
    from voxforge.renderers.shading import keep_rank

    if material is None:
        return keep_rank(False, np.asarray(PLAIN_COLOR[:3]) / 255.0)
    nodes = material.node_tree.nodes if material.node_tree is not None else ()
    principled = next((node for node in nodes if node.type == "BSDF_PRINCIPLED"), None)  # not every material has one
    color = principled.inputs["Base Color"].default_value[:3] if principled is not None else material.diffuse_color[:3]
    return keep_rank(shows_texture(material), color)


def polygon_priority(obj) -> np.ndarray:
    """(P,) int per polygon of ``obj``: the rank of its material
    (:func:`voxforge.renderers.shading.keep_rank`: textured first, then brighter), the order in which
    :func:`voxforge.renderers.shading.coincident_polygon_mask` keeps coincident faces, as for pyrender."""
    mesh = obj.data
    slots = np.array([_material_rank(slot.material) for slot in obj.material_slots]
                     or [_material_rank(None)], np.int64)
    indices = np.empty(len(mesh.polygons), np.int64)
    mesh.polygons.foreach_get("material_index", indices)
    return slots[np.clip(indices, 0, len(slots) - 1)]


def clean_for_shading(bpy) -> int:
    """Prepare every mesh Blender holds for shading (:mod:`voxforge.renderers.shading`): of faces with the
    same world-space corner positions (in one object or several), one is kept, one whose material shows a
    texture before one whose does not, then the brighter material, then the earliest (objects by name,
    faces in order), as
    :func:`voxforge.renderers.shading.prepare_for_shading` keeps for pyrender; face normals are
    recalculated so that each connected region winds consistently and faces outward (Blender's
    "Recalculate Outside"), and the mesh is validated. A mesh shared by several objects (instances) loses
    no face, since a face cannot be deleted from one instance alone. Returns the faces deleted.

    OBJ files are imported without Blender's own validation (:mod:`.importers`), which would drop
    duplicate faces first, keeping whichever comes first in the file whatever its material.
    Only what is rendered changes; voxels and points come from the pipeline's own triangles."""
    import bmesh

    from voxforge.renderers.shading import coincident_polygon_mask

    bpy.context.view_layer.update()  # world matrices of objects just parented under the frame's empty
    objects = sorted((obj for obj in bpy.data.objects
                      if obj.type == "MESH" and obj.data is not None and len(obj.data.polygons)), key=lambda o: o.name)
    parts, vertex_offset, loop_offset = [], 0, 0
    for obj in objects:
        mesh = obj.data
        coordinates = np.empty(3 * len(mesh.vertices), np.float64)
        mesh.vertices.foreach_get("co", coordinates)
        matrix = np.array(obj.matrix_world)
        world = coordinates.reshape(-1, 3) @ matrix[:3, :3].T + matrix[:3, 3]
        starts, totals = np.empty(len(mesh.polygons), np.int64), np.empty(len(mesh.polygons), np.int64)
        mesh.polygons.foreach_get("loop_start", starts)
        mesh.polygons.foreach_get("loop_total", totals)
        loops = np.empty(len(mesh.loops), np.int64)
        mesh.loops.foreach_get("vertex_index", loops)
        parts.append((world, loops + vertex_offset, starts + loop_offset, totals, polygon_priority(obj)))
        vertex_offset += len(world)
        loop_offset += len(loops)
    if not parts:
        return 0
    all_world, all_loops, all_starts, all_totals, all_priority = (np.concatenate(column) for column in zip(*parts))
    duplicate = coincident_polygon_mask(all_world, all_loops, all_starts, all_totals, priority=all_priority)
    flagged: dict = {}
    start = 0
    for obj, (_, _, starts, _, _) in zip(objects, parts):
        mine = duplicate[start:start + len(starts)]
        start += len(starts)
        if obj.data.users == 1:
            flagged[obj.data] = np.flatnonzero(mine)
        else:
            flagged.setdefault(obj.data, np.zeros(0, np.int64))
    deleted = 0
    for mesh, faces in flagged.items():
        editable = bmesh.new()
        try:
            editable.from_mesh(mesh)
            if len(faces):
                editable.faces.ensure_lookup_table()
                bmesh.ops.delete(editable, geom=[editable.faces[int(i)] for i in faces], context="FACES_ONLY")
            bmesh.ops.recalc_face_normals(editable, faces=editable.faces[:])
            editable.to_mesh(mesh)
        finally:
            editable.free()
        mesh.validate(verbose=False)
        mesh.update()
        deleted += len(faces)
    return deleted


def give_plain_materials(bpy) -> int:
    """Every imported mesh without a material gets one: its colour attribute when it has one (a PLY's vertex
    colours), else the plain grey :data:`PLAIN_COLOR` that meshes built from trimesh get, so that a file
    without materials looks the same whichever renderer or reader handles it (Blender's own default
    surface is a lighter grey). Returns the meshes changed."""
    changed = 0
    for mesh in {obj.data for obj in bpy.data.objects if obj.type == "MESH" and obj.data is not None}:
        if any(material is not None for material in mesh.materials):
            continue
        mesh.materials.clear()
        active = mesh.color_attributes.active_color
        if active is not None:
            mesh.materials.append(_attribute_material(bpy, f"{mesh.name}.colors", active.name))
        else:
            mesh.materials.append(_color_material(bpy, f"{mesh.name}.plain", np.array(PLAIN_COLOR)))
        changed += 1
    return changed
