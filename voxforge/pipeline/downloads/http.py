"""HTTP that survives the internet: bounded retries with backoff, verified bodies, atomic cache files.

Transient faults (time-outs, connection resets, HTTP 429 and 5xx, truncated bodies, a checksum that
does not match) are retried ``retries`` times with exponential backoff and jitter (``Retry-After`` is
honoured, capped); permanent ones (404, 401/403, other 4xx, a body over the size limit) fail at once.
The final error names the cause, so a failed object's manifest row says what went wrong.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import re
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from voxforge.pipeline.downloads import hub
from voxforge.pipeline.downloads.cache import path_lock, remove_stale_temporaries, temporary_sibling

CHUNK = 1 << 20
PROGRESS_ABOVE = 8 << 20  # bytes: smaller files finish before a bar would help
SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class DownloadSettings:
    timeout: float = 60.0  # seconds to connect, and at most between two bytes of a body
    retries: int = 4  # further attempts after the first
    backoff: float = 1.0  # first wait in seconds; doubles per attempt, with jitter
    max_backoff: float = 60.0
    max_bytes: int = 4 << 30  # refuse a body (or an archive member set) larger than this
    mirrors: tuple[tuple[str, str], ...] = ()  # (URL prefix, replacement), for hosts other than the Hub

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict | None) -> "DownloadSettings":
        values = dict(values or {})
        values["mirrors"] = tuple(tuple(pair) for pair in values.get("mirrors", ()))
        return cls(**{k: v for k, v in values.items() if k in cls.__dataclass_fields__})

    def rewrite(self, url: str) -> str:
        """The URL to fetch: the longest matching mirror prefix replaced (``--mirror PREFIX=URL``)."""
        for prefix, replacement in sorted(self.mirrors, key=lambda pair: -len(pair[0])):
            if url.startswith(prefix):
                return replacement + url[len(prefix):]
        return url

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(self.max_backoff, max(0.0, retry_after))
        return min(self.max_backoff, self.backoff * 2 ** (attempt - 1)) * (0.5 + random.random())


class DownloadError(RuntimeError):
    """A download that failed for good; ``str()`` is the reason recorded in the manifest."""

    def __init__(self, reason: str, permanent: bool = False, retry_after: float | None = None,
                 status: int | None = None) -> None:
        super().__init__(hub.redact(reason))
        self.permanent = permanent
        self.retry_after = retry_after
        self.status = status


class RangeNotSupported(DownloadError):
    """The server answers range requests with the whole file."""


_local = threading.local()


def session():
    """One requests session per thread (connection reuse; sessions are not thread-safe)."""
    import requests

    if getattr(_local, "session", None) is None:
        _local.session = requests.Session()
        _local.session.headers["User-Agent"] = "voxforge"
        _local.session.headers["Accept-Encoding"] = "identity"  # sizes and checksums are of the bytes stored
    return _local.session


def _retry_after(response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def check_status(response, url: str, hub_origin: str | None, repo_id: str | None = None) -> None:
    status = response.status_code
    if status < 400:
        return
    if status in (401, 403) and hub_origin and hub.origin(url) == hub_origin.lower():
        raise DownloadError(hub.access_refused_message(status, repo_id, hub_origin), permanent=True, status=status)
    if status in (404, 410):
        raise DownloadError(f"not found (HTTP {status}): {url}", permanent=True, status=status)
    if status == 429 or status >= 500:
        raise DownloadError(f"server error (HTTP {status}) from {hub.origin(url)}", retry_after=_retry_after(response),
                            status=status)
    raise DownloadError(f"refused (HTTP {status}): {url}", permanent=True, status=status)


def _network_error(error: Exception, url: str, settings: DownloadSettings) -> DownloadError:
    import requests

    if isinstance(error, requests.Timeout):
        return DownloadError(f"timed out after {settings.timeout:g} s: {url}")
    if isinstance(error, requests.exceptions.ChunkedEncodingError):
        return DownloadError(f"truncated body (connection closed early): {url}")
    if isinstance(error, requests.ConnectionError):
        text = str(error).lower()
        kind = "connection reset" if "reset" in text or "aborted" in text else "connection failed"
        return DownloadError(f"{kind}: {url}")
    return DownloadError(f"{type(error).__name__}: {error}")


def _linked_sha256(response) -> str | None:
    """The Hub's checksum of an LFS file: ``X-Linked-Etag`` on the redirect (or the response) is its sha256."""
    for item in [*response.history, response]:
        etag = item.headers.get("X-Linked-Etag", "").strip().strip('"').lower()
        if etag.startswith("w/"):
            etag = etag[2:].strip('"')
        if SHA256_PATTERN.match(etag):
            return etag
    return None


