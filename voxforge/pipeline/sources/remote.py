"""What the downloading sources share: the cache folder, download settings, annotation files, loading.

Annotation files (LVIS lists, metadata, parquet tables, archive listings) are fetched by the driver
while selecting; meshes are fetched later, per object, by the pipeline's download stage (or by the
render worker itself when the file is not there), from the record's fetch spec.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import trimesh

from voxforge.pipeline.downloads.cache import default_cache_dir
from voxforge.pipeline.downloads.http import DownloadError, DownloadSettings, fetch_file
from voxforge.pipeline.downloads.hub import hub_endpoint, hub_file_url, origin
from voxforge.pipeline.sources.base import ObjectRecord, Source, SourceError


class RemoteSource(Source):
    """A source whose meshes are downloaded into the shared cache (see ``downloads``)."""

    def __init__(self, config) -> None:
        self.config = config
        self.cache = Path(config.cache).expanduser().resolve() if config.cache else default_cache_dir()
        self.settings = DownloadSettings(timeout=config.download_timeout, retries=config.download_retries,
                                         backoff=config.download_backoff, mirrors=tuple(config.mirrors.items()))
        self.endpoint = hub_endpoint()
        self.notes: list[str] = []

    @classmethod
    def from_config(cls, config) -> "RemoteSource":
        return cls(config)

    def note(self, line: str) -> None:
        self.notes.append(f"{self.name}: {line}")

    @property
    def hub_origin(self) -> str:
        return origin(self.endpoint)

    def hub_url(self, repo_id: str, filename: str, revision: str = "main") -> str:
        return hub_file_url(repo_id, filename, revision=revision, endpoint=self.endpoint)

    def fetch_hub_file(self, repo_id: str, filename: str, dest: Path, revision: str = "main") -> Path:
        """An annotation file from a Hub dataset into the cache (kept: it is small and reused)."""
        try:
            return fetch_file(self.hub_url(repo_id, filename, revision), dest, self.settings,
                              hub_origin=self.hub_origin, repo_id=repo_id, progress=self.config.progress).path
        except DownloadError as error:
            raise SourceError(f"cannot get {filename} of {repo_id} from {self.endpoint}: {error}") from error

    def file_spec(self, url: str, dest: Path, sha256: str | None = None, from_hub: bool = False,
                  repo_id: str | None = None, mismatch: str = "checksum mismatch") -> dict:
        """A fetch spec for one downloaded file (mirrors applied to hosts other than the Hub)."""
        return {"kind": "file", "url": url if from_hub else self.settings.rewrite(url), "dest": str(dest),
                "sha256": sha256 or "", "hub": self.hub_origin if from_hub else None, "repo": repo_id,
                "mismatch": mismatch, "settings": self.settings.as_dict()}

    @classmethod
    def load_record(cls, record: ObjectRecord) -> trimesh.Scene:
        """The downloaded file, read as the local source reads files (trimesh; FBX/.blend through Blender)."""
        from voxforge.pipeline.downloads.materialize import load_locked
        from voxforge.pipeline.sources.local import LocalSource

        return load_locked(record.fetch, lambda path: LocalSource.load_record(replace(record, uri=str(path))))
