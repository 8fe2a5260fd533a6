"""Objaverse-XL: objects from Sketchfab, the Smithsonian, Thingiverse and GitHub, by their annotation tables.

The per-source parquet tables of ``allenai/objaverse-xl`` are fetched by our downloader (``HF_ENDPOINT``,
retries, cache) into the folder layout of the ``objaverse`` package and read by ``objaverse.xl``'s
own ``get_annotations`` (columns ``fileIdentifier``, ``source``, ``license``, ``fileType``, ``sha256``,
``metadata``). Filters run in order and each reports how many objects it kept: sources
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
from collections import Counter
from collections.abc import Iterator, Sequence

from voxforge.pipeline.downloads.archives import ArchiveError, safe_id
from voxforge.pipeline.sources.base import ObjectRecord, SourceError
from voxforge.pipeline.sources.licenses import license_filter, license_name, license_slug
from voxforge.pipeline.sources.objaverse import (
    ObjaverseAnnotations,
    attribution,
    match_lvis,
    quiet_objaverse,
    seeded_order,
)
from voxforge.pipeline.sources.remote import RemoteSource

XL_REPO = "allenai/objaverse-xl"
XL_SOURCES = ("sketchfab", "smithsonian", "thingiverse", "github")
LOADABLE_TYPES = ("glb", "gltf", "obj", "stl", "ply", "off")
GITHUB_BLOB = re.compile(r"^https://github\.com/([^/]+)/([^/]+)/blob/([0-9a-f]{7,40})/(.+)$")
THINGIVERSE = re.compile(r"thing:(\d+).*fileId=(\d+)")
RECORD_BATCH = 4096  # records made at a time (one metadata look-up for the batch's Sketchfab objects)


def interleaved_rows(groups: list[tuple[str, Sequence, Sequence]]) -> Iterator[tuple[str, int, str]]:
    """(label, row, LVIS name), one object of each category in turn, as the interleave of Objaverse's
    selection does, without building the list."""
    longest = max((len(rows) for _, rows, _ in groups), default=0)
    for position in range(longest):
        for label, rows, lvis in groups:
            if position < len(rows):
                yield label, rows[position], lvis[position]


class ObjaverseXLSource(RemoteSource):
    name = "objaverse-xl"

    def __init__(self, config) -> None:
        super().__init__(config)
        self.sources = [s.strip().lower() for s in (config.xl_sources or XL_SOURCES)]
        unknown = sorted(set(self.sources) - set(XL_SOURCES))
        if unknown:
            raise SourceError(f"--objaverse-xl-sources: unknown {', '.join(unknown)} (known: {', '.join(XL_SOURCES)})")
        self.file_types = [t.strip().lower().lstrip(".") for t in (config.file_types or LOADABLE_TYPES)]
        self.v1 = ObjaverseAnnotations(self)
        self.folder = self.cache / "objaverse-xl"

    def annotations(self):
        """The selected sources' tables as one DataFrame, read by ``objaverse.xl``."""
        import pandas as pd
        from objaverse.xl import downloaders

        quiet_objaverse()
        frames = []
        for name in self.sources:
            self.fetch_hub_file(XL_REPO, f"{name}/{name}.parquet", self.folder / name / f"{name}.parquet")
            frame = downloaders[name].get_annotations(download_dir=str(self.folder))
            frame["source"] = name
            frames.append(frame)
        table = pd.concat(frames, ignore_index=True)
        if "metadata" not in table:
            table["metadata"] = "{}"
        counts = Counter(table["source"])
        self.note(f"annotations: {len(table)} objects ({', '.join(f'{s} {counts[s]}' for s in self.sources)})")
        return table

    def categories(self) -> list[str]:
        return sorted(self.v1.lvis())

    def records(self, categories: list[str]):
        yield from self.stream(categories, None)

    def _keep(self, table, mask, what: str):
        kept = table[mask]
        self.note(f"{what}: kept {len(kept)} of {len(table)}")
        return kept

    def select(self, categories: list[str] | None, limit: int | None) -> list[ObjectRecord]:
        return list(self.stream(categories, limit))

    def stream(self, categories: list[str] | None, limit: int | None) -> Iterator[ObjectRecord]:
        """The selection, made as it is taken: the filtered table and, per category, the positions of its
        rows in the seeded order (8 bytes per object) are held, and records are made a batch at a time,
        not all at once (a record with its download spec is about 1 KB)."""
        table = self.annotations()
        table = self._keep(table, table["fileType"].astype(str).str.lower().isin(self.file_types),
                           f"file types {','.join(self.file_types)}")
        keep = license_filter(self.config.licenses)
        if keep is not None:
            texts = table["license"].astype(str)
            allowed = {text: keep(license_slug(text)) for text in texts.unique()}  # a few distinct texts
            table = self._keep(table, texts.map(allowed).astype(bool), f"licences {','.join(self.config.licenses)}")
        labelled = self._label(table, categories)
        groups = []
        for label, group in labelled.groupby("label", sort=False):
            group = group.sort_values("identifier")  # a stable order, then the seed's permutation
            order = seeded_order(len(group), self.config.seed, label)
            groups.append((label, group.index.to_numpy()[order], group["lvis"].to_numpy()[order]))
        total = sum(len(rows) for _, rows, _ in groups)
        total = total if limit is None else min(total, limit)
        if not total:
            raise SourceError(f"source {self.name!r} has no objects for categories {categories or 'all'} "
                              "after filtering")
        chosen = itertools.islice(interleaved_rows(groups), total)
        while batch := list(itertools.islice(chosen, RECORD_BATCH)):
            sketchfab_uids = [self._uid(table.loc[i]) for _, i, _ in batch if table.at[i, "source"] == "sketchfab"]
            v1_meta = self.v1.metadata(sketchfab_uids) if sketchfab_uids else {}
            for label, index, lvis_name in batch:
                try:
                    yield self.record(table.loc[index], label, lvis_name, v1_meta)
                except (ArchiveError, KeyError, ValueError) as error:
                    self.note(f"skipped {table.at[index, 'fileIdentifier']}: {error}")

    def _label(self, table, categories: list[str] | None):
        """The rows the categories select, as a frame of ``label``, ``lvis`` (LVIS name or "") and
        ``identifier``, indexed like ``table`` (vectorized: the real tables have millions of rows)."""
        import pandas as pd

        lvis = self.v1.lvis()
        uid_to_lvis = {u: name for name in sorted(lvis) for u in lvis[name]}
        identifiers = table["fileIdentifier"].astype(str)
        sketchfab = table["source"] == "sketchfab"
        labels = identifiers.str.rstrip("/").str.rsplit("/", n=1).str[-1].map(uid_to_lvis).where(sketchfab).fillna("")
        if not categories:
            return pd.DataFrame({"label": labels.replace("", "unlabeled"), "lvis": labels, "identifier": identifiers})
        text = None
        if self.config.match_keywords:
            names = identifiers.str.rsplit("/", n=1).str[-1]
            text = (names + " " + table["metadata"].astype(str)).str.lower()
        frames, taken = [], pd.Series(False, index=table.index)
        for query in categories:
            names = set(match_lvis(query, lvis))
            by_lvis = labels.isin(names) & (labels != "")
            by_keyword = pd.Series(False, index=table.index)
            if text is not None:
                words = [w for w in re.split(r"[^a-z0-9]+", query.lower()) if w]
                by_keyword = ~sketchfab
                for word in words:  # whole words: not preceded or followed by a letter or digit
                    by_keyword &= text.str.contains(rf"(?<![a-z0-9]){re.escape(word)}(?![a-z0-9])", regex=True)
                by_keyword &= ~by_lvis
            hint = "" if text is not None else f"; {int((~sketchfab).sum())} without LVIS labels skipped (--match-keywords)"
            self.note(f"{query}: {int(by_lvis.sum())} by LVIS labels ({', '.join(sorted(names)) or 'no LVIS name'}), "
                      f"{int(by_keyword.sum())} by keywords{hint}")
            selected = (by_lvis | by_keyword) & ~taken
            taken |= selected
            frames.append(pd.DataFrame({"label": query.strip(), "lvis": labels[selected],
                                        "identifier": identifiers[selected]}))
        return pd.concat(frames)

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