def gave_up(attempts: int) -> str:
    return f" (gave up after {attempts} attempts)" if attempts > 1 else ""


def with_retries(attempt, url: str, settings: DownloadSettings):
    """``attempt()`` until it succeeds, a permanent error, or ``settings.retries`` retries, waiting with
    backoff between tries; network exceptions become DownloadErrors; the final error names the cause."""
    import requests

    last: DownloadError | None = None
    tries = 0
    for tries in range(1, settings.retries + 2):
        if last is not None:
            time.sleep(settings.delay(tries - 1, last.retry_after))
        try:
            return attempt()
        except DownloadError as error:
            last = error
        except requests.RequestException as error:
            last = _network_error(error, url, settings)
        if last.permanent:
            break
    assert last is not None
    raise type(last)(f"{last}{gave_up(tries)}", permanent=True, status=last.status)


@dataclass
class FetchResult:
    path: Path
    downloaded: bool  # False when the file was already in the cache
    sha256: str = ""


def _progress_bar(total: int | None, name: str | None):
    """A byte progress bar for large files fetched by the driver (annotation tables); None otherwise."""
    if not name or not total or total < PROGRESS_ABOVE:
        return None
    import sys

    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, desc=name, file=sys.stderr, leave=False)


def _download_once(url: str, temporary: Path, settings: DownloadSettings, hub_origin: str | None,
                   repo_id: str | None, progress_name: str | None = None) -> tuple[str, str | None]:
    """One attempt: the body into ``temporary``; returns (sha256 of the bytes, the server's sha256 if any)."""
    import requests

    digest, received = hashlib.sha256(), 0
    try:
        with session().get(url, headers=hub.auth_headers(url, hub_origin), stream=True,
                           timeout=(settings.timeout, settings.timeout), allow_redirects=True) as response:
            check_status(response, url, hub_origin, repo_id)
            expected_length = response.headers.get("Content-Length")
            if expected_length is not None and int(expected_length) > settings.max_bytes:
                raise DownloadError(f"file too large ({int(expected_length)} bytes > limit {settings.max_bytes}): {url}",
                                    permanent=True)
            bar = _progress_bar(int(expected_length) if expected_length else None, progress_name)
            try:
                with open(temporary, "wb") as handle:
                    for chunk in response.iter_content(CHUNK):
                        received += len(chunk)
                        if received > settings.max_bytes:
                            raise DownloadError(f"file too large (over {settings.max_bytes} bytes): {url}",
                                                permanent=True)
                        digest.update(chunk)
                        handle.write(chunk)
                        if bar is not None:
                            bar.update(len(chunk))
                    handle.flush()
                    os.fsync(handle.fileno())
            finally:
                if bar is not None:
                    bar.close()
            if expected_length is not None and received != int(expected_length):
                raise DownloadError(f"truncated body: got {received} of {int(expected_length)} bytes: {url}")
            return digest.hexdigest(), _linked_sha256(response)
    except DownloadError:
        raise
    except (requests.RequestException, OSError) as error:
        if isinstance(error, OSError) and not isinstance(error, requests.RequestException):
            raise  # local disk problems are not the network's fault: let them surface as they are
        raise _network_error(error, url, settings) from error


def fetch_file(url: str, dest: str | Path, settings: DownloadSettings, sha256: str | None = None,
               hub_origin: str | None = None, repo_id: str | None = None,
               mismatch_label: str = "checksum mismatch", progress: bool = False) -> FetchResult:
    """``dest`` holding the body of ``url``, downloaded unless already cached; verified, never partial.

    ``sha256`` is the expected checksum (else the Hub's ``X-Linked-Etag`` when it gives one). Two
    attempts that agree on a different checksum end the retries: the file really differs
    (``mismatch_label`` names that case, e.g. "modified" for Objaverse-XL objects changed upstream).
    """
    dest = Path(dest)
    if dest.is_file():
        return FetchResult(dest, False)
    if hub_origin and hub.origin(url) == hub_origin.lower() and os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", ""):
        raise DownloadError(f"HF_HUB_OFFLINE is set and {dest.name} is not in the cache", permanent=True)
    with path_lock(dest):
        if dest.is_file():  # another process finished it while we waited for the lock
            return FetchResult(dest, False)
        remove_stale_temporaries(dest)
        wrong_digests: list[str] = []

        def attempt() -> FetchResult:
            temporary = temporary_sibling(dest)
            try:
                actual, served = _download_once(url, temporary, settings, hub_origin, repo_id,
                                                dest.name if progress else None)
                expected = (sha256 or served or "").lower()
                if expected and actual != expected:
                    # the same wrong bytes twice: the file really differs, retrying will not help
                    permanent = actual in wrong_digests
                    wrong_digests.append(actual)
                    raise DownloadError(f"{mismatch_label}: sha256 is {actual[:16]}..., expected {expected[:16]}...: "
                                        f"{url}", permanent=permanent)
                os.replace(temporary, dest)
                return FetchResult(dest, True, actual)
            finally:
                temporary.unlink(missing_ok=True)

        return with_retries(attempt, url, settings)


