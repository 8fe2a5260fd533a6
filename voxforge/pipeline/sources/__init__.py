"""Source registry: name -> class, imported lazily. Adding a source is one module plus one line here."""

from __future__ import annotations

import importlib

import trimesh

from voxforge.pipeline.sources.base import ObjectRecord, Source, SourceError, UnknownCategoryError

SOURCES: dict[str, str] = {
    "procedural": "voxforge.pipeline.sources.procedural:ProceduralSource",
    "local": "voxforge.pipeline.sources.local:LocalSource",
    "shapenet": "voxforge.pipeline.sources.shapenet:ShapeNetSource",
    "objaverse": "voxforge.pipeline.sources.objaverse:ObjaverseSource",
    "objaverse-xl": "voxforge.pipeline.sources.objaverse_xl:ObjaverseXLSource",
}


def source_class(name: str) -> type[Source]:
    if name not in SOURCES:
        raise SourceError(f"unknown source {name!r}; available: {', '.join(sorted(SOURCES))}")
    module_name, class_name = SOURCES[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def create_source(name: str, path: str | None = None, category_map: str | None = None, seed: int = 0,
                  config=None) -> Source:
    """A source built from the command line's options (download sources read the whole RunConfig)."""
    cls = source_class(name)
    if hasattr(cls, "from_config"):
        from voxforge.pipeline.config import RunConfig

        return cls.from_config(config or RunConfig(source=name, path=path, seed=seed))
    if name == "local":
        if not path:
            raise SourceError("the local source needs --path DIR")
        return cls(path, category_map=category_map)
    if name == "procedural":
        return cls(seed=seed)
    return cls()


def local_mesh_file(record: ObjectRecord) -> str:
    """The mesh's file on this machine: a download source's copy in the cache, else the record's uri."""
    if record.fetch:
        from voxforge.pipeline.downloads.materialize import mesh_path

        return str(mesh_path(record.fetch))
    return record.uri


def load_record(record: ObjectRecord) -> trimesh.Scene:
    """The mesh of a record, loaded by the source that made it (used inside workers)."""
    return source_class(record.source).load_record(record)


__all__ = ["SOURCES", "ObjectRecord", "Source", "SourceError", "UnknownCategoryError", "create_source", "load_record",
           "local_mesh_file"]
