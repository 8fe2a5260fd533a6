"""Reading mesh files into Blender with their materials and textures, and placing them in the object frame.

How the Blender renderer gets the mesh: the pipeline's load stage reads the file with trimesh,
normalizes it (bounding box centred, unit diagonal) and records the file and that ``source_to_object``
matrix on the scene (:func:`voxforge.renderers.base.source_file_of`). The Blender renderer imports the
original file itself, so materials and textures come through Blender's own importers, and hangs every
imported root object under one empty whose matrix is ``source_to_object @ inverse(to_blender)``:
``to_blender`` undoes the importer's axis change (glTF is converted from +Y up to Blender's +Z up; the
OBJ, PLY and STL importers are told to keep the file's axes). The result is then checked against the
pipeline's own triangles (bounding box and area-weighted centroid); a file Blender reads differently
(an axis or unit convention, or n-gons with holes that the two readers triangulate differently) is
rendered from the pipeline's triangles instead, and the sample records a warning with both readings'
bounds, so images and voxels always agree. glTF files are imported as the plain GLB the pipeline decoded
them into (``SourceFile.data``; see :mod:`voxforge.meshio.gltf`), so both read the same accessors.

Formats Blender cannot read (OFF; COLLADA, whose importer Blender 5.0 removed: trimesh reads it with
pycollada) are built from the trimesh scene, colours and textures included. FBX and ``.blend``
files, which trimesh cannot read, are loaded for the pipeline by :func:`load_with_blender`, so for
them "source coordinates" are Blender's own (``to_blender`` = I).
A ``.blend`` file is appended with ``bpy.data.libraries.load`` and Python auto-execution off: its
registered scripts and Python driver expressions never run. Before Blender opens it, every file it refers
to is listed from its blocks (:mod:`.blendfile`) and a library or other file outside the object's folder
refuses it, so Blender never reads them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import trimesh

from voxforge.meshio import WARNINGS_KEY
from voxforge.renderers.blender import runtime
from voxforge.renderers.blender.geometry import blender_matrix, evaluated_triangles, triangle_summary

log = logging.getLogger(__name__)

Y_UP_TO_Z_UP = np.array([[1.0, 0, 0, 0], [0, 0, -1.0, 0], [0, 1.0, 0, 0], [0, 0, 0, 1.0]])
KEEP_AXES = {"forward_axis": "Y", "up_axis": "Z"}  # Blender's own axes: the importer changes nothing
# object-frame units (the object's diagonal is 1): bounds must agree closely; the area-weighted centroid
# a little less, as importers other than OBJ's validate meshes and drop duplicate faces that trimesh keeps
# (and counts twice)
BOUNDS_TOLERANCE, CENTROID_TOLERANCE = 2e-3, 5e-3


class BlenderImportError(RuntimeError):
    """Blender could not read the file; the message carries Blender's own output."""


@dataclass(frozen=True)
class Importer:
    run: Callable[[object, str], None]
    to_blender: np.ndarray  # 4x4: file coordinates (as trimesh reads them) -> Blender world


def _obj(bpy, path: str) -> None:
    # Not validated here: validation drops duplicate faces keeping the first in the file whatever its
    # material, where clean_for_shading keeps a textured copy as pyrender does, then validates. The
    # importer itself skips faces with out-of-range indices or fewer than 3 corners and splits faces that
    # use a vertex twice, so the mesh it makes is sound until then.
    bpy.ops.wm.obj_import(filepath=path, validate_meshes=False, **KEEP_AXES)


def _ply(bpy, path: str) -> None:
    bpy.ops.wm.ply_import(filepath=path, **KEEP_AXES)


def _stl(bpy, path: str) -> None:
    bpy.ops.wm.stl_import(filepath=path, **KEEP_AXES)


def _gltf(bpy, path: str) -> None:
    bpy.ops.import_scene.gltf(filepath=path, import_select_created_objects=False)


def _fbx(bpy, path: str) -> None:
    bpy.ops.import_scene.fbx(filepath=path, use_anim=False, use_custom_props=False)


def _blend(bpy, path: str) -> None:
    """Append the file's first scene (or, without scenes, its objects), scripts never run."""
    runtime.forbid_scripts()
    with bpy.data.libraries.load(path, link=False) as (source, target):
        has_scene = bool(source.scenes)
        if has_scene:
            target.scenes = source.scenes[:1]
        else:
            target.objects = list(source.objects)
    main = bpy.context.scene
    for appended in [s for s in bpy.data.scenes if s != main]:
        for child in appended.collection.children:
            main.collection.children.link(child)
        for obj in appended.collection.objects:
            main.collection.objects.link(obj)
    if not has_scene:  # a library of loose objects: show them all
        for obj in bpy.data.objects:
            if not obj.users_scene:
                main.collection.objects.link(obj)
    for text in list(bpy.data.texts):  # nothing can run them now, and nothing should keep them
        bpy.data.texts.remove(text)
    root = os.path.realpath(Path(path).parent.parent)
    outside = [library.filepath for library in bpy.data.libraries
               if not os.path.realpath(bpy.path.abspath(library.filepath, library=library)).startswith(root + os.sep)]
    if outside:  # checked before opening (blendfile.check_references); kept as a second line of defence
        raise BlenderImportError(f"{Path(path).name} would make Blender read files outside the object's "
                                 f"folder: {', '.join(outside[:3])}")


