"""Objaverse-XL: objects from Sketchfab, the Smithsonian, Thingiverse and GitHub, by their annotation tables.

The per-source parquet tables of ``allenai/objaverse-xl`` are fetched by our downloader (``HF_ENDPOINT``,
retries, cache) into the folder layout of the ``objaverse`` package (columns ``fileIdentifier``,
``license``, ``fileType``, ``sha256``, ``metadata``) and scanned a batch at a time with pyarrow, never
held whole (:mod:`voxforge.pipeline.sources.xl_tables`). Filters run in order and each reports how many objects it kept: sources
(``--objaverse-xl-sources``), file types (``--file-types``, default: those the loader reads),
licences (``--licenses``), categories. Categories use the LVIS labels where they exist (the Sketchfab
part, which is Objaverse 1.0); objects without labels are matched by keywords in their file name and
metadata only when asked (``--match-keywords``).

Each object is downloaded alone: Sketchfab GLBs from the Hub, Smithsonian files from their URL,
Thingiverse files from ``www.thingiverse.com/download:<id>``, GitHub files from
``raw.githubusercontent.com`` at the annotated commit together with the files they refer to from the
same repository (an OBJ's MTL and textures, a glTF's buffers and images; see
:mod:`voxforge.pipeline.downloads.companions`) (``--mirror PREFIX=URL`` redirects any host).
A file whose sha256 differs from the table is recorded as failed with reason "modified", one that
is gone as "missing upstream".
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator
from pathlib import Path

from voxforge.pipeline.downloads.archives import ArchiveError, safe_id
from voxforge.pipeline.sources.base import ObjectRecord, SourceError
from voxforge.pipeline.sources.licenses import license_filter, license_name, license_slug
from voxforge.pipeline.sources.objaverse import (
    ObjaverseAnnotations,
    attribution,
    match_lvis,
)
from voxforge.pipeline.sources.local import MESH_SUFFIXES
from voxforge.pipeline.sources.remote import RemoteSource
from voxforge.pipeline.sources.xl_tables import Query, XLSelection, words_of

XL_REPO = "allenai/objaverse-xl"
XL_SOURCES = ("sketchfab", "smithsonian", "thingiverse", "github")
LOADABLE_TYPES = ("glb", "gltf", "obj", "stl", "ply", "off")
GITHUB_BLOB = re.compile(r"^https://github\.com/([^/]+)/([^/]+)/blob/([0-9a-f]{7,40})/(.+)$")
THINGIVERSE = re.compile(r"thing:(\d+).*fileId=(\d+)")
RECORD_BATCH = 4096  # records made at a time (one metadata look-up for the batch's Sketchfab objects)


class ObjaverseXLSource(RemoteSource):
    name = "objaverse-xl"

    def __init__(self, config) -> None:
        super().__init__(config)
        self.sources = [s.strip().lower() for s in (config.xl_sources or XL_SOURCES)]
        unknown = sorted(set(self.sources) - set(XL_SOURCES))
        if unknown:
            raise SourceError(f"--objaverse-xl-sources: unknown {', '.join(unknown)} (known: {', '.join(XL_SOURCES)})")
        self.file_types = [t.strip().lower().lstrip(".") for t in (config.file_types or LOADABLE_TYPES)]
        readable = {suffix.lstrip(".") for suffix in MESH_SUFFIXES}
        unreadable = sorted(set(self.file_types) - readable)
        if unreadable:  # said before any annotation table is fetched
            raise SourceError(f"--file-types: voxforge cannot read {', '.join(unreadable)} files "
                              f"(it reads {', '.join(sorted(readable))})")
        self.v1 = ObjaverseAnnotations(self)
        self.folder = self.cache / "objaverse-xl"

    def tables(self) -> dict[str, Path]:
        """The selected sources' parquet tables in the cache (fetched once), by source name."""
        tables = {}
        for name in self.sources:
            tables[name] = self.fetch_hub_file(XL_REPO, f"{name}/{name}.parquet", self.folder / name / f"{name}.parquet")
        return tables

    def categories(self) -> list[str]:
        return sorted(self.v1.lvis())

    def records(self, categories: list[str]):
        yield from self.stream(categories, None)

    def select(self, categories: list[str] | None, limit: int | None) -> list[ObjectRecord]:
        return list(self.stream(categories, limit))

    def selection(self, categories: list[str] | None) -> XLSelection:
        """The tables scanned and filtered (see :mod:`.xl_tables`), with this source's notes added."""
        lvis = self.v1.lvis()
        queries = [Query(query.strip(), frozenset(match_lvis(query, lvis)), words_of(query))
                   for query in categories or []]
        keep = license_filter(self.config.licenses)
        selection = XLSelection(self.tables(), lvis, self.file_types,
                                None if keep is None else (lambda text: keep(license_slug(text))),
                                queries, self.config.match_keywords, self.config.seed, self.folder / "selections")
        selection.scan()
        counts = selection.counts
        total = sum(counts.rows.values())
        self.note(f"annotations: {total} objects ({', '.join(f'{s} {counts.rows[s]}' for s in self.sources)})")
        self.note(f"file types {','.join(self.file_types)}: kept {counts.after_types} of {total}")
        if keep is not None:
            self.note(f"licences {','.join(self.config.licenses)}: kept {counts.after_licenses} of {counts.after_types}")
        for query in queries:
            hint = "" if self.config.match_keywords else f"; {counts.without_lvis} without LVIS labels skipped (--match-keywords)"
            self.note(f"{query.label}: {query.by_lvis} by LVIS labels ({', '.join(sorted(query.lvis_names)) or 'no LVIS name'}), "
                      f"{query.by_keyword} by keywords{hint}")
        return selection

    def stream(self, categories: list[str] | None, limit: int | None) -> Iterator[ObjectRecord]:
        """The selection, made as it is taken: the tables are scanned a batch at a time and the kept rows
        memory-mapped; per category, the positions of its rows in the seeded order (8 bytes per object) are
        held, and records are made a batch at a time, not all at once (a record with its download spec is
        about 1 KB)."""
        selection = self.selection(categories)
        if not selection.total:
            raise SourceError(f"source {self.name!r} has no objects for categories {categories or 'all'} "
                              "after filtering")
        chosen = selection.chosen(limit)
        while batch := list(itertools.islice(chosen, RECORD_BATCH)):
            rows = selection.rows(batch)
            sketchfab_uids = [self._uid(row) for row in rows if row["source"] == "sketchfab"]
            v1_meta = self.v1.metadata(sketchfab_uids) if sketchfab_uids else {}
            for (label, _), row in zip(batch, rows):
                try:
                    yield self.record(row, label, row["lvis"] or "", v1_meta)
                except (ArchiveError, KeyError, ValueError) as error:
                    self.note(f"skipped {row['fileIdentifier']}: {error}")

    @staticmethod
    def _uid(row) -> str:
        return str(row["fileIdentifier"]).rstrip("/").split("/")[-1]

    def record(self, row, label: str, lvis_name: str, v1_meta: dict) -> ObjectRecord:
        from objaverse.utils import get_uid_from_str

        source, identifier = str(row["source"]), str(row["fileIdentifier"])
        sha256 = str(row.get("sha256") or "").lower()
        slug = license_slug(row.get("license"))
        try:
            metadata = json.loads(row.get("metadata") or "{}")
        except (TypeError, ValueError):
            metadata = {}
        extra = {"file_identifier": identifier, "xl_source": source, "sha256": sha256,
                 "file_type": str(row["fileType"]).lower(), "license_name": str(row.get("license") or license_name(slug)),
                 "source_url": identifier, "author": "", "name": str(metadata.get("title") or metadata.get("name") or "")}
        cache = self.folder / source / "objects"
        kind = extra["file_type"]
        if source == "sketchfab":
            uid = safe_id(self._uid(row), "uid")
            url, spec = self.v1.glb_spec(uid, sha256=sha256, mismatch="modified")
            extra |= {k: v for k, v in attribution(uid, v1_meta.get(uid, {})).items() if v}
            object_id = f"sketchfab/{uid}"
        elif source == "github":
            match = GITHUB_BLOB.match(identifier)
            if not match:
                raise ValueError(f"not a GitHub file URL: {identifier}")
            org, repo, commit, path = match.groups()
            uid = get_uid_from_str(identifier)
            url = f"https://raw.githubusercontent.com/{org}/{repo}/{commit}/{path}"
            # a repository file: its material libraries, textures and buffers sit beside it
            spec = {**self.file_spec(url, cache / uid, sha256=sha256, mismatch="modified"), "kind": "files",
                    "mesh": f"{uid}.{safe_id(kind, 'file type')}"}
            extra["author"] = extra["author"] or org
            object_id = f"github/{uid}"
        elif source == "thingiverse":
            match = THINGIVERSE.search(identifier)
            if not match:
                raise ValueError(f"not a Thingiverse file identifier: {identifier}")
            thing, file_id = match.groups()
            uid = f"thing-{thing}-file-{file_id}"
            url = f"https://www.thingiverse.com/download:{file_id}"
            spec = self.file_spec(url, cache / f"{uid}.{safe_id(kind, 'file type')}", sha256=sha256, mismatch="modified")
            object_id = f"thingiverse/{uid}"
        else:  # smithsonian: the identifier is the file's URL
            uid = get_uid_from_str(identifier)
            url = identifier
            spec = self.file_spec(url, cache / f"{uid}.{safe_id(kind, 'file type')}", sha256=sha256, mismatch="modified")
            object_id = f"smithsonian/{uid}"
        spec["missing"] = "missing upstream"
        extra["uid"] = uid
        if lvis_name:
            extra["lvis_category"] = lvis_name
        return ObjectRecord(object_id=object_id, category=label, source=self.name, uri=url, license=slug,
                            model_id=uid, extra=extra, fetch=spec)
