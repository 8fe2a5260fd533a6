"""Shards that live elsewhere: object stores (``s3://``, ``gs://``, ``az://``), ``hf://`` and http(s) URLs.

A shard is streamed: its bytes are parsed as they arrive (:mod:`voxforge.loaders.tar_stream`), never
downloaded to disk first. Where the shards are:

- any fsspec URL (``s3://bucket/ds``, ``gs://...``, ``az://...``, ``hf://datasets/OWNER/NAME[@REV][/path]``)
  of a voxforge dataset: the split folders' ``shard-*.tar``, listed through the filesystem; a glob
  (``.../train/*.tar``) or a single ``.tar`` works too. Credentials are the backends' own
  (:mod:`voxforge.storage`); private Hub repos use ``HF_TOKEN`` or the saved login.
- ``https://host/path/shard-{000000..000099}.tar`` and ``{a,b}`` alternatives (brace expansion as in
  WebDataset), or a URL ending in ``/`` that holds a voxforge dataset: its ``dataset.json`` lists the
  shards of each split.

A dropped HTTP connection is resumed where it broke with a ``Range`` request (a few times), so one
network hiccup does not end an epoch.
"""

from __future__ import annotations

import json
import logging
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import BinaryIO

from voxforge.loaders import format as fmt
from voxforge.loaders.shards import SHARD_NAME
from voxforge.loaders.tar_stream import group_samples, iter_tar_members

log = logging.getLogger(__name__)

HTTP_PREFIXES = ("http://", "https://")
HTTP_TIMEOUT = 60.0
HTTP_RETRIES = 3
STREAM_BLOCK = 8 * 2**20  # bytes read ahead per request from object stores
_BRACES = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"^(\d+)\.\.(\d+)$")


def is_remote(source) -> bool:
    """True for a URL that is not a local file (``s3://``, ``hf://``, ``https://``, ...)."""
    from voxforge.storage import LOCAL_SCHEMES, scheme_of

    return isinstance(source, str) and scheme_of(source) not in (None, *LOCAL_SCHEMES)


def expand_braces(pattern: str) -> list[str]:
    """``a-{000..002}.tar`` -> a-000.tar, a-001.tar, a-002.tar; ``{x,y}`` alternatives; nested left to right."""
    match = _BRACES.search(pattern)
    if match is None:
        return [pattern]
    body = match.group(1)
    numeric = _RANGE.match(body)
    if numeric:
        first, last = numeric.groups()
        width = len(first) if first.startswith("0") or len(first) == len(last) else 0
        step = 1 if int(last) >= int(first) else -1
        options = [str(i).zfill(width) for i in range(int(first), int(last) + step, step)]
    else:
        options = body.split(",")
    head, tail = pattern[:match.start()], pattern[match.end():]
    return [expanded for option in options for expanded in expand_braces(head + option + tail)]


def resolve_remote_shards(source: str, split: str | None = None) -> list[str]:
    """The shard URLs a remote source names, in order."""
    splits = (split,) if split else fmt.SPLITS
    if not source.startswith(HTTP_PREFIXES):
        from voxforge.storage import location

        where = location(source)
        protocol = source.split("://", 1)[0]
        if any(c in source for c in "*?["):
            return [f"{protocol}://{p}" for p in sorted(where.fs.glob(where.root))]
        if source.endswith(fmt.SHARD_SUFFIX):
            return [source]
        return [where.url_of(f"{name}/{shard}") for name in splits
                for shard in sorted(n for n in where.list_files(name) if SHARD_NAME.match(n))]
    if source.endswith("/"):
        with open_stream(source + fmt.DATASET_FILE) as stream:
            info = json.loads(stream.read())
        listed = info.get("counts", {}).get("shards", {})
        return [source + shard for name in splits for shard in listed.get(name, [])]
    return expand_braces(source)


class _ResumingHTTPStream:
    """A file-like HTTP response body that reconnects with ``Range`` when the connection drops.

    A body that ends before its ``Content-Length`` counts as dropped too: :mod:`http.client` returns
    short reads there instead of raising.
    """

    def __init__(self, url: str, timeout: float = HTTP_TIMEOUT, retries: int = HTTP_RETRIES) -> None:
        self.url, self.timeout, self.retries = url, timeout, retries
        self.position = 0
        self.total: int | None = None
        self.response = self._connect()

    def _connect(self):
        request = urllib.request.Request(self.url, headers={"User-Agent": "voxforge"})
        if self.position:
            request.add_header("Range", f"bytes={self.position}-")
        try:
            response = urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as error:
            raise FileNotFoundError(f"{self.url}: HTTP {error.code} {error.reason}") from None
        if self.position and response.status != 206:
            response.close()
            raise OSError(f"{self.url}: the server ignored the Range request; cannot resume at byte {self.position}")
        length = response.headers.get("Content-Length")
        if self.total is None and length is not None:
            self.total = int(length)
        return response

    def read(self, size: int = -1) -> bytes:
        for attempt in range(self.retries + 1):
            try:
                data = self.response.read(size)
                if data or size == 0 or self.total is None or self.position >= self.total:
                    self.position += len(data)
                    return data
                problem: Exception = ConnectionError(f"body ended at byte {self.position} of {self.total}")
            except (OSError, urllib.error.URLError) as error:  # ConnectionReset, IncompleteRead, timeouts
                problem = error
            if attempt == self.retries:
                raise OSError(f"{self.url}: connection failed at byte {self.position}: {problem}") from problem
            log.warning("%s: connection dropped at byte %d (%s); resuming", self.url, self.position, problem)
            self.response.close()
            time.sleep(0.2 * 2 ** attempt)
            self.response = self._connect()
        return b""

    def close(self) -> None:
        self.response.close()

    def __enter__(self) -> "_ResumingHTTPStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_stream(url: str) -> BinaryIO:
    """A forward-only byte stream of a remote file (any fsspec URL, or http(s) with resumed reads)."""
    if url.startswith(HTTP_PREFIXES):
        return _ResumingHTTPStream(url)
    from voxforge.storage import location

    where = location(url)
    if url.startswith("hf://"):
        return where.fs.open(where.root, "rb", block_size=0)  # block_size=0: one streaming GET
    return where.fs.open(where.root, "rb", block_size=STREAM_BLOCK, cache_type="readahead")


def iter_remote_shard(url: str) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, members) per sample of a remote shard, parsed while it streams in."""
    with open_stream(url) as stream:
        yield from group_samples(iter_tar_members(stream, url))
