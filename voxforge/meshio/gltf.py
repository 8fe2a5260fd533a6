"""glTF 2.0 decoded by the specification into a plain, self-contained GLB.

Every accessor a mesh uses is read as the specification says (glTF 2.0, sections 3.6 and 5.1):
strided buffer views, sparse substitution (``accessor.sparse``), accessors without a buffer view
(zeros), normalized integers (``KHR_mesh_quantization`` and colours: ``max(c / (2^(b-1) - 1), -1)``
for signed, ``c / (2^b - 1)`` for unsigned types), Draco-compressed primitives
(``KHR_draco_mesh_compression``, decoded with DracoPy) and meshopt-compressed buffer views
(``EXT_meshopt_compression``, decoded with the ``meshoptimizer`` package, filters included). Morph
targets are applied with the node's ``weights``, else the mesh's; ``EXT_mesh_gpu_instancing`` becomes one
node per instance; ``KHR_texture_transform`` of the base colour texture is applied to the texture
coordinates that texture uses. The default scene (``scene``, else the first) is the one read.

The result is a GLB whose accessors are float32 attributes and uint32 indices in one binary chunk,
with every image it can use embedded: trimesh reads it for the pipeline (node matrices, TRS and
instancing by its scene graph), and Blender imports the very same bytes, so both see the same
triangles. Images are read from the file's own folder only; one that is missing or in a format no
renderer here decodes (KTX2 / Basis Universal) is left out and its material keeps its base colour,
with a warning. A file requiring an extension not listed here fails with that reason.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import math
import struct
from collections import Counter
from pathlib import Path, PurePosixPath
from urllib.parse import unquote

import numpy as np

from voxforge.meshio import MeshFileError, check_triangles
from voxforge.meshio.images import texture_problem

GLB_MAGIC, JSON_CHUNK, BIN_CHUNK = 0x46546C67, 0x4E4F534A, 0x004E4942
COMPONENTS = {5120: np.int8, 5121: np.uint8, 5122: np.int16, 5123: np.uint16, 5125: np.uint32, 5126: np.float32}
WIDTHS = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT2": 4, "MAT3": 9, "MAT4": 16}
TRIANGLES, TRIANGLE_STRIP, TRIANGLE_FAN = 4, 5, 6
ATTRIBUTES = ("POSITION", "NORMAL", "TEXCOORD_0", "COLOR_0")  # what the renderers use
# extensions whose data this reader decodes (or that change nothing the pipeline uses)
HANDLED = {"KHR_draco_mesh_compression", "KHR_mesh_quantization", "EXT_meshopt_compression", "KHR_meshopt_compression",
           "KHR_texture_transform", "EXT_mesh_gpu_instancing", "KHR_materials_unlit", "KHR_texture_basisu",
           "EXT_texture_webp", "KHR_materials_emissive_strength", "KHR_materials_ior", "KHR_materials_specular",
           "KHR_materials_transmission", "KHR_materials_volume", "KHR_materials_clearcoat", "KHR_materials_sheen",
           "KHR_materials_variants", "KHR_lights_punctual", "KHR_materials_pbrSpecularGlossiness"}
MAX_DECODED_BYTES = 2 << 30  # per file: an accessor may declare a count far beyond its data (zeros)
MAX_NODE_DEPTH = 256  # levels of the node tree (real assets: a few dozen; skeletons about a hundred)
MAX_PLACED_NODES = 1_000_000  # node copies (a node under several parents, against the spec, is placed per path)
IMAGE_TYPES = {b"\x89PNG": "image/png", b"\xff\xd8\xff": "image/jpeg", b"RIFF": "image/webp"}


class GltfReader:
    """One glTF file's JSON and buffers, and its accessors decoded on demand."""

    def __init__(self, path: Path) -> None:
        self.path, self.folder = path, path.parent
        self.warnings: list[str] = []
        self.decoded_bytes = 0
        data = path.read_bytes()
        binary = None
        if data[:4] == struct.pack("<I", GLB_MAGIC):
            self.header, binary = self._glb(data)
        else:
            try:
                self.header = json.loads(data.decode("utf-8-sig"))
            except (UnicodeDecodeError, ValueError) as error:
                raise MeshFileError(f"not a glTF file: {error}") from error
        if not isinstance(self.header, dict):
            raise MeshFileError("not a glTF file: the JSON is not an object")
        version = str(self.header.get("asset", {}).get("version", ""))
        if not version.startswith("2"):
            raise MeshFileError(f"glTF version {version or 'missing'}: only glTF 2.0 is read")
        unsupported = sorted(set(self.header.get("extensionsRequired", [])) - HANDLED)
        if unsupported:
            raise MeshFileError(f"the file requires glTF extension(s) {', '.join(unsupported)}, which voxforge "
                                "cannot read")
        self.buffers = [self._buffer(i, b, binary) for i, b in enumerate(self.header.get("buffers", []))]
        self._views: dict[int, bytes] = {}
        self._accessors: dict[int, np.ndarray] = {}

    # -- containers and buffers ---------------------------------------------------------------------

    @staticmethod
    def _glb(data: bytes) -> tuple[dict, bytes | None]:
        if len(data) < 20:
            raise MeshFileError("truncated GLB: no JSON chunk")
        _, version, length = struct.unpack_from("<III", data, 0)
        if version != 2:
            raise MeshFileError(f"GLB container version {version}: only version 2 is read")
        if length > len(data):
            raise MeshFileError(f"truncated GLB: the header declares {length} bytes, the file has {len(data)}")
        offset, header, binary = 12, None, None
        while offset + 8 <= length:
            chunk_length, chunk_type = struct.unpack_from("<II", data, offset)
            chunk = data[offset + 8: offset + 8 + chunk_length]
            if len(chunk) < chunk_length:
                raise MeshFileError("truncated GLB: a chunk runs past the end of the file")
            if chunk_type == JSON_CHUNK and header is None:
                try:
                    header = json.loads(chunk.decode("utf-8"))
                except (UnicodeDecodeError, ValueError) as error:
                    raise MeshFileError(f"GLB JSON chunk is not valid JSON: {error}") from error
            elif chunk_type == BIN_CHUNK and binary is None:
                binary = chunk
            offset += 8 + chunk_length + (-chunk_length % 4)
        if header is None:
            raise MeshFileError("GLB without a JSON chunk")
        return header, binary

    def resolve(self, uri: str, what: str) -> bytes | None:
        """The bytes a ``uri`` names: a data URI, or a file inside the glTF's folder; None when absent."""
        if uri.startswith("data:"):
            try:
                return base64.b64decode(uri.split(",", 1)[1], validate=False)
            except (IndexError, binascii.Error) as error:
                raise MeshFileError(f"{what}: malformed data URI ({error})") from error
        relative = PurePosixPath(unquote(uri).replace("\\", "/"))
        if "://" in uri or relative.is_absolute() or ".." in relative.parts or (relative.parts and ":" in relative.parts[0]):
            raise MeshFileError(f"{what} {uri!r} points outside the file's folder")
        target = self.folder.joinpath(*relative.parts)
        try:
            inside = target.resolve().is_relative_to(self.folder.resolve())
        except OSError:
            inside = False
        if not inside:
            raise MeshFileError(f"{what} {uri!r} leads outside the file's folder")
        return target.read_bytes() if target.is_file() else None

    def _buffer(self, index: int, buffer: dict, binary: bytes | None) -> bytes | None:
        if "uri" not in buffer:
            if index == 0 and binary is not None:
                return binary
            return None  # e.g. a meshopt fallback buffer: its views must be decoded from elsewhere
        data = self.resolve(buffer["uri"], f"buffer {index}")
        if data is None:
            raise MeshFileError(f"buffer {index} ({buffer['uri']}) is missing beside the file")
        if len(data) < buffer.get("byteLength", 0):
            raise MeshFileError(f"buffer {index} holds {len(data)} bytes, the file declares {buffer['byteLength']}")
        return data

    def view(self, index: int) -> bytes:
        """A buffer view's bytes (meshopt-compressed views decoded)."""
        if index in self._views:
            return self._views[index]
        views = self.header.get("bufferViews", [])
        if not 0 <= index < len(views):
            raise MeshFileError(f"buffer view {index} does not exist")
        view = views[index]
        extensions = view.get("extensions", {})
        meshopt = extensions.get("EXT_meshopt_compression") or extensions.get("KHR_meshopt_compression")
        if meshopt is not None:
            data = self._meshopt(index, meshopt)
        else:
            buffer = self.buffers[view["buffer"]] if 0 <= view.get("buffer", -1) < len(self.buffers) else None
            if buffer is None:
                raise MeshFileError(f"buffer view {index} refers to a buffer with no data")
            start, length = view.get("byteOffset", 0), view["byteLength"]
            if start + length > len(buffer):
                raise MeshFileError(f"buffer view {index} runs past the end of buffer {view['buffer']}")
            data = buffer[start:start + length]
        self._views[index] = data
        return data

    def _meshopt(self, index: int, spec: dict) -> bytes:
        try:
            import meshoptimizer
        except ImportError as error:
            raise MeshFileError(f"buffer view {index} is meshopt-compressed and the meshoptimizer package is not "
                                "installed") from error
        buffer = self.buffers[spec["buffer"]] if 0 <= spec.get("buffer", -1) < len(self.buffers) else None
        if buffer is None:
            raise MeshFileError(f"meshopt-compressed buffer view {index} refers to a buffer with no data")
        start, length = spec.get("byteOffset", 0), spec["byteLength"]
        source = bytes(buffer[start:start + length])
        count, stride, mode = spec["count"], spec["byteStride"], spec.get("mode", "ATTRIBUTES")
        self._charge(count * stride, f"meshopt-compressed buffer view {index}")
        try:
            if mode == "ATTRIBUTES":
                if stride % 4 or not 0 < stride <= 256:
                    raise MeshFileError(f"meshopt-compressed buffer view {index} has byteStride {stride} (the "
                                        "extension requires a multiple of 4, at most 256)")
                # float32 output of count x stride/4 (the package's own shape): the bytes are what matter
                decoded = np.ascontiguousarray(meshoptimizer.decode_vertex_buffer(count, stride, source))
                if decoded.nbytes != count * stride:
                    raise MeshFileError(f"meshopt-compressed buffer view {index} decoded to {decoded.nbytes} bytes, "
                                        f"expected {count * stride}")
                decoded = decoded.view(np.uint8).reshape(-1)
                kind = spec.get("filter", "NONE")
                if kind != "NONE":
                    apply = {"OCTAHEDRAL": meshoptimizer.decode_filter_oct, "QUATERNION": meshoptimizer.decode_filter_quat,
                             "EXPONENTIAL": meshoptimizer.decode_filter_exp}.get(kind)
                    if apply is None:
                        raise MeshFileError(f"meshopt filter {kind} of buffer view {index} is unknown")
                    filtered = np.ascontiguousarray(apply(decoded.view(np.float32).reshape(count, -1), count, stride))
                    if filtered.nbytes != count * stride:
                        raise MeshFileError(f"meshopt filter {kind} of buffer view {index} gave {filtered.nbytes} bytes")
                    decoded = filtered.view(np.uint8).reshape(-1)
            elif mode == "TRIANGLES":
                decoded = meshoptimizer.decode_index_buffer(count, stride, source)
            elif mode == "INDICES":
                decoded = meshoptimizer.decode_index_sequence(count, stride, source)
            else:
                raise MeshFileError(f"meshopt mode {mode} of buffer view {index} is unknown")
        except (RuntimeError, ValueError) as error:
            raise MeshFileError(f"meshopt-compressed buffer view {index} could not be decoded ({error})") from error
        data = np.ascontiguousarray(decoded)
        if mode != "ATTRIBUTES":  # the decoder returns indices as integers: back to their byte width
            data = data.astype({2: np.uint16, 4: np.uint32}[stride])
        return data.tobytes()

    def _charge(self, nbytes: int, what: str) -> None:
        self.decoded_bytes += nbytes
        if self.decoded_bytes > MAX_DECODED_BYTES:
            raise MeshFileError(f"{what} would take the decoded data past {MAX_DECODED_BYTES >> 30} GiB "
                                "(declared counts far beyond the file's data)")

    # -- accessors ----------------------------------------------------------------------------------

    def accessor(self, index: int) -> np.ndarray:
        """Accessor ``index`` as stored: shape (count, components), its component dtype, sparse applied."""
        if index in self._accessors:
            return self._accessors[index]
        accessors = self.header.get("accessors", [])
        if not isinstance(index, int) or not 0 <= index < len(accessors):
            raise MeshFileError(f"accessor {index} does not exist")
        spec = accessors[index]
        try:
            dtype = np.dtype(COMPONENTS[spec["componentType"]])
            width = WIDTHS[spec["type"]]
            count = int(spec["count"])
        except (KeyError, TypeError, ValueError) as error:
            raise MeshFileError(f"accessor {index} has an invalid componentType, type or count") from error
        if count < 0:
            raise MeshFileError(f"accessor {index} has a negative count")
        self._charge(count * width * dtype.itemsize, f"accessor {index} ({count} x {spec['type']})")
        if "bufferView" in spec:
            data = self.view(spec["bufferView"])
            view = self.header["bufferViews"][spec["bufferView"]]
            element = width * dtype.itemsize
            stride = view.get("byteStride") or element
            start = spec.get("byteOffset", 0)
            needed = start + (count - 1) * stride + element if count else 0
            if needed > len(data):
                raise MeshFileError(f"accessor {index} reads past the end of buffer view {spec['bufferView']} "
                                    f"({needed} of {len(data)} bytes)")
            if not count:
                values = np.zeros((0, width), dtype)
            elif stride == element:  # tightly packed: one copy straight from the buffer
                values = np.frombuffer(data, dtype=dtype, count=count * width, offset=start).reshape(count, width).copy()
            else:  # interleaved: gather the rows, then view them as the component type
                raw = np.frombuffer(data, dtype=np.uint8, count=needed - start, offset=start)
                rows = np.lib.stride_tricks.as_strided(raw, shape=(count, element), strides=(stride, 1))
                values = np.ascontiguousarray(rows).view(dtype).reshape(count, width)
        else:
            values = np.zeros((count, width), dtype)  # the specification: no buffer view means zeros
        if "sparse" in spec:
            self._sparse(index, spec["sparse"], values)
        self._accessors[index] = values
        return values

    def _sparse(self, index: int, sparse: dict, values: np.ndarray) -> None:
        count = int(sparse.get("count", 0))
        try:
            where_spec, what_spec = sparse["indices"], sparse["values"]
            where_type = np.dtype(COMPONENTS[where_spec["componentType"]])
        except KeyError as error:
            raise MeshFileError(f"accessor {index}: sparse substitution without indices or values") from error
        width = values.shape[1]
        try:
            where = np.frombuffer(self.view(where_spec["bufferView"]), where_type, count=count,
                                  offset=where_spec.get("byteOffset", 0))
            substitute = np.frombuffer(self.view(what_spec["bufferView"]), values.dtype, count=count * width,
                                       offset=what_spec.get("byteOffset", 0)).reshape(count, width)
        except ValueError as error:  # numpy: the view is shorter than the declared count
            raise MeshFileError(f"accessor {index}: sparse indices or values run past their buffer view "
                                f"({error})") from error
        if count and int(where.max()) >= len(values):
            raise MeshFileError(f"accessor {index}: a sparse index ({int(where.max())}) is past its count "
                                f"({len(values)})")
        values[where.astype(np.int64)] = substitute

    def floats(self, index: int) -> np.ndarray:
        """Accessor ``index`` as float32 values (normalized integers mapped to [0, 1] or [-1, 1])."""
        values = self.accessor(index)
        if values.dtype == np.float32:
            return values
        if self.header["accessors"][index].get("normalized"):
            info = np.iinfo(values.dtype)
            scaled = values.astype(np.float32) / np.float32(info.max)
            return np.maximum(scaled, -1.0) if info.min < 0 else scaled
        return values.astype(np.float32)  # KHR_mesh_quantization: integers, scaled by the node transform

    # -- primitives ---------------------------------------------------------------------------------

    def primitive(self, mesh_index: int, primitive: dict, weights: list[float]) -> dict[str, np.ndarray] | None:
        """A triangle primitive's attributes (float32) and ``indices`` (uint32, triangles), or None for
        points and lines."""
        mode = primitive.get("mode", TRIANGLES)
        if mode not in (TRIANGLES, TRIANGLE_STRIP, TRIANGLE_FAN):
            return None
        attributes = primitive.get("attributes", {})
        if "POSITION" not in attributes:
            raise MeshFileError(f"mesh {mesh_index}: a primitive has no POSITION attribute")
        draco = primitive.get("extensions", {}).get("KHR_draco_mesh_compression")
        if draco is not None:
            arrays, indices = self._draco(mesh_index, draco, attributes)
        else:
            arrays = {name: self.floats(attributes[name]) for name in ATTRIBUTES if name in attributes}
            indices = self.accessor(primitive["indices"]).reshape(-1).astype(np.int64) \
                if "indices" in primitive else np.arange(len(arrays["POSITION"]), dtype=np.int64)
        for target, weight in zip(primitive.get("targets", []), weights):
            if weight and "POSITION" in target:
                arrays["POSITION"] = arrays["POSITION"] + np.float32(weight) * self.floats(target["POSITION"])
        count = len(arrays["POSITION"])
        if len(indices) and (indices.min() < 0 or indices.max() >= count):
            raise MeshFileError(f"mesh {mesh_index}: an index ({int(indices.max())}) is past the {count} vertices")
        for name, values in arrays.items():
            if len(values) != count:
                raise MeshFileError(f"mesh {mesh_index}: {name} has {len(values)} values for {count} vertices")
        arrays["indices"] = _triangles(indices, mode).astype(np.uint32)
        return arrays

    def _draco(self, mesh_index: int, draco: dict, attributes: dict) -> tuple[dict, np.ndarray]:
        import DracoPy

        what = f"mesh {mesh_index}: Draco-compressed primitive"
        try:
            decoded = DracoPy.decode(self.view(draco["bufferView"]))
        except MeshFileError:
            raise
        except Exception as error:  # DracoPy raises its own exception types
            raise MeshFileError(f"{what} not decoded ({type(error).__name__}: {error})") from error
        arrays = {}
        for name in ATTRIBUTES:
            if name not in attributes:
                continue
            if name not in draco.get("attributes", {}):
                arrays[name] = self.floats(attributes[name])  # stored uncompressed beside the Draco data
                continue
            found = decoded.get_attribute_by_unique_id(draco["attributes"][name])
            if found is None:
                raise MeshFileError(f"{what} has no attribute {draco['attributes'][name]} for {name}")
            values = np.asarray(found["data"])
            spec = self.header["accessors"][attributes[name]]
            if spec.get("normalized") and values.dtype.kind in "iu":
                values = values.astype(np.float32) / np.float32(np.iinfo(values.dtype).max)
            arrays[name] = values.astype(np.float32).reshape(len(values), -1)
            self._charge(arrays[name].nbytes, what)
        faces = getattr(decoded, "faces", None)
        indices = np.asarray(faces, dtype=np.int64).reshape(-1) if faces is not None and len(faces) else \
            np.arange(len(arrays["POSITION"]), dtype=np.int64)
        return arrays, indices


