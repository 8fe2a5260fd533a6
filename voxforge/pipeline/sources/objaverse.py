"""Objaverse 1.0: GLB objects from the Hub's ``allenai/objaverse``, chosen by LVIS category.

The annotation files the ``objaverse`` package reads (``lvis-annotations.json.gz``,
``object-paths.json.gz``, ``metadata/NNN-NNN.json.gz``) are first fetched by our downloader (through
``HF_ENDPOINT``, with retries, into the cache, in the package's own folder layout), then parsed by the
package's readers, which find them present and make no request of their own (the package hard-codes
its host). GLBs are fetched per object by the pipeline's download stage.

``--categories`` resolves against the LVIS names: an exact name is used alone (``chair``); otherwise a
name's disambiguated forms and compounds are gathered (``bus`` -> ``bus_(vehicle)``, ``school_bus``).
Sampling within a category is seeded (``--seed``); ``--licenses`` filters by licence.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import io
import itertools
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from voxforge.pipeline.sources.base import ObjectRecord, SourceError, UnknownCategoryError
from voxforge.pipeline.sources.licenses import license_filter, license_name, license_slug
from voxforge.pipeline.sources.remote import RemoteSource
from voxforge.pipeline.sources.shapenet_taxonomy import SYNONYMS

OBJAVERSE_REPO = "allenai/objaverse"
VERSIONED = "hf-objaverse-v1"  # the objaverse package's folder name inside its download dir
UID = re.compile(r"^[0-9a-f]{32}$")
OBJECT_PATH = re.compile(r"^glbs/\d{3}-\d{3}/[0-9a-f]{32}\.glb$")


def quiet_objaverse() -> None:
    from loguru import logger

    logger.disable("objaverse")


def lvis_base(name: str) -> str:
    """``bus_(vehicle)`` -> ``bus``."""
    return name.split("_(")[0]


def match_lvis(query: str, names: Iterable[str]) -> list[str]:
    """LVIS names for a user's category: the exact name alone, else its disambiguated forms and compounds."""
    names = sorted(set(names))
    key = re.sub(r"[\s-]+", "_", query.strip().lower())
    for candidate in (key, SYNONYMS.get(key)):
        if not candidate:
            continue
        if candidate in names:
            return [candidate]
        related = [n for n in names if lvis_base(n) == candidate] + \
                  [n for n in names if lvis_base(n).endswith("_" + candidate)]
        if related:
            return list(dict.fromkeys(related))
    return []


def suggest_lvis(query: str, names: Iterable[str]) -> str:
    names = sorted(set(names))
    key = re.sub(r"[\s-]+", "_", query.strip().lower())
    bases = {lvis_base(n): n for n in names}
    close = difflib.get_close_matches(key, names, n=5, cutoff=0.6)
    close += [bases[b] for b in difflib.get_close_matches(key, list(bases), n=5, cutoff=0.6)]
    close = list(dict.fromkeys(close))[:5]
    return f"; closest LVIS names: {', '.join(close)}" if close else ""


def seeded_order(count: int, seed: int, label: str):
    """A permutation of ``range(count)`` fixed by (seed, label): the sample a ``--limit`` takes."""
    import numpy as np

    key = int.from_bytes(hashlib.sha256(f"{seed}:{label}".encode()).digest()[:8], "little")
    return np.random.default_rng(key).permutation(count)


def interleave(groups: list[list]) -> list:
    return [item for group in itertools.zip_longest(*groups) for item in group if item is not None]


class ObjaverseAnnotations:
    """Objaverse 1.0's annotation files in the cache, read with the ``objaverse`` package."""

    def __init__(self, source: RemoteSource) -> None:
        self.source = source
        self.folder = source.cache / "objaverse"
        self._paths: dict[str, str] | None = None

    def _fetch(self, filename: str) -> Path:
        return self.source.fetch_hub_file(OBJAVERSE_REPO, filename, self.folder / VERSIONED / filename)

    def lvis(self) -> dict[str, list[str]]:
        from objaverse.xl.sketchfab import SketchfabDownloader

        quiet_objaverse()
        self._fetch("lvis-annotations.json.gz")
        return SketchfabDownloader.get_lvis_annotations(download_dir=str(self.folder))

    def object_paths(self) -> dict[str, str]:
        if self._paths is None:
            from objaverse.xl.sketchfab import SketchfabDownloader

            quiet_objaverse()
            self._fetch("object-paths.json.gz")
            raw = SketchfabDownloader._get_object_paths(download_dir=str(self.folder))
            self._paths = {u: p for u, p in raw.items() if UID.match(str(u)) and OBJECT_PATH.match(str(p))}
        return self._paths

    def metadata(self, uids: list[str]) -> dict[str, dict]:
        """Sketchfab metadata (name, author, licence, page) of the given uids."""
        from objaverse.xl.sketchfab import SketchfabDownloader

        quiet_objaverse()
        paths = self.object_paths()
        uids = [u for u in uids if u in paths]
        for shard in sorted({paths[u].split("/")[1] for u in uids}):
            self._fetch(f"metadata/{shard}.json.gz")  # present before the package looks (it would fetch itself)
        if not uids:
            return {}
        with contextlib.redirect_stderr(io.StringIO()):  # the package's progress bars for a local read
            return SketchfabDownloader.get_full_annotations(uids=uids, download_dir=str(self.folder))

    def glb_spec(self, uid: str, sha256: str | None = None, mismatch: str = "checksum mismatch") -> tuple[str, dict]:
        """(public URL, fetch spec) of an object's GLB."""
        path = self.object_paths()[uid]
        url = self.source.hub_url(OBJAVERSE_REPO, path)
        spec = self.source.file_spec(url, self.folder / VERSIONED / path, sha256=sha256, from_hub=True,
                                     repo_id=OBJAVERSE_REPO, mismatch=mismatch)
        return url, spec


