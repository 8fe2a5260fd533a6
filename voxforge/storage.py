"""Where datasets live: a local folder or any filesystem fsspec knows (``s3://``, ``gs://``, ``az://``, ...).

A :class:`Location` is a folder on one filesystem. Paths inside it are relative, ``/``-separated
(``train/shard-000000.tar``). Writes are atomic on every backend: a local file is written under a
temporary name, flushed and renamed; an object store receives one PUT (or one multipart upload that
is only visible once completed), so a reader sees a whole file or none.

Credentials and endpoints are the backends' own: s3fs/botocore read ``AWS_ACCESS_KEY_ID``,
``AWS_PROFILE``, ``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``) and instance roles; gcsfs reads
``GOOGLE_APPLICATION_CREDENTIALS``; adlfs reads ``AZURE_STORAGE_CONNECTION_STRING`` /
``AZURE_STORAGE_ACCOUNT_NAME``. Nothing here logs or stores them.
"""

from __future__ import annotations

import errno
import os
import posixpath
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

# scheme -> (package, voxforge extra) for the optional object-store backends
OPTIONAL_BACKENDS = {
    "s3": ("s3fs", "s3"), "s3a": ("s3fs", "s3"),
    "gs": ("gcsfs", "gcs"), "gcs": ("gcsfs", "gcs"),
    "az": ("adlfs", "azure"), "abfs": ("adlfs", "azure"), "abfss": ("adlfs", "azure"), "adl": ("adlfs", "azure"),
}
LOCAL_SCHEMES = ("file", "local")
# schemes fsspec reads but a pipeline run cannot write a dataset to (no shared, atomic, writable folder)
NOT_WRITABLE = {
    "http": "http(s) is read-only", "https": "http(s) is read-only",
    "hf": "build the dataset locally or in a bucket, then `pipeline publish DIR --to hf://datasets/OWNER/NAME`",
    "memory": "memory:// exists only inside one process; Ray workers cannot see it",
    "zip": "archives are read-only here; `pipeline publish DIR --to X.zip` writes one",
    "tar": "archives are read-only here; `pipeline publish DIR --to X.tar` writes one",
}


class StorageError(ValueError):
    """A location cannot be used: unknown scheme, backend not installed, not writable, unreachable."""


def scheme_of(url: str) -> str | None:
    """The URL's scheme (``s3``), or None for a local path (Windows drive letters count as local)."""
    head, sep, _ = str(url).partition("://")
    if not sep or len(head) < 2 or not head.replace("+", "").replace("-", "").isalnum():
        return None
    return head.lower()


def is_url(url: str | os.PathLike) -> bool:
    """True for ``scheme://...`` (remote or ``file://``), False for a plain local path."""
    return isinstance(url, str) and scheme_of(url) is not None


def _filesystem(url: str, storage_options: dict | None):
    import fsspec

    scheme = scheme_of(url)
    try:
        fsspec.get_filesystem_class(scheme)
    except ImportError:
        package, extra = OPTIONAL_BACKENDS.get(scheme, (None, None))
        hint = f"pip install 'voxforge[{extra}]' (or {package})" if package else "install its fsspec backend"
        raise StorageError(f"{url}: {scheme}:// needs a filesystem that is not installed; {hint}") from None
    except ValueError:
        raise StorageError(f"{url}: unknown storage scheme {scheme!r}; use a local folder or a URL such as "
                           "s3://bucket/path, gs://bucket/path or az://container/path") from None
    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    return fs, path.rstrip("/")