IMPORTERS: dict[str, Importer] = {
    ".obj": Importer(_obj, np.eye(4)),
    ".ply": Importer(_ply, np.eye(4)),
    ".stl": Importer(_stl, np.eye(4)),
    ".glb": Importer(_gltf, Y_UP_TO_Z_UP),
    ".gltf": Importer(_gltf, Y_UP_TO_Z_UP),
    ".fbx": Importer(_fbx, np.eye(4)),
    ".blend": Importer(_blend, np.eye(4)),
}
BLENDER_ONLY_SUFFIXES = {".fbx", ".blend"}  # trimesh cannot read these; load_with_blender can


def importer_for(path: str | Path) -> Importer | None:
    return IMPORTERS.get(Path(path).suffix.lower())


def import_file(bpy, path: str | Path) -> tuple[list, list[str]]:
    """Import ``path`` into the (empty) scene; returns the imported objects (cameras and lights removed)
    and the warnings of the images left out (:func:`drop_unsafe_images`)."""
    importer = importer_for(path)
    if importer is None:
        raise BlenderImportError(f"Blender has no importer for {Path(path).suffix!r} files")
    if not Path(path).is_file():
        raise BlenderImportError(f"{path}: no such file")
    if Path(path).suffix.lower() == ".blend":  # Blender reads linked libraries as it opens the file
        from voxforge.renderers.blender.blendfile import BlendReferenceError, check_references

        try:
            check_references(path)
        except BlendReferenceError as error:
            raise BlenderImportError(str(error)) from None
    before = set(bpy.data.objects)
    log_start = runtime.log_size()
    with runtime.blender_output():
        try:
            importer.run(bpy, str(path))
        except Exception as error:
            said = runtime.blender_said(since=log_start, chars=800)
            raise BlenderImportError(f"Blender could not import {Path(path).name}: {str(error).strip()}"
                                     + (f"; Blender said: {said}" if said else "")) from error
    imported = [o for o in bpy.data.objects if o not in before]
    unwanted = [o for o in imported if o.type in ("CAMERA", "LIGHT", "LIGHT_PROBE", "SPEAKER")]
    if unwanted:
        bpy.data.batch_remove(unwanted)
    imported = [o for o in imported if o not in unwanted]
    warnings = drop_unsafe_images(bpy, Path(path))
    if not any(o.type in ("MESH", "CURVE", "SURFACE", "FONT", "META", "EMPTY") for o in imported):
        said = runtime.blender_said(since=log_start, chars=800)
        raise BlenderImportError(f"Blender imported no geometry from {Path(path).name}"
                                 + (f"; Blender said: {said}" if said else ""))
    return imported, warnings


def unsafe_material_libraries(mesh_path: Path) -> list[str]:
    """The ``mtllib`` names of an OBJ file that Blender's importer would read from outside the file's folder
    (or the one above it), or from something that is not a regular file (``/dev/zero``, a FIFO), symlinks
    resolved; such a file is not imported by Blender at all (the pipeline's own reading, which never
    follows them, is rendered instead)."""
    from voxforge.meshio.obj import mtllib_names

    if mesh_path.suffix.lower() != ".obj":
        return []
    root = os.path.realpath(mesh_path.parent.parent)
    unsafe = []
    for name in mtllib_names(mesh_path.read_bytes()):
        text = os.fsdecode(name).replace("\\", "/")
        location = os.path.realpath(mesh_path.parent / text)
        inside = location.startswith(root + os.sep)
        if not inside or (os.path.exists(location) and not os.path.isfile(location)):
            unsafe.append(text)
    return unsafe


