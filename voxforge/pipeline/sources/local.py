"""Any folder of meshes: OBJ (+MTL, textures), GLB/GLTF, PLY, STL, OFF, DAE (with pycollada); FBX and .blend
through Blender.

Category comes from a mapping file when given, else from the first sub-folder under the root (files
directly in the root take the root's own name). The ShapeNetCore layouts are recognized:
``<synset>/<model_id>/models/model_normalized.obj`` (v2) and ``<synset>/<model_id>/model.obj`` (v1),
with synset ids mapped to category names; other meshes inside those folders are ignored.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from pathlib import Path

import trimesh

from voxforge.meshio.names import portable_name
from voxforge.pipeline.sources.base import ObjectRecord, Source, SourceError
from voxforge.pipeline.sources.shapenet_taxonomy import category_name, shapenet_aliases

MESH_SUFFIXES = {".obj", ".glb", ".gltf", ".ply", ".stl", ".off", ".dae", ".fbx", ".blend"}
BLENDER_SUFFIXES = {".fbx", ".blend"}  # trimesh cannot read these: Blender does (the blender extra)
SHAPENET_FILES = {"model_normalized.obj": "v2", "model.obj": "v1"}
SYNSET_PATTERN = re.compile(r"^n?\d{8}$")
SHAPENET_LICENSE = "ShapeNet terms of use (non-commercial research and education)"


def shapenet_ids(relative: Path, root: Path) -> tuple[str, str] | None:
    """(synset, model_id) when ``relative`` is a ShapeNetCore v1/v2 model file, else None."""
    parts = relative.parts
    if relative.name not in SHAPENET_FILES:
        return None
    if SHAPENET_FILES[relative.name] == "v2" and len(parts) >= 3 and parts[-2] == "models":
        model_parts = parts[:-2]
    elif SHAPENET_FILES[relative.name] == "v1":
        model_parts = parts[:-1]
    else:
        return None
    if len(model_parts) >= 2 and SYNSET_PATTERN.match(model_parts[-2]):
        return model_parts[-2], model_parts[-1]
    if len(model_parts) == 1 and SYNSET_PATTERN.match(root.name):  # the root is one synset's folder
        return root.name, model_parts[0]
    return None


def read_category_map(path: str | Path) -> dict[str, str]:
    """A JSON object or a two-column CSV: relative path (file or folder prefix) -> category."""
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"--category-map {path}: no such file")
    if path.suffix.lower() == ".json":
        mapping = json.loads(path.read_text())
        if not isinstance(mapping, dict):
            raise SourceError(f"--category-map {path}: expected a JSON object of path -> category")
        return {str(k).strip("/"): str(v) for k, v in mapping.items()}
    with path.open(newline="") as handle:
        return {row[0].strip().strip("/"): row[1].strip() for row in csv.reader(handle) if len(row) >= 2 and row[0]}


class LocalSource(Source):
    name = "local"

    def __init__(self, path: str | Path, category_map: str | Path | None = None) -> None:
        self.root = Path(path).expanduser().resolve()
        if not self.root.is_dir():
            raise SourceError(f"--path {path}: not a directory")
        self.mapping = read_category_map(category_map) if category_map else {}
        self._all = list(self._scan())

    def _category_for(self, relative: Path) -> str:
        posix = relative.as_posix()
        for prefix in sorted(self.mapping, key=len, reverse=True):  # the most specific entry wins
            if posix == prefix or posix.startswith(prefix + "/") or posix.rsplit(".", 1)[0] == prefix:
                return self.mapping[prefix]
        return portable_name(relative.parts[0] if len(relative.parts) > 1 else self.root.name)

    def _scan(self) -> Iterator[ObjectRecord]:
        files = sorted(
            p for p in self.root.rglob("*")
            if p.suffix.lower() in MESH_SUFFIXES and p.is_file()
            and not any(part.startswith(".") or part == "__MACOSX" for part in p.relative_to(self.root).parts)
        )
        shapenet_dirs = set()
        for path in files:
            relative = path.relative_to(self.root)
            ids = shapenet_ids(relative, self.root)
            if ids:
                synset, model_id = ids
                shapenet_dirs.add(path.parent if path.parent.name != "models" else path.parent.parent)
                yield ObjectRecord(
                    object_id=f"{synset}/{model_id}", category=self.mapping.get(synset, category_name(synset)),
                    source=self.name, uri=str(path), license=SHAPENET_LICENSE, synset_id=synset, model_id=model_id,
                )
        for path in files:  # meshes outside ShapeNet model folders
            if any(folder in path.parents for folder in shapenet_dirs):
                continue
            relative = path.relative_to(self.root)
            yield ObjectRecord(
                object_id=portable_name(relative.as_posix()), category=self._category_for(relative),
                source=self.name, uri=str(path), model_id=portable_name(relative.as_posix()),
            )

    def categories(self) -> list[str]:
        return sorted({r.category for r in self._all})

    def category_aliases(self) -> dict[str, str]:
        present = set(self.categories())
        aliases = {s: category_name(s) for s in {r.synset_id for r in self._all if r.synset_id}}
        aliases |= shapenet_aliases(present)
        return {a: n for a, n in aliases.items() if n in present}

    def records(self, categories: list[str]) -> Iterator[ObjectRecord]:
        wanted = set(categories)
        return (r for r in self._all if r.category in wanted)

    @classmethod
    def load_record(cls, record: ObjectRecord) -> trimesh.Scene:
        if Path(record.uri).suffix.lower() in BLENDER_SUFFIXES:
            from voxforge.renderers.blender.importers import load_with_blender

            return load_with_blender(record.uri)
        from voxforge.meshio import load_mesh_file

        return load_mesh_file(record.uri)
