"""ShapeNetCore v1/v2: a local folder, the official per-synset zip archives, or the Hub's gated dataset.

- ``--path DIR`` holding ``<synset>/<model>/...`` folders: read in place (the layouts ``local`` knows);
- ``--path DIR`` holding ``<synset>.zip`` archives: each object's members extracted when needed;
- no ``--path``: ``ShapeNet/ShapeNetCore`` on the Hub (``HF_ENDPOINT``; token from ``HF_TOKEN`` or the
  saved login). Each ``<synset>.zip`` is listed by reading only its central directory with range
  requests (saved in the cache); each object is then fetched alone by range requests for its own
  members, so a run streams objects instead of downloading multi-gigabyte archives first.

Categories: the 55 ShapeNetCore names, their synonyms and synset ids, and ``r2n2`` for the 13 classes
of 3D-R2N2. ``--split r2n2`` keeps the objects of 3D-R2N2's split with their train/val/test assignment,
from Pix2Vox's ``datasets/ShapeNet.json`` (MIT): fetched once into the cache from the pinned commit
(checksum verified; ``--mirror`` applies), or read from ``--split-file PATH``.
"""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath

from voxforge.pipeline.downloads.archives import ArchiveError, safe_id
from voxforge.pipeline.downloads.cache import write_atomic
from voxforge.pipeline.downloads.http import DownloadError, RangeFile, RangeNotSupported, fetch_file, remote_info
from voxforge.pipeline.sources.base import ObjectRecord, SourceError
from voxforge.pipeline.sources.local import SHAPENET_LICENSE, LocalSource, shapenet_ids
from voxforge.pipeline.sources.remote import RemoteSource
from voxforge.pipeline.sources.shapenet_taxonomy import (
    NAME_TO_SYNSET,
    R2N2_SYNSETS,
    SYNSET_TO_NAME,
    category_name,
    shapenet_aliases,
)

HUB_REPO = "ShapeNet/ShapeNetCore"
R2N2_SPLIT_URL = ("https://raw.githubusercontent.com/hzxie/Pix2Vox/0596d5e98bcbbbd6dcc4e4b8b7303b9337b72103/"
                  "datasets/ShapeNet.json")
R2N2_SPLIT_SHA256 = "338f957273d3495103853f83ed0780b4d2c9be285cdb7bf68df09528c2a502bb"
SYNSET = re.compile(r"^\d{8}$")
MESH_FILES = ("models/model_normalized.obj", "model.obj")  # v2, v1


def read_r2n2_split(path: str | Path) -> dict[str, dict[str, str]]:
    """Pix2Vox's ``ShapeNet.json`` as {synset: {model_id: split}}."""
    path = Path(path)
    try:
        entries = json.loads(path.read_text())
        return {str(e["taxonomy_id"]): {str(m): split for split in ("train", "val", "test") for m in e.get(split, [])}
                for e in entries}
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise SourceError(f"--split-file {path}: not a Pix2Vox ShapeNet.json split file ({error})") from error


def models_in_archive(archive: zipfile.ZipFile, synset: str) -> dict[str, tuple[str, str]]:
    """{model_id: (member prefix, mesh path under it)} for the ShapeNet models of ``synset`` in a zip."""
    found: dict[str, tuple[str, str]] = {}
    for name in archive.namelist():
        mesh = next((m for m in MESH_FILES if name == m or name.endswith("/" + m)), None)
        ids = shapenet_ids(PurePosixPath(name), PurePosixPath(synset)) if mesh else None
        if not ids or ids[0] != synset:
            continue
        try:
            model_id = safe_id(ids[1], "model id")
        except ArchiveError:
            continue  # a hostile or broken name never becomes a path
        found.setdefault(model_id, (name[: len(name) - len(mesh)], mesh))
    return dict(sorted(found.items()))