def attribution(uid: str, meta: dict) -> dict:
    """Who made the object and where it lives (kept with every sample: most objects are CC-BY)."""
    user = meta.get("user") or {}
    slug = license_slug(meta.get("license"))
    return {"uid": uid, "name": str(meta.get("name", "")), "author": str(user.get("displayName") or user.get("username") or ""),
            "author_url": str(user.get("profileUrl", "")),
            "source_url": str(meta.get("viewerUrl") or f"https://sketchfab.com/3d-models/{uid}"),
            "license_name": license_name(slug)}


class ObjaverseSource(RemoteSource):
    name = "objaverse"

    def __init__(self, config) -> None:
        super().__init__(config)
        self.annotations = ObjaverseAnnotations(self)
        self._lvis: dict[str, list[str]] | None = None

    def lvis(self) -> dict[str, list[str]]:
        if self._lvis is None:
            self._lvis = self.annotations.lvis()
        return self._lvis

    def categories(self) -> list[str]:
        return sorted(self.lvis())

    def records(self, categories: list[str]) -> Iterator[ObjectRecord]:
        yield from self.select(categories, None)

    def resolve_groups(self, requested: list[str] | None) -> dict[str, list[str]]:
        """{category label: [LVIS names]}; unknown names fail with the closest LVIS names."""
        names = self.lvis()
        if not requested:
            return {n: [n] for n in sorted(names)}
        groups = {}
        for query in requested:
            matched = match_lvis(query, names)
            if not matched:
                raise UnknownCategoryError(f"unknown category {query!r} for source {self.name!r} "
                                           f"(no LVIS name matches){suggest_lvis(query, names)}")
            groups[query.strip()] = matched
        return groups

    def candidates(self, groups: dict[str, list[str]]) -> dict[str, list[tuple[str, str]]]:
        """Per label, (uid, LVIS name) in a seeded order; an object already taken by a label is not repeated."""
        lvis, paths, seen = self.lvis(), self.annotations.object_paths(), set()
        result = {}
        for label, names in groups.items():
            pairs = {}
            for name in names:
                for uid in lvis.get(name, []):
                    if uid in paths and uid not in seen:
                        pairs.setdefault(uid, name)
            ordered = sorted(pairs.items())
            ordered = [ordered[i] for i in seeded_order(len(ordered), self.config.seed, label)]
            seen |= set(pairs)
            result[label] = ordered
            counts = ", ".join(f"{n} ({sum(1 for v in pairs.values() if v == n)})" for n in names)
            self.note(f"{label} -> {counts}: {len(ordered)} objects")
        return result

    def select(self, categories: list[str] | None, limit: int | None) -> list[ObjectRecord]:
        per_label = self.candidates(self.resolve_groups(categories))
        metadata: dict[str, dict] = {}
        keep = license_filter(self.config.licenses)
        if keep is not None:
            metadata = self.annotations.metadata([u for pairs in per_label.values() for u, _ in pairs])
            before = sum(len(p) for p in per_label.values())
            per_label = {label: [(u, n) for u, n in pairs if keep(license_slug(metadata.get(u, {}).get("license")))]
                         for label, pairs in per_label.items()}
            self.note(f"licences {','.join(self.config.licenses)}: kept {sum(len(p) for p in per_label.values())} "
                      f"of {before}")
        chosen = interleave([[(label, u, n) for u, n in pairs] for label, pairs in per_label.items()])
        chosen = chosen[:limit] if limit is not None else chosen
        missing = [u for _, u, _ in chosen if u not in metadata]
        if missing:
            metadata |= self.annotations.metadata(missing)
        if not chosen:
            raise SourceError(f"source {self.name!r} has no objects for categories {categories or 'all'} "
                              "after filtering")
        return [self.record(label, uid, lvis_name, metadata.get(uid, {})) for label, uid, lvis_name in chosen]

    def record(self, label: str, uid: str, lvis_name: str, meta: dict) -> ObjectRecord:
        url, spec = self.annotations.glb_spec(uid)
        return ObjectRecord(object_id=uid, category=label, source=self.name, uri=url,
                            license=license_slug(meta.get("license")), model_id=uid,
                            extra={**attribution(uid, meta), "lvis_category": lvis_name}, fetch=spec)
