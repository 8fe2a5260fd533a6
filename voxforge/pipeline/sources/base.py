"""What a source is: something that lists object records and turns one record into a mesh.

Stages never import a source module: the render stage calls :func:`voxforge.pipeline.sources.load_record`,
which finds the source by the record's ``source`` name in the registry.
"""

from __future__ import annotations

import difflib
import itertools
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field

import trimesh


class SourceError(ValueError):
    """A source cannot be used as asked (unknown category, empty folder, bad option)."""


class UnknownCategoryError(SourceError):
    pass


@dataclass
class ObjectRecord:
    """One object to process: plain strings only, so Ray can carry it between processes."""

    object_id: str  # stable across runs; unique within a source
    category: str
    source: str  # registry name of the source that can load it
    uri: str  # where the mesh is: a file path, or the procedural generator's spec
    license: str = ""
    synset_id: str = ""
    model_id: str = ""
    extra: dict = field(default_factory=dict)  # source-specific metadata carried into the sample
    fetch: dict = field(default_factory=dict)  # how to download the mesh (downloads.materialize); not in samples
    split: str = ""  # a split fixed by the source (e.g. 3D-R2N2's); empty = assigned from the id

    def to_row(self) -> dict:
        return asdict(self)

    @classmethod
    def from_row(cls, row: dict) -> "ObjectRecord":
        return cls(**{k: row[k] for k in cls.__dataclass_fields__ if k in row})


class Source(ABC):
    """A collection of meshes by category; one module per source plus one registry line."""

    name: str = "base"

    @abstractmethod
    def categories(self) -> list[str]:
        """Category names this source can produce."""

    @abstractmethod
    def records(self, categories: list[str]) -> Iterator[ObjectRecord]:
        """Records of the given (already resolved) categories, in a stable order."""

    @classmethod
    @abstractmethod
    def load_record(cls, record: ObjectRecord) -> trimesh.Scene:
        """The mesh of one record as a scene (called inside worker processes)."""

    def resolve_categories(self, requested: Iterable[str] | None) -> list[str]:
        """Canonical names for the requested ones (all when none); unknown names fail with suggestions."""
        known = self.categories()
        if not requested:
            return list(known)
        lookup = {name.lower(): name for name in known} | {
            alias.lower(): name for alias, name in self.category_aliases().items()
        }
        resolved = []
        for name in requested:
            key = name.strip().lower()
            if key not in lookup:
                close = difflib.get_close_matches(key, list(lookup), n=3, cutoff=0.6)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise UnknownCategoryError(
                    f"unknown category {name!r} for source {self.name!r}{hint} "
                    f"(available: {', '.join(sorted(known)) or 'none'})"
                )
            if lookup[key] not in resolved:
                resolved.append(lookup[key])
        return resolved

    def category_aliases(self) -> dict[str, str]:
        """Extra accepted names (synonyms, synset ids) -> canonical category."""
        return {}

    def selection_notes(self) -> list[str]:
        """Lines printed before work starts (how categories resolved, what each filter kept)."""
        return list(getattr(self, "notes", []))

    def stream(self, categories: list[str] | None, limit: int | None) -> Iterator[ObjectRecord]:
        """The selection as a stream, in :meth:`select`'s order; sources that can produce it without holding
        every record (the procedural source) override this. Unknown categories raise before the first record."""
        yield from self.select(categories, limit)

    def select(self, categories: list[str] | None, limit: int | None) -> list[ObjectRecord]:
        """Records of the categories, interleaved across categories so a limit stays balanced."""
        resolved = self.resolve_categories(categories)
        per_category: dict[str, list[ObjectRecord]] = {c: [] for c in resolved}
        for record in self.records(resolved):
            per_category.setdefault(record.category, []).append(record)
        interleaved = [
            r for group in itertools.zip_longest(*per_category.values()) for r in group if r is not None
        ]
        return interleaved[:limit] if limit is not None else interleaved