@dataclass(frozen=True)
class Location:
    """A folder on a filesystem; ``url`` is what the user gave (local paths made absolute)."""

    url: str
    fs: object  # fsspec.AbstractFileSystem
    root: str
    # a local folder that must already exist: a write fails (FileNotFoundError) instead of recreating it,
    # so a run whose output folder was removed under it stops rather than writing a stray partial dataset
    keep_root: bool = False

    @property
    def is_local(self) -> bool:
        return "file" in protocols(self.fs)

    def path(self, relative: str = "") -> str:
        """The filesystem path of ``relative`` (what ``self.fs`` methods take)."""
        return posixpath.join(self.root, relative) if relative else self.root

    def url_of(self, relative: str = "") -> str:
        """A full URL (or absolute local path) for ``relative``: for messages and for readers."""
        return posixpath.join(self.url.rstrip("/"), relative) if relative else self.url

    def local_path(self, relative: str = "") -> Path:
        """``relative`` as a local path; only for local locations."""
        if not self.is_local:
            raise StorageError(f"{self.url} is not a local folder")
        return Path(self.path(relative))

    # reading
    def exists(self, relative: str = "") -> bool:
        return self.fs.exists(self.path(relative))

    def read_bytes(self, relative: str) -> bytes:
        """The file's bytes; FileNotFoundError when it is absent."""
        return self.fs.cat_file(self.path(relative))

    def read_text(self, relative: str) -> str:
        return self.read_bytes(relative).decode("utf-8")

    def read_many(self, relatives: Iterable[str]) -> dict[str, bytes]:
        """Several files at once (object stores fetch them concurrently); missing ones are left out."""
        relatives = list(relatives)
        if not relatives:
            return {}
        paths = {self.path(r): r for r in relatives}
        found = self.fs.cat(list(paths), on_error="omit")
        if len(paths) == 1 and not isinstance(found, dict):  # fsspec returns bare bytes for a single path
            found = {next(iter(paths)): found}
        return {paths[_strip_protocol(self.fs, p)]: data for p, data in found.items()
                if _strip_protocol(self.fs, p) in paths}

    def open(self, relative: str, mode: str = "rb", **kwargs):
        return self.fs.open(self.path(relative), mode, **kwargs)

    def list_files(self, relative: str = "") -> dict[str, int]:
        """Name -> size of the files directly in ``relative`` (empty when the folder is absent)."""
        try:  # refresh: object-store listings are cached, and workers add files while a run lasts
            entries = self.fs.ls(self.path(relative), detail=True, refresh=True)
        except FileNotFoundError:
            return {}
        return {posixpath.basename(e["name"].rstrip("/")): int(e.get("size") or 0)
                for e in entries if e.get("type") == "file"}

    # writing
    def write_bytes(self, relative: str, data: bytes) -> None:
        """Write ``data`` atomically (a reader sees the old file, or the new one whole)."""
        if not self.is_local:
            self.fs.pipe_file(self.path(relative), data)  # one PUT: visible whole or not at all
            return
        temporary = self.staging_file(relative)
        try:
            with open(temporary, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            self.put_file(temporary, relative)
        finally:
            temporary.unlink(missing_ok=True)

    def write_text(self, relative: str, text: str) -> None:
        self.write_bytes(relative, text.encode("utf-8"))

    def staging_file(self, relative: str) -> Path:
        """A local path to build a file in before :meth:`put_file` publishes it as ``relative``: beside the
        target for a local folder (so publishing is a rename), in the temporary folder otherwise."""
        name = f"{posixpath.basename(relative)}.{uuid.uuid4().hex[:12]}.partial"
        if self.is_local:
            target = Path(self.path(relative))
            self._make_parent(target)
            return target.with_name(name)
        import tempfile

        folder = Path(tempfile.gettempdir()) / "voxforge-staging"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / name

    def put_file(self, local_file: str | Path, relative: str) -> None:
        """Publish a finished local file (from :meth:`staging_file`) as ``relative``, atomically; the local
        file is gone once this succeeded (and still there when it raised)."""
        if self.is_local:
            target = Path(self.path(relative))
            self._make_parent(target)
            os.replace(local_file, target)  # staged beside the target: same filesystem, an atomic rename
            fsync_directory(target.parent)
        else:
            self.fs.put_file(str(local_file), self.path(relative))
            Path(local_file).unlink(missing_ok=True)

    def _make_parent(self, target: Path) -> None:
        if target.parent.is_dir():
            return
        if self.keep_root and not os.path.isdir(self.root):
            raise FileNotFoundError(errno.ENOENT, "the folder no longer exists", self.root)
        target.parent.mkdir(parents=True, exist_ok=True)

    def remove(self, relative: str) -> None:
        try:
            self.fs.rm_file(self.path(relative))
        except FileNotFoundError:
            pass


def storage_problem(error: BaseException) -> str:
    """What went wrong with a write, in the system's words ("No space left on device", "Read-only file
    system", "the folder no longer exists"), without a traceback."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return f"{type(error).__name__}: {error}"


def protocols(fs) -> tuple[str, ...]:
    """The names a filesystem answers to (``("s3", "s3a")``, ``("file", "local")``)."""
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def _strip_protocol(fs, path: str) -> str:
    return fs._strip_protocol(path).rstrip("/")


def fsync_directory(directory: str | Path) -> None:
    """Make a rename inside ``directory`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def location(url: str | os.PathLike, storage_options: dict | None = None) -> Location:
    """A :class:`Location` for a local folder or an fsspec URL; raises :class:`StorageError` for an
    unknown scheme or a backend that is not installed (never makes a URL into a local folder)."""
    text = os.fspath(url)
    scheme = scheme_of(text)
    if scheme is None or scheme in LOCAL_SCHEMES:
        from fsspec.implementations.local import LocalFileSystem

        local = text.split("://", 1)[1] if scheme else text
        absolute = os.path.abspath(os.path.expanduser(local))
        return Location(absolute, LocalFileSystem(), absolute)
    fs, path = _filesystem(text, storage_options)
    return Location(text.rstrip("/"), fs, path)


def output_location(url: str | os.PathLike, storage_options: dict | None = None) -> Location:
    """A location a pipeline run could write a dataset to (a known, installed, writable kind of
    filesystem), without writing anything yet; raises :class:`StorageError` otherwise."""
    scheme = scheme_of(os.fspath(url))
    if scheme in NOT_WRITABLE:
        raise StorageError(f"--out {url}: cannot hold a pipeline run's output ({NOT_WRITABLE[scheme]})")
    return location(url, storage_options)


def write_problem(where: Location) -> str:
    """Why ``where`` refuses writes now ("No space left on device", "the folder no longer exists"), from a
    small probe file written and removed; "" when it accepts them."""
    if where.keep_root and where.is_local and not os.path.isdir(where.root):
        return "the folder no longer exists"
    probe = f".voxforge/write-test-{uuid.uuid4().hex[:12]}"
    try:
        where.write_bytes(probe, b"ok")
        where.remove(probe)
    except Exception as error:  # noqa: BLE001 (each backend raises its own kinds; all mean "cannot write")
        return storage_problem(error)
    return ""


def writable_location(url: str | os.PathLike, storage_options: dict | None = None) -> Location:
    """:func:`output_location`, proven writable (:func:`write_problem`); raises :class:`StorageError` with
    the reason otherwise."""
    where = output_location(url, storage_options)
    problem = write_problem(where)
    if problem:
        raise StorageError(f"--out {url}: cannot write there ({problem})")
    return where
