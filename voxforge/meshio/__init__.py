"""Reading mesh files as the file describes them.

trimesh reads most formats; where its reading differs from the format's specification, voxforge
reads the file itself first:

- glTF 2.0 (:mod:`.gltf`): every accessor is decoded by the specification (sparse substitution,
  normalized and quantized integers, Draco and meshopt compression, default weights of morph
  targets, ``KHR_texture_transform``, ``EXT_mesh_gpu_instancing``) into a plain, self-contained GLB
  that trimesh and Blender then both read, so every renderer sees the same triangles and textures;
- OBJ (:mod:`.obj`) and PLY (:mod:`.ply`): concave n-gons are triangulated in their plane (ear
  clipping) instead of as fans; OBJ companions named in other encodings are found (:mod:`.names`);
- OFF (:mod:`.off`): faces of any size, mixed, triangulated the same way.

A file that cannot be read as it is written raises :class:`MeshFileError` with the cause; what was
read but not fully honoured (a missing texture, an ignored extension) becomes a warning carried with
the scene (:func:`warnings_of`) into the sample's metadata and its manifest row.
"""

from __future__ import annotations

from pathlib import Path

import trimesh

WARNINGS_KEY = "voxforge_warnings"
IMPORT_BYTES_KEY = "voxforge_import_glb"  # the self-contained GLB a file-reading renderer imports instead


class MeshFileError(ValueError):
    """The file cannot be read as it is written; the message names the cause."""


class Limits:
    """Bounds checked against what a file declares, before its data is read or allocated (process-wide;
    a pipeline worker sets them from its run's settings)."""

    max_triangles: int = 10_000_000  # after polygons are split and instances placed; real large assets pass
    max_texture_pixels: int = 8192 * 8192  # width x height of one texture image (Objaverse's largest are 8K)


PILLOW_MAX_IMAGE_PIXELS = 89_478_485  # Pillow's own default: it warns above this and refuses twice this


def set_limits(max_triangles: int, max_texture_pixels: int) -> None:
    """Set :class:`Limits` for this process (0 = no limit), and Pillow's decompression-bomb bound with it,
    so Pillow (which decodes textures for pyrender) neither refuses an image the limit allows (it refuses
    above 2 x ``Image.MAX_IMAGE_PIXELS``, 179M pixels by default) nor warns about one."""
    from PIL import Image

    Limits.max_triangles, Limits.max_texture_pixels = max_triangles, max_texture_pixels
    Image.MAX_IMAGE_PIXELS = None if max_texture_pixels == 0 else max(max_texture_pixels, PILLOW_MAX_IMAGE_PIXELS)


def check_triangles(count: int, what: str) -> None:
    """Raise :class:`MeshFileError` when ``count`` triangles (declared by ``what``) exceed the limit."""
    if Limits.max_triangles and count > Limits.max_triangles:
        raise MeshFileError(f"{what} declares {count:,} triangles, above the limit of {Limits.max_triangles:,} "
                            "(--max-triangles)")


def warnings_of(scene: trimesh.Scene) -> list[str]:
    """What reading the file did not fully honour (empty for a file read exactly)."""
    return list(scene.metadata.get(WARNINGS_KEY, []))


class Attached:
    """Bytes carried in a scene's metadata without being copied or printed along with it (trimesh copies
    and hashes metadata as it transforms a scene: a few MB of GLB doubled the load stage's time)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __copy__(self) -> "Attached":
        return self

    def __deepcopy__(self, memo) -> "Attached":
        return self

    def __repr__(self) -> str:
        return f"<{len(self.data)} bytes>"


def import_bytes_of(scene: trimesh.Scene) -> bytes | None:
    """The GLB a renderer that imports files itself should import in place of the original, if any."""
    attached = scene.metadata.get(IMPORT_BYTES_KEY)
    return attached.data if isinstance(attached, Attached) else None


def load_mesh_file(path: str | Path) -> trimesh.Scene:
    """The file's meshes as a scene in file coordinates (node transforms applied by trimesh's graph).

    Raises :class:`MeshFileError` when the file cannot be read as written.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    warnings: list[str] = []
    if suffix == ".stl":
        check_triangles(_stl_triangles(path), "the STL file")
    if suffix in (".gltf", ".glb"):
        from voxforge.meshio.gltf import plain_glb

        glb, warnings = plain_glb(path)
        scene = trimesh_load(path, data=glb, file_type="glb")
        scene.metadata[IMPORT_BYTES_KEY] = Attached(glb)
    elif suffix == ".obj":
        from voxforge.meshio.obj import load_obj

        scene, warnings = load_obj(path)
    elif suffix == ".ply":
        from voxforge.meshio.ply import load_ply

        scene, warnings = load_ply(path)
    elif suffix == ".off":
        from voxforge.meshio.off import load_off

        scene = load_off(path)
    else:
        scene = trimesh_load(path)
    scene.metadata[WARNINGS_KEY] = warnings
    return scene


def _stl_triangles(path: Path) -> int:
    """Triangles an STL file declares: binary STL's count field, or its ``facet`` lines when it is text."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(84)
        if len(head) == 84:
            declared = int.from_bytes(head[80:84], "little")
            if 84 + 50 * declared == size:  # a binary STL is exactly its header and 50 bytes a triangle
                return declared
        return (head + handle.read()).count(b"facet normal") if head.lstrip().lower().startswith(b"solid") else 0


def trimesh_load(path: Path, data: bytes | None = None, file_type: str | None = None) -> trimesh.Scene:
    """trimesh's reading of ``path`` (or of ``data`` in its place), with the companions resolver of
    :mod:`.names` and a file name every output can hold (a latin-1 byte in a name must not fail the
    scene graph's UTF-8 hashing). ``process=False``: the file as it is, so broken input (NaN vertices) is
    reported, not hidden."""
    from voxforge.meshio.names import FolderResolver, portable_name

    if data is None:
        data = path.read_bytes()
    return trimesh.load(trimesh.util.wrap_as_stream(data), file_type=file_type or path.suffix.lower().lstrip("."),
                        resolver=FolderResolver(str(path)), force="scene", process=False,
                        metadata={"file_name": portable_name(path.name)})