def drop_unsafe_images(bpy, mesh_path: Path) -> list[str]:
    """Forget images an untrusted file pulls in that must not be rendered, before anything decodes them
    (Blender reads an image's pixels on first use, not on import); returns a warning for each.

    - from outside the file's folder, or the one above it (where ShapeNet keeps ``../images/``), symlinks
      resolved: an ``/home/...`` or ``../../..`` texture path must not put other files of this machine
      into the dataset;
    - larger than :attr:`voxforge.meshio.Limits.max_texture_pixels`, or with a header that cannot be read
      (:func:`voxforge.meshio.images.texture_problem`), packed images included.
    """
    from voxforge.meshio.images import texture_problem

    root = os.path.realpath(mesh_path.parent.parent)
    warnings = []
    for image in list(bpy.data.images):
        if image.source not in ("FILE", "SEQUENCE", "TILED"):
            continue
        if image.packed_file is not None:
            problem = texture_problem(bytes(image.packed_file.data), image.name)
        else:
            location = os.path.realpath(bpy.path.abspath(image.filepath, library=image.library))
            if location != root and not location.startswith(root + os.sep):
                log.warning("%s: ignoring texture %s, outside the mesh's folder", mesh_path.name, image.filepath)
                problem = (f"texture image '{image.name}' is outside the object's folder: rendered with the "
                           "material's base colour")
            elif not os.path.isfile(location):
                continue  # absent: drop_missing_images reports it
            else:
                problem = texture_problem(location, image.name)
        if problem:
            warnings.append(problem)
            _forget_image(bpy, image)
    return warnings


def _forget_image(bpy, image) -> None:
    """Unlink every image-texture node showing ``image`` (its material falls back to the base colour) and
    remove the image."""
    for material in bpy.data.materials:
        for node in material.node_tree.nodes if material.node_tree else ():
            if node.type == "TEX_IMAGE" and node.image == image:
                for output in node.outputs:
                    for link in list(output.links):
                        material.node_tree.links.remove(link)
    bpy.data.images.remove(image)


def drop_missing_images(bpy) -> list[str]:
    """Unlink image textures whose file could not be read (absent, or a format Blender cannot decode), so
    their materials show the base colour instead of Blender's magenta placeholder; returns their names."""
    missing = []
    for image in list(bpy.data.images):
        if image.source not in ("FILE", "SEQUENCE") or tuple(image.size) != (0, 0):
            continue
        missing.append(image.name)
        _forget_image(bpy, image)
    return missing


def place_in_object_frame(bpy, objects: list, source_to_object: np.ndarray, to_blender: np.ndarray):
    """Hang the imported roots under one empty holding ``source_to_object @ inverse(to_blender)``."""
    frame = bpy.data.objects.new("voxforge_object_frame", None)
    bpy.context.scene.collection.objects.link(frame)
    matrix = np.asarray(source_to_object, float) @ np.linalg.inv(to_blender)
    frame.matrix_world = blender_matrix(matrix)
    for obj in objects:
        if obj.parent is None:
            obj.parent = frame
    bpy.context.view_layer.update()
    return frame


def frame_mismatch(bpy, expected: np.ndarray) -> str | None:
    """Why what Blender shows differs from the pipeline's triangles ``expected`` (None when it agrees)."""
    parts = evaluated_triangles(bpy)
    if not parts:
        return "no triangles after import"
    low, high, centroid = triangle_summary(np.concatenate(parts))
    want_low, want_high, want_centroid = triangle_summary(expected)
    bounds_off = max(np.abs(low - want_low).max(), np.abs(high - want_high).max())
    centroid_off = np.abs(centroid - want_centroid).max()
    worst = max(bounds_off, centroid_off)
    if bounds_off > BOUNDS_TOLERANCE or centroid_off > CENTROID_TOLERANCE:
        return (f"bounds {np.round(low, 3).tolist()}..{np.round(high, 3).tolist()} and centroid "
                f"{np.round(centroid, 3).tolist()} differ from the pipeline's {np.round(want_low, 3).tolist()}.."
                f"{np.round(want_high, 3).tolist()}, {np.round(want_centroid, 3).tolist()} (by {worst:.4f})")
    return None


def load_with_blender(path: str | Path) -> trimesh.Scene:
    """The triangles Blender reads from ``path`` (FBX, .blend, ...) as a trimesh scene, in source
    coordinates (Blender's world for formats only Blender reads). Used by the local source."""
    runtime.load_bpy()
    return runtime.call(_load_with_blender, path)


def _load_with_blender(path: str | Path) -> trimesh.Scene:
    bpy = runtime.load_bpy()
    importer = importer_for(path)
    if importer is None:
        raise BlenderImportError(f"Blender has no importer for {Path(path).suffix!r} files")
    runtime.bound_log()
    with runtime.blender_output():
        runtime.clear_object_data()
    _, warnings = import_file(bpy, path)
    from_blender = np.linalg.inv(importer.to_blender)
    scene = trimesh.Scene()
    scene.metadata[WARNINGS_KEY] = warnings
    with runtime.blender_output():  # evaluating drivers prints (a disabled Python driver says so)
        parts = evaluated_triangles(bpy)
    for index, triangles in enumerate(parts):
        points = triangles.reshape(-1, 3) @ from_blender[:3, :3].T + from_blender[:3, 3]
        faces = np.arange(len(points)).reshape(-1, 3)
        scene.add_geometry(trimesh.Trimesh(points, faces, process=False), geom_name=f"part{index}")
    with runtime.blender_output():
        runtime.clear_object_data()
    return scene