class ShapeNetSource(RemoteSource):
    name = "shapenet"

    def __init__(self, config) -> None:
        super().__init__(config)
        self.repo, self.revision = HUB_REPO, "main"
        self.root = Path(config.path).expanduser().resolve() if config.path else None
        if self.root is not None and not self.root.is_dir():
            raise SourceError(f"--path {config.path}: not a directory")
        self.zips = {p.stem: p for p in sorted(self.root.glob("*.zip")) if SYNSET.match(p.stem)} if self.root else {}
        self.folder = LocalSource(self.root) if self.root and not self.zips else None
        if config.licenses:
            raise SourceError("every ShapeNet object is under the ShapeNet terms of use (non-commercial research and "
                              "education): --licenses cannot select among them")
        self.split = None
        if config.split_mode == "r2n2" or config.split_file:
            self.split = read_r2n2_split(config.split_file or self._fetch_r2n2_split())

    def _fetch_r2n2_split(self) -> Path:
        """Pix2Vox's ShapeNet.json at its pinned commit, in the cache (fetched once, checksum verified)."""
        url = self.settings.rewrite(R2N2_SPLIT_URL)
        try:
            return fetch_file(url, self.cache / "shapenet" / "r2n2-split" / "ShapeNet.json", self.settings,
                              sha256=R2N2_SPLIT_SHA256, progress=self.config.progress).path
        except DownloadError as error:
            raise SourceError(f"--split r2n2: cannot get 3D-R2N2's split file (Pix2Vox's ShapeNet.json): {error}; "
                              "give a copy with --split-file PATH") from error

    # categories -----------------------------------------------------------------------------------
    def _synsets(self) -> list[str]:
        if self.folder is not None:
            return sorted({r.synset_id for r in self.folder.records(self.folder.categories()) if r.synset_id})
        return sorted(self.zips) if self.zips else sorted(SYNSET_TO_NAME)

    def categories(self) -> list[str]:
        return sorted({category_name(s) for s in self._synsets()})

    def category_aliases(self) -> dict[str, str]:
        present = set(self.categories())
        aliases = {s: category_name(s) for s in self._synsets()}
        return {a: n for a, n in (aliases | shapenet_aliases(present)).items() if n in present}

    def resolve_categories(self, requested: Iterable[str] | None) -> list[str]:
        expanded: list[str] = []
        for name in requested or []:
            if name.strip().lower() == "r2n2":  # the 3D-R2N2 classes this source has
                expanded += [SYNSET_TO_NAME[s] for s in R2N2_SYNSETS if SYNSET_TO_NAME[s] in self.categories()]
            else:
                expanded.append(name)
        if requested and not expanded:
            raise SourceError(f"source {self.name!r} has none of the 3D-R2N2 classes")
        return super().resolve_categories(expanded or None)

    # records ----------------------------------------------------------------------------------------
    def records(self, categories: list[str]) -> Iterator[ObjectRecord]:
        for category in categories:
            synset = NAME_TO_SYNSET.get(category, category)
            found = list(self._records_of(synset, category))
            kept = self._apply_split(synset, found)
            detail = f", 3D-R2N2 split kept {len(kept)} ({self._split_counts(kept)})" if self.split is not None else ""
            self.note(f"{category} -> {synset} ({len(found)} models{detail})")
            yield from kept

    def _apply_split(self, synset: str, records: list[ObjectRecord]) -> list[ObjectRecord]:
        if self.split is None:
            return records
        assignment = self.split.get(synset, {})
        kept = [r for r in records if r.model_id in assignment]
        for record in kept:
            record.split = assignment[record.model_id]
        return kept

    @staticmethod
    def _split_counts(records: list[ObjectRecord]) -> str:
        counts = Counter(r.split for r in records)
        return ", ".join(f"{s} {counts.get(s, 0)}" for s in ("train", "val", "test"))

    def _records_of(self, synset: str, category: str) -> Iterator[ObjectRecord]:
        if self.folder is not None:
            for record in self.folder.records(self.folder.categories()):
                if record.synset_id == synset:
                    yield ObjectRecord(
                        object_id=record.object_id, category=category, source=self.name,
                        uri=Path(record.uri).relative_to(self.root).as_posix(), license=SHAPENET_LICENSE,
                        synset_id=synset, model_id=record.model_id, fetch={"kind": "path", "dest": record.uri})
            return
        archive = self._open_archive(synset)
        if archive is None:
            return
        with archive["zip"] as opened:
            models = models_in_archive(opened, synset)
        for model_id, (prefix, mesh) in models.items():
            spec = {"kind": "zip", "archive": archive["archive"], "size": archive["size"], "index": archive["index"],
                    "index_offset": archive["index_offset"], "prefix": prefix, "mesh": mesh,
                    "dest": str(self.cache / "shapenet" / archive["key"] / synset / model_id),
                    "hub": archive["hub"], "repo": self.repo if archive["hub"] else None,
                    "settings": self.settings.as_dict()}
            yield ObjectRecord(
                object_id=f"{synset}/{model_id}", category=category, source=self.name,
                uri=f"{archive['public']}#{prefix}{mesh}", license=SHAPENET_LICENSE, synset_id=synset,
                model_id=model_id, fetch=spec)

    # archives ---------------------------------------------------------------------------------------
    def _open_archive(self, synset: str) -> dict | None:
        if self.zips:
            path = self.zips.get(synset)
            if path is None:
                return None
            key = "zip-" + hashlib.sha1(str(path).encode()).hexdigest()[:12]
            return {"zip": zipfile.ZipFile(path), "archive": str(path), "size": path.stat().st_size, "index": None,
                    "index_offset": None, "hub": None, "key": key, "public": path.name}
        return self._open_hub_archive(synset)

    def _open_hub_archive(self, synset: str) -> dict | None:
        filename = f"{synset}.zip"
        try:
            info = remote_info(self.hub_url(self.repo, filename, self.revision), self.settings, self.hub_origin,
                               self.repo)
        except DownloadError as error:
            if error.status == 404:
                self.note(f"{filename} is not in {self.repo} at {self.endpoint}")
                return None
            raise SourceError(f"{self.repo} ({filename}): {error}") from error
        revision = safe_id(info.commit, "revision") if info.commit else self.revision
        url = self.hub_url(self.repo, filename, revision)
        key = f"hub-{self.repo.replace('/', '--')}-{revision[:12]}"
        folder = self.cache / "shapenet" / key
        index, meta = folder / f"{filename}.cdir", folder / f"{filename}.json"
        base = {"archive": url, "size": info.size, "hub": self.hub_origin, "key": key,
                "public": self.hub_url(self.repo, filename, revision)}
        try:
            if meta.is_file() and json.loads(meta.read_text()).get("size") == info.size and index.is_file():
                offset = json.loads(meta.read_text())["start_dir"]
                reader = RangeFile(url, info.size, self.settings, self.hub_origin, self.repo,
                                   tail=index.read_bytes(), tail_offset=offset)
                return {**base, "zip": zipfile.ZipFile(reader), "index": str(index), "index_offset": offset}
            reader = RangeFile(url, info.size, self.settings, self.hub_origin, self.repo)
            opened = zipfile.ZipFile(reader)
            offset = opened.start_dir
            reader.seek(offset)
            write_atomic(index, reader.read(info.size - offset))
            write_atomic(meta, json.dumps({"size": info.size, "start_dir": offset, "url": url}).encode())
            return {**base, "zip": opened, "index": str(index), "index_offset": offset}
        except RangeNotSupported:
            self.note(f"{self.endpoint} ignores range requests: downloading all of {filename} first")
            path = fetch_file(url, folder / filename, self.settings, hub_origin=self.hub_origin, repo_id=self.repo).path
            return {**base, "zip": zipfile.ZipFile(path), "archive": str(path), "index": None, "index_offset": None}
        except DownloadError as error:
            raise SourceError(f"{self.repo} ({filename}): {error}") from error
        except zipfile.BadZipFile as error:
            raise SourceError(f"{self.repo} ({filename}) is not a readable zip archive: {error}") from error
