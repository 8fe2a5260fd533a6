"""ShardDataset over plain http(s): brace-expanded URLs, a dataset folder URL, rank/worker splitting,
and a connection that drops mid-shard (resumed with a Range request). The server is a loopback static
file server started here."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from voxforge.loaders import open_dataset
from voxforge.loaders.remote import expand_braces

torch = pytest.importorskip("torch")
from voxforge.loaders.torch import ShardDataset  # noqa: E402


class StaticServer:
    """Serves a folder with byte ranges; ``drop[path] = n`` cuts the next full response after n bytes."""

    def __init__(self, root: Path) -> None:
        self.root, self.drop, self.log = root, {}, []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                server.log.append((self.path, self.headers.get("Range")))
                path = (server.root / self.path.lstrip("/")).resolve()
                if not path.is_relative_to(server.root) or not path.is_file():
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data, start = path.read_bytes(), 0
                wanted = self.headers.get("Range")
                if wanted:
                    start = int(wanted.split("=")[1].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                cut = server.drop.pop(self.path, None)
                if cut is not None and not wanted:
                    self.wfile.write(data[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(data[start:])

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> "StaticServer":
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_brace_expansion():
    assert expand_braces("s-{000..002}.tar") == ["s-000.tar", "s-001.tar", "s-002.tar"]
    assert expand_braces("{train,val}/s-{8..10}.tar") == ["train/s-8.tar", "train/s-9.tar", "train/s-10.tar",
                                                          "val/s-8.tar", "val/s-9.tar", "val/s-10.tar"]
    assert expand_braces("plain.tar") == ["plain.tar"]


@pytest.mark.slow
def test_http_shards_stream_like_local_ones(split_dataset, monkeypatch):
    local = {s["id"]: s for s in open_dataset(split_dataset, "train")}
    with StaticServer(split_dataset.resolve()) as server:
        remote = ShardDataset(server.url + "/train/shard-{000000..000004}.tar")
        assert len(remote.shards) == 5
        samples = list(remote)
        assert [s["id"] for s in samples] == list(local)
        for sample in samples:
            assert np.array_equal(sample["images"], local[sample["id"]]["images"])
            assert np.array_equal(sample["voxels"], local[sample["id"]]["voxels"])

        # a dataset folder URL: dataset.json lists each split's shards
        assert [s["id"] for s in ShardDataset(server.url + "/", split="val")] == \
            [s["id"] for s in open_dataset(split_dataset, "val")]

        # the connection drops 3000 bytes into a shard: the read resumes where it broke
        server.drop["/train/shard-000001.tar"] = 3000
        again = [s["id"] for s in ShardDataset(server.url + "/train/shard-000001.tar")]
        assert again == [s["id"] for s in samples[2:4]]
        assert ("/train/shard-000001.tar", "bytes=3000-") in server.log

        with pytest.raises(FileNotFoundError, match="404"):
            list(ShardDataset(server.url + "/train/shard-000099.tar"))

        seen = []  # 2 ranks x 2 DataLoader workers over URLs: every sample exactly once
        for rank in range(2):
            monkeypatch.setenv("RANK", str(rank))
            monkeypatch.setenv("WORLD_SIZE", "2")
            loader = torch.utils.data.DataLoader(ShardDataset(server.url + "/", split="train"), batch_size=None,
                                                 num_workers=2)
            seen += [sample["id"] for sample in loader]
        assert sorted(seen) == sorted(local)

