"""One run at a time per output: a lock on a local folder, a lease object on an object store.

Local folder: an exclusive ``flock`` on ``.voxforge/lock``; the kernel drops it when the process dies.

Object store: ``.voxforge/lease.json`` names its holder (run token, host, pid) and an expiry. It is
created with a conditional write (``If-None-Match: *``: only one of two racing runs succeeds) and
renewed by a background thread every ``ttl / 4`` seconds with ``If-Match`` on its ETag, so a run that
lost it (another took over an expired lease) notices and stops. A lease that expired, or whose holder
is a process on this host that no longer exists, may be taken over; otherwise the run is refused and
told when the lease expires. Conditional writes are S3's (and s3fs's ``mode="create"``); on stores
without ``If-Match`` the take-over of an expired lease is a read-compare-write.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import threading
import time
import uuid

from voxforge.loaders import format as fmt
from voxforge.storage import Location, protocols

log = logging.getLogger("voxforge")
LEASE_FILE = f"{fmt.WORK_DIR}/lease.json"
LOCK_FILE = f"{fmt.WORK_DIR}/lock"
DEFAULT_TTL_S = 60.0


class OutputBusyError(RuntimeError):
    """Another run is writing to the same output."""


class LeaseChanged(OSError):
    """The lease object is no longer the one this run wrote (another run took it over)."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LocalLock:
    def __init__(self, where: Location) -> None:
        self.where = where
        self.lost = False
        self._handle = None

    def acquire(self) -> "LocalLock":
        path = self.where.local_path(LOCK_FILE)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise OutputBusyError(f"another run is writing to {self.where.url}; wait for it or choose another --out") \
                from None
        self._handle = handle
        return self

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class ObjectStoreLease:
    def __init__(self, where: Location, ttl_s: float = DEFAULT_TTL_S) -> None:
        self.where = where
        self.ttl_s = ttl_s
        self.token = uuid.uuid4().hex
        self.etag: str | None = None
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def _path(self) -> str:
        return self.where.path(LEASE_FILE)

    def _body(self) -> bytes:
        return json.dumps({"holder": self.token, "host": socket.gethostname(), "pid": os.getpid(),
                           "expires": time.time() + self.ttl_s, "ttl": self.ttl_s}).encode()

    def _current(self) -> tuple[dict, str | None]:
        fs = self.where.fs
        fs.invalidate_cache(self._path)
        try:
            data = fs.cat_file(self._path)
            etag = fs.info(self._path).get("ETag")
        except FileNotFoundError:
            return {}, None
        try:
            return json.loads(data), etag
        except ValueError:
            return {"expires": 0}, etag  # unreadable: treated as expired

    def _replace(self, etag: str | None) -> None:
        """Write our lease over the one with ``etag``; raises OSError when someone else changed it first."""
        fs = self.where.fs
        if _supports_if_match(fs):
            try:
                response = fs.pipe_file(self._path, self._body(), IfMatch=etag)
            except OSError as error:  # s3fs reports HTTP 412 as EINVAL "pre-conditions ... did not hold"
                if "pre-condition" in str(error):
                    raise LeaseChanged(str(error)) from error
                raise
        else:
            _, now = self._current()
            if now != etag:
                raise LeaseChanged("the lease changed while it was being replaced")
            response = fs.pipe_file(self._path, self._body())
        self.etag = _etag_of(response) or self._current()[1]

    def acquire(self) -> "ObjectStoreLease":
        fs = self.where.fs
        try:
            response = fs.pipe_file(self._path, self._body(), mode="create")
            self.etag = _etag_of(response) or self._current()[1]
        except FileExistsError:
            holder, etag = self._current()
            expires = float(holder.get("expires", 0))
            dead_here = holder.get("host") == socket.gethostname() and not _pid_alive(int(holder.get("pid", -1)))
            if expires > time.time() and not dead_here:
                raise OutputBusyError(
                    f"another run (host {holder.get('host')}, pid {holder.get('pid')}) is writing to "
                    f"{self.where.url}; its lease expires in {expires - time.time():.0f} s unless renewed. "
                    "Wait for it, or choose another --out") from None
            try:
                self._replace(etag)
            except LeaseChanged:
                raise OutputBusyError(f"another run took {self.where.url} at the same moment; "
                                      "choose another --out") from None
            log.warning("took over the lease of %s from a run that stopped (host %s, pid %s)",
                        self.where.url, holder.get("host"), holder.get("pid"))
        self._thread = threading.Thread(target=self._renew, daemon=True, name="voxforge-lease")
        self._thread.start()
        return self

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl_s / 4):
            try:
                self._replace(self.etag)
            except LeaseChanged:
                self.lost = True
                log.error("lost the lease of %s: another run took it over", self.where.url)
                return
            except Exception as error:  # noqa: BLE001 (a network hiccup: the next renewal tries again)
                log.warning("could not renew the lease of %s (%s); retrying", self.where.url, error)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if not self.lost:
            holder, _ = self._current()
            if holder.get("holder") == self.token:
                self.where.remove(LEASE_FILE)


def _supports_if_match(fs) -> bool:
    return "s3" in protocols(fs)


def _etag_of(response) -> str | None:
    return response.get("ETag") if isinstance(response, dict) else None


def hold_output(where: Location, ttl_s: float | None = None):
    """The lock (local folder) or lease (object store, ``ttl_s`` default :data:`DEFAULT_TTL_S`) of ``where``,
    acquired; raises :class:`OutputBusyError`."""
    return (LocalLock(where) if where.is_local else ObjectStoreLease(where, ttl_s or DEFAULT_TTL_S)).acquire()