def _declared_triangles(reader: GltfReader, mesh: dict) -> int:
    """Triangles a mesh's primitives declare (index or vertex counts), read from the JSON alone."""
    accessors, total = reader.header.get("accessors", []), 0
    for primitive in mesh.get("primitives", []):
        source = primitive.get("indices", primitive.get("attributes", {}).get("POSITION"))
        count = accessors[source].get("count", 0) if isinstance(source, int) and 0 <= source < len(accessors) else 0
        mode = primitive.get("mode", TRIANGLES)
        total += count // 3 if mode == TRIANGLES else max(count - 2, 0) if mode in (TRIANGLE_STRIP, TRIANGLE_FAN) else 0
    return int(total)


def _triangles(indices: np.ndarray, mode: int) -> np.ndarray:
    """Triangle lists from TRIANGLES, TRIANGLE_STRIP or TRIANGLE_FAN indices (glTF 2.0, 3.7.2.1)."""
    if mode == TRIANGLES:
        return indices[: len(indices) // 3 * 3]
    n = len(indices) - 2
    if n <= 0:
        return np.zeros(0, np.int64)
    i = np.arange(n)
    if mode == TRIANGLE_STRIP:  # every other triangle reversed, so all face the same way
        even = i % 2 == 0
        a = indices[i]
        b = np.where(even, indices[i + 1], indices[i + 2])
        c = np.where(even, indices[i + 2], indices[i + 1])
    else:
        a, b, c = np.full(n, indices[0]), indices[i + 1], indices[i + 2]
    return np.stack([a, b, c], axis=1).reshape(-1)


def _texture_matrix(transform: dict) -> np.ndarray:
    """KHR_texture_transform's 3x3 matrix: translation x rotation x scale (its README)."""
    (ox, oy), r, (sx, sy) = transform.get("offset", [0, 0]), transform.get("rotation", 0.0), transform.get("scale", [1, 1])
    translation = np.array([[1, 0, ox], [0, 1, oy], [0, 0, 1]], float)
    rotation = np.array([[math.cos(r), math.sin(r), 0], [-math.sin(r), math.cos(r), 0], [0, 0, 1]], float)
    return translation @ rotation @ np.diag([sx, sy, 1.0])


class PlainWriter:
    """The plain GLB being written: one binary chunk, float32 attributes, uint32 indices."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.size = 0
        self.views: list[dict] = []
        self.accessors: list[dict] = []

    def add_view(self, data: bytes) -> int:
        self.chunks.append(data)
        padding = -len(data) % 4
        if padding:
            self.chunks.append(b"\0" * padding)
        self.views.append({"buffer": 0, "byteOffset": self.size, "byteLength": len(data)})
        self.size += len(data) + padding
        return len(self.views) - 1

    def add_accessor(self, values: np.ndarray, kind: str, bounds: bool = False) -> int:
        """``bounds``: write ``min``/``max`` (the specification requires them for POSITION)."""
        values = np.ascontiguousarray(values)
        spec = {"bufferView": self.add_view(values.tobytes()), "count": int(len(values)),
                "componentType": 5125 if values.dtype == np.uint32 else 5126, "type": kind}
        if bounds and len(values):
            spec["min"], spec["max"] = values.min(axis=0).tolist(), values.max(axis=0).tolist()
        self.accessors.append(spec)
        return len(self.accessors) - 1

    def glb(self, header: dict) -> bytes:
        header = {**header, "bufferViews": self.views, "accessors": self.accessors,
                  "buffers": [{"byteLength": self.size}]}
        text = json.dumps(header, separators=(",", ":")).encode("utf-8")
        text += b" " * (-len(text) % 4)
        binary = b"".join(self.chunks)
        total = 12 + 8 + len(text) + 8 + len(binary)
        return b"".join([struct.pack("<III", GLB_MAGIC, 2, total), struct.pack("<II", len(text), JSON_CHUNK), text,
                         struct.pack("<II", len(binary), BIN_CHUNK), binary])


def plain_glb(path: str | Path) -> tuple[bytes, list[str]]:
    """The file as a plain, self-contained GLB (see the module's description), and the warnings.

    Raises :class:`MeshFileError` naming the cause when the file cannot be read as written.
    """
    reader = GltfReader(Path(path))
    source = reader.header
    header: dict = {"asset": {"version": "2.0", "generator": "voxforge plain glTF"}}
    writer = PlainWriter()
    images, kept_images = _images(reader, writer)
    textures = []  # per source texture: its plain form, or None when its image was left out
    for texture in source.get("textures", []):
        image = texture.get("source")
        if image is None:
            image = texture.get("extensions", {}).get("EXT_texture_webp", {}).get("source")
        plain = {"source": images.get(image)} if images.get(image) is not None else None
        sampler = texture.get("sampler")
        if plain is not None and isinstance(sampler, int) and 0 <= sampler < len(source.get("samplers", [])):
            plain["sampler"] = sampler  # wrap and filter modes as the file says
        textures.append(plain)
    kept = [t for t in textures if t is not None]
    renumber_textures = {old: new for new, old in enumerate(i for i, t in enumerate(textures) if t is not None)}
    header["materials"], uv_transforms = _materials(reader, renumber_textures)
    header["textures"] = kept
    header["images"] = kept_images
    header["samplers"] = [{k: v for k, v in sampler.items() if k in ("magFilter", "minFilter", "wrapS", "wrapT")}
                          for sampler in source.get("samplers", [])] if kept else []
    header["nodes"], header["scenes"] = _nodes(reader)
    # only the meshes the default scene shows are decoded (another scene's broken mesh is not this object's)
    meshes = source.get("meshes", [])
    # one plain mesh per (mesh, morph weights): a node's own weights override its mesh's
    used = sorted({(node["mesh"], tuple(node.get("weights", ()))) for node in header["nodes"] if "mesh" in node},
                  key=lambda pair: (str(pair[0]), pair[1]))
    for index, _ in used:
        if not isinstance(index, int) or not 0 <= index < len(meshes):
            raise MeshFileError(f"a node refers to mesh {index}, which does not exist")
    instances = Counter(node["mesh"] for node in header["nodes"] if "mesh" in node)
    check_triangles(sum(_declared_triangles(reader, meshes[index]) * instances[index] for index in instances),
                    "the glTF file (instances placed)")
    renumber = {pair: new for new, pair in enumerate(used)}
    for node in header["nodes"]:
        if "mesh" in node:
            node["mesh"] = renumber[(node["mesh"], tuple(node.pop("weights", ())))]
    header["meshes"] = [_mesh(reader, writer, index, meshes[index], uv_transforms, list(weights) or None)
                        for index, weights in used]
    header["scene"] = 0
    for key in ("materials", "textures", "images", "samplers"):
        if not header[key]:
            del header[key]
    return writer.glb(header), reader.warnings


def _images(reader: GltfReader, writer: PlainWriter) -> tuple[dict[int, int], list[dict]]:
    """(source image index -> index among the embedded ones, the embedded images' JSON); a missing or
    undecodable image is left out, with a warning."""
    found: dict[int, int] = {}
    kept: list[dict] = []
    for index, image in enumerate(reader.header.get("images", [])):
        name = image.get("uri", f"image {index}") if not str(image.get("uri", "")).startswith("data:") else f"image {index}"
        if "bufferView" in image:
            data = reader.view(image["bufferView"])
        elif "uri" in image:
            try:
                data = reader.resolve(image["uri"], f"image {index}")
            except MeshFileError as error:
                reader.warnings.append(f"texture left out: {error}")
                continue
            if data is None:
                reader.warnings.append(f"texture image '{name}' is missing: rendered with the material's base colour")
                continue
        else:
            continue
        kind = next((mime for magic, mime in IMAGE_TYPES.items() if data.startswith(magic)), None)
        if kind is None:
            declared = image.get("mimeType", "unknown type")
            reader.warnings.append(f"texture image '{name}' cannot be decoded here ({declared}): rendered with the "
                                   "material's base colour")
            continue
        problem = texture_problem(data, name)
        if problem:
            reader.warnings.append(problem)
            continue
        found[index] = len(kept)
        kept.append({"bufferView": writer.add_view(data), "mimeType": kind})
    return found, kept


def _materials(reader: GltfReader, renumber_textures: dict[int, int]) -> tuple[list[dict], dict]:
    """Materials whose texture references point at the kept textures (``renumber_textures``: source index ->
    plain index; references to others removed) and, per material, the texture coordinate set of its base
    colour texture and that texture's KHR_texture_transform matrix."""
    materials, uv_transforms = [], {}
    for index, source in enumerate(reader.header.get("materials", [])):
        material = {k: copy.deepcopy(v) for k, v in source.items() if k != "extensions"}
        pbr = material.setdefault("pbrMetallicRoughness", {})
        gloss = source.get("extensions", {}).get("KHR_materials_pbrSpecularGlossiness")
        if gloss and "baseColorFactor" not in pbr and "diffuseFactor" in gloss:
            pbr["baseColorFactor"] = gloss["diffuseFactor"]
        if gloss and "baseColorTexture" not in pbr and "diffuseTexture" in gloss:
            pbr["baseColorTexture"] = copy.deepcopy(gloss["diffuseTexture"])
        for owner, key in [(material, "normalTexture"), (material, "occlusionTexture"), (material, "emissiveTexture"),
                           (pbr, "baseColorTexture"), (pbr, "metallicRoughnessTexture")]:
            info = owner.get(key)
            if not isinstance(info, dict):
                continue
            texture = info.get("index")
            if not isinstance(texture, int) or texture not in renumber_textures:
                del owner[key]
                continue
            info["index"] = renumber_textures[texture]
            transform = info.pop("extensions", {}).get("KHR_texture_transform")
            coordinates = transform.get("texCoord", info.get("texCoord", 0)) if transform else info.get("texCoord", 0)
            info.pop("texCoord", None)
            if key == "baseColorTexture":
                uv_transforms[index] = (coordinates, _texture_matrix(transform) if transform else None)
        materials.append(material)
    return materials, uv_transforms


def _mesh(reader: GltfReader, writer: PlainWriter, index: int, mesh: dict, uv_transforms: dict,
          weights: list[float] | None = None) -> dict:
    primitives = []
    weights = weights if weights is not None else mesh.get("weights", [])
    for primitive in mesh.get("primitives", []):
        arrays = reader.primitive(index, primitive, weights)
        if arrays is None:
            continue
        material = primitive.get("material")
        coordinates, matrix = uv_transforms.get(material, (0, None))
        name = f"TEXCOORD_{coordinates}"
        if name != "TEXCOORD_0" or matrix is not None:
            uv = reader.floats(primitive["attributes"][name]) if name in primitive.get("attributes", {}) else None
            if uv is not None and matrix is not None:
                uv = (np.c_[uv.astype(np.float64), np.ones(len(uv))] @ matrix.T)[:, :2].astype(np.float32)
            if uv is not None:
                arrays["TEXCOORD_0"] = uv
        attributes = {}
        for attribute in ATTRIBUTES:
            if attribute in arrays:
                values = arrays[attribute]
                kind = {2: "VEC2", 3: "VEC3", 4: "VEC4"}[values.shape[1]]
                attributes[attribute] = writer.add_accessor(values.astype(np.float32, copy=False), kind,
                                                            bounds=attribute == "POSITION")
        plain = {"attributes": attributes, "indices": writer.add_accessor(arrays["indices"], "SCALAR"), "mode": TRIANGLES}
        if isinstance(material, int) and 0 <= material < len(reader.header.get("materials", [])):
            plain["material"] = material
        primitives.append(plain)
    return {"name": mesh.get("name", f"mesh_{index}"), "primitives": primitives}


def _nodes(reader: GltfReader) -> tuple[list[dict], list[dict]]:
    """The default scene's node tree (transforms kept; GPU instances as child nodes)."""
    source = reader.header.get("nodes", [])
    scenes = reader.header.get("scenes", [])
    default = reader.header.get("scene", 0)
    if scenes and not (isinstance(default, int) and 0 <= default < len(scenes)):
        raise MeshFileError(f"the default scene {default} does not exist")
    if "scene" not in reader.header and len(scenes) > 1:
        reader.warnings.append(f"no default scene among {len(scenes)}: the first one was read")
    roots = scenes[default].get("nodes", []) if scenes else list(range(len(source)))
    nodes: list[dict] = []

    ancestors: list[int] = []

    def copy_node(index: int, depth: int) -> int:
        if not isinstance(index, int) or not 0 <= index < len(source):
            raise MeshFileError(f"node {index} does not exist")
        if index in ancestors:
            raise MeshFileError(f"the node tree is cyclic (node {index} is its own ancestor)")
        if depth >= MAX_NODE_DEPTH:
            raise MeshFileError(f"the node tree is more than {MAX_NODE_DEPTH} levels deep")
        if len(nodes) >= MAX_PLACED_NODES:  # nodes listed under several parents are placed once per path
            raise MeshFileError(f"the node tree places more than {MAX_PLACED_NODES:,} nodes")
        node = source[index]
        plain = {k: node[k] for k in ("name", "matrix", "translation", "rotation", "scale", "mesh", "weights")
                 if k in node}
        position = len(nodes)
        nodes.append(plain)
        ancestors.append(index)
        children = [copy_node(child, depth + 1) for child in node.get("children", [])]
        ancestors.pop()
        instancing = node.get("extensions", {}).get("EXT_mesh_gpu_instancing")
        if instancing and "mesh" in plain:
            children += _instances(reader, plain.pop("mesh"), instancing, nodes)
        if children:
            plain["children"] = children
        return position

    scene_roots = [copy_node(root, 0) for root in roots]
    return nodes, [{"nodes": scene_roots}]


def _instances(reader: GltfReader, mesh: int, instancing: dict, nodes: list[dict]) -> list[int]:
    attributes = instancing.get("attributes", {})
    columns = {name: reader.floats(attributes[name]) for name in ("TRANSLATION", "ROTATION", "SCALE")
               if name in attributes}
    count = len(next(iter(columns.values()))) if columns else 0
    created = []
    for i in range(count):
        node = {"mesh": mesh}
        if "TRANSLATION" in columns:
            node["translation"] = columns["TRANSLATION"][i].tolist()
        if "ROTATION" in columns:
            node["rotation"] = columns["ROTATION"][i].tolist()
        if "SCALE" in columns:
            node["scale"] = columns["SCALE"][i].tolist()
        created.append(len(nodes))
        nodes.append(node)
    return created
