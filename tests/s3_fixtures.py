"""An S3-compatible store on loopback (moto's server mode) and a fault-injecting proxy in front of it.

The code under test talks to them through the ordinary clients (s3fs/botocore) via ``AWS_ENDPOINT_URL``;
nothing here reaches beyond 127.0.0.1.
"""

from __future__ import annotations

import http.client
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TEST_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "voxforge-test", "AWS_SECRET_ACCESS_KEY": "voxforge-test-secret",
                    "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class S3Store:
    """moto's S3 on 127.0.0.1:``port``, with one bucket made per test as needed."""

    def __init__(self, port: int) -> None:
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        self.server.start()
        self.endpoint = f"http://127.0.0.1:{port}"

    def client(self, endpoint: str | None = None):
        import boto3

        return boto3.client("s3", endpoint_url=endpoint or self.endpoint, region_name="us-east-1",
                            aws_access_key_id=TEST_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=TEST_CREDENTIALS["AWS_SECRET_ACCESS_KEY"])

    def bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> dict[str, int]:
        """Key -> size of every object under ``prefix``."""
        found, token = {}, None
        while True:
            page = self.client().list_objects_v2(Bucket=bucket, Prefix=prefix, **({"ContinuationToken": token} if token else {}))
            found.update({item["Key"]: item["Size"] for item in page.get("Contents", [])})
            if not page.get("IsTruncated"):
                return found
            token = page["NextContinuationToken"]

    def stop(self) -> None:
        self.server.stop()


@dataclass
class Fault:
    method: str  # GET, PUT, ... or "*"
    pattern: str  # regex searched in the request path
    kind: str  # "status:503", "cut" (drop the connection after part of the body), "delay:SECONDS"
    times: int = 1  # how many matching requests get it (-1: every one)
    hits: int = 0


@dataclass
class FaultProxy:
    """An HTTP proxy on loopback that forwards to ``upstream`` and breaks chosen requests."""

    upstream: str
    faults: list[Fault] = field(default_factory=list)
    log: list[tuple[str, str, int]] = field(default_factory=list)  # (method, path, status or -1 for a cut)

    def __post_init__(self) -> None:
        proxy = self
        host, port = self.upstream.split("://", 1)[1].split(":")

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().strip().split(b";")[0], 16)
                        chunk = self.rfile.read(size)
                        self.rfile.readline()
                        if size == 0:
                            return b"".join(chunks)
                        chunks.append(chunk)
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _forward(self) -> None:
                fault = proxy._match(self.command, self.path)
                if fault and fault.kind == "cut":
                    self.rfile.read(min(int(self.headers.get("Content-Length") or 0), 1024))
                    proxy.log.append((self.command, self.path, -1))
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                body = self._body()
                if fault and fault.kind.startswith("delay:"):
                    time.sleep(float(fault.kind.split(":", 1)[1]))
                if fault and fault.kind.startswith("status:"):
                    status = int(fault.kind.split(":", 1)[1])
                    payload = (b"<?xml version=\"1.0\"?><Error><Code>" + (b"SlowDown" if status == 503 else
                               b"InternalError") + b"</Code><Message>injected</Message></Error>")
                    self.send_response(status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    proxy.log.append((self.command, self.path, status))
                    return
                connection = http.client.HTTPConnection(host, int(port), timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("transfer-encoding",)}
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    headers["Content-Length"] = str(len(body))
                connection.request(self.command, self.path, body=body or None, headers=headers)
                response = connection.getresponse()
                data = response.read()
                self.send_response(response.status)
                for name, value in response.getheaders():
                    if name.lower() not in ("transfer-encoding", "content-length", "connection", "server", "date"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                connection.close()
                proxy.log.append((self.command, self.path, response.status))

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add(self, method: str, pattern: str, kind: str, times: int = 1) -> None:
        self.faults.append(Fault(method, pattern, kind, times))

    def _match(self, method: str, path: str) -> Fault | None:
        for fault in self.faults:
            if fault.method in ("*", method) and re.search(fault.pattern, path) and \
                    (fault.times < 0 or fault.hits < fault.times):
                fault.hits += 1
                return fault
        return None

    def injected(self) -> int:
        return sum(fault.hits for fault in self.faults)

    def stop(self) -> None:
        self.server.shutdown()