@dataclass
class RemoteInfo:
    size: int
    commit: str  # the Hub's X-Repo-Commit: pins later range reads to one revision
    accepts_ranges: bool


def remote_info(url: str, settings: DownloadSettings, hub_origin: str | None = None,
                repo_id: str | None = None) -> RemoteInfo:
    """Size, revision and range support of a remote file (HEAD, following the Hub's redirect), with retries."""

    def attempt() -> RemoteInfo:
        response = session().head(url, headers=hub.auth_headers(url, hub_origin),
                                  timeout=(settings.timeout, settings.timeout), allow_redirects=True)
        check_status(response, url, hub_origin, repo_id)
        first = response.history[0] if response.history else response
        size = first.headers.get("X-Linked-Size") or response.headers.get("Content-Length")
        if size is None:
            raise DownloadError(f"the server gives no size for {url}", permanent=True)
        return RemoteInfo(int(size), first.headers.get("X-Repo-Commit", ""),
                          response.headers.get("Accept-Ranges", "").lower() == "bytes")

    return with_retries(attempt, url, settings)


class RangeFile(io.RawIOBase):
    """A seekable, read-only view of a remote file through HTTP range requests (blocks cached).

    ``tail`` preloads the bytes from ``tail_offset`` to the end (a zip's central directory, saved when
    the archive was listed), so opening the archive again costs no request.
    """

    def __init__(self, url: str, size: int, settings: DownloadSettings, hub_origin: str | None = None,
                 repo_id: str | None = None, tail: bytes = b"", tail_offset: int | None = None,
                 block_size: int = 1 << 20) -> None:
        super().__init__()
        self.url, self.size, self.settings = url, size, settings
        self.hub_origin, self.repo_id = hub_origin, repo_id
        self.tail, self.tail_offset = tail, (size - len(tail) if tail_offset is None else tail_offset)
        self.block_size = block_size
        self.position = 0
        self._block_start, self._block = -1, b""
        self.requests_made = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = max(0, base + offset)
        return self.position

    def readinto(self, buffer) -> int:
        count = min(len(buffer), max(0, self.size - self.position))
        filled = 0
        while filled < count:  # a read may span the end of a block or the start of the preloaded tail
            data = self._read_at(self.position, count - filled)
            buffer[filled:filled + len(data)] = data
            filled += len(data)
            self.position += len(data)
        return filled

    def _read_at(self, start: int, count: int) -> bytes:
        if self.tail and start >= self.tail_offset:
            offset = start - self.tail_offset
            return self.tail[offset:offset + count]
        end_limit = self.tail_offset if self.tail else self.size
        count = min(count, end_limit - start)
        if not (self._block_start <= start and start + count <= self._block_start + len(self._block)):
            length = min(max(count, self.block_size), end_limit - start)
            self._block_start, self._block = start, self._fetch_range(start, start + length - 1)
        offset = start - self._block_start
        return self._block[offset:offset + count]

    def _fetch_range(self, first: int, last_byte: int) -> bytes:
        expected = last_byte - first + 1

        def attempt() -> bytes:
            headers = {"Range": f"bytes={first}-{last_byte}", **hub.auth_headers(self.url, self.hub_origin)}
            self.requests_made += 1
            with session().get(self.url, headers=headers, timeout=(self.settings.timeout, self.settings.timeout),
                               allow_redirects=True, stream=True) as response:
                check_status(response, self.url, self.hub_origin, self.repo_id)
                if response.status_code != 206:  # never read a whole archive by accident
                    raise RangeNotSupported(f"the server ignores range requests (HTTP {response.status_code}): "
                                            f"{self.url}", permanent=True)
                content = response.content
            if len(content) != expected:
                raise DownloadError(f"truncated range: got {len(content)} of {expected} bytes: {self.url}")
            return content

        return with_retries(attempt, self.url, self.settings)

    def drop_cache(self) -> None:
        self._block_start, self._block = -1, b""
