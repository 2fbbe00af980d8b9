"""FakeHubServer: a real HTTP server on 127.0.0.1 standing in for huggingface.co (out of reach
in tests). It serves files under Hugging Face's URL layout with Range support, and can
misbehave on demand: drop the connection mid-body, answer an error status, ignore Range,
or redirect to a second server (the CDN of the real thing)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

_BLOCK = 1 << 16


@dataclass
class SeenRequest:
    path: str
    range: str | None
    authorization: str | None


@dataclass
class FakeHubServer:
    """Files by URL path (bytes, or a Path read on demand) and the misbehaviour switches."""

    files: dict[str, bytes | Path] = field(default_factory=dict)
    seen: list[SeenRequest] = field(default_factory=list)
    drop_after: int | None = None  # close the socket after this many body bytes, once
    fail_status: int | None = None  # answer every request with this status while set
    ignore_range: bool = False  # answer 200 with the whole file even to a Range request
    redirect_to: str | None = None  # 302 every request to this base URL, same path
    block_delay_s: float = 0.0  # a slow link: sleep this long after each 64 KiB block
    url: str = ""

    def add(self, path: str, content: bytes | Path) -> str:
        """Serve `content` at `path`; returns its full URL."""
        self.files[path] = content
        return self.url + path

    def ranges(self) -> list[str]:
        return [r.range for r in self.seen if r.range]


def _size(content: bytes | Path) -> int:
    return len(content) if isinstance(content, bytes) else content.stat().st_size


def _read(content: bytes | Path, start: int, end: int) -> Iterator[bytes]:
    """Bytes start..end-1, in blocks."""
    if isinstance(content, bytes):
        for offset in range(start, end, _BLOCK):
            yield content[offset : min(offset + _BLOCK, end)]
        return
    with content.open("rb") as fh:
        fh.seek(start)
        left = end - start
        while left > 0:
            block = fh.read(min(_BLOCK, left))
            if not block:
                return
            left -= len(block)
            yield block


def _handler(hub: FakeHubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # quiet test output
            pass

        def do_GET(self) -> None:
            hub.seen.append(
                SeenRequest(self.path, self.headers.get("Range"), self.headers.get("Authorization"))
            )
            if hub.redirect_to:
                self._empty(302, {"Location": hub.redirect_to + self.path})
                return
            if hub.fail_status is not None:
                self._empty(hub.fail_status)
                return
            content = hub.files.get(self.path)
            if content is None:
                self._empty(404)
                return
            size = _size(content)
            start = 0
            wanted = self.headers.get("Range")
            if wanted and not hub.ignore_range:
                start = int(wanted.removeprefix("bytes=").split("-")[0])
                if start >= size:
                    self._empty(416, {"Content-Range": f"bytes */{size}"})
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(size - start))
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            # The client may hang up before the body (it refuses it, e.g. for disk space).
            with contextlib.suppress(ConnectionError):
                self._body(content, start, size)

        def _body(self, content: bytes | Path, start: int, end: int) -> None:
            sent = 0
            for block in _read(content, start, end):
                if hub.drop_after is not None and sent + len(block) >= hub.drop_after:
                    self.wfile.write(block[: hub.drop_after - sent])
                    self.wfile.flush()
                    hub.drop_after = None  # once: the next attempt gets the rest
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                self.wfile.write(block)
                sent += len(block)
                if hub.block_delay_s:
                    time.sleep(hub.block_delay_s)

        def _empty(self, status: int, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

    return Handler


@contextmanager
def fake_hub() -> Iterator[FakeHubServer]:
    hub = FakeHubServer()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    server.daemon_threads = True
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def hub() -> Iterator[FakeHubServer]:
    with fake_hub() as server:
        yield server


def random_bytes(size: int, seed: int = 7) -> bytes:
    """Reproducible bytes with no structure, so a misplaced block changes the hash."""
    return random.Random(seed).randbytes(size)


def sha256_of(data: bytes | Path) -> str:
    if isinstance(data, bytes):
        return hashlib.sha256(data).hexdigest()
    digest = hashlib.sha256()
    with data.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def files_under(folder: Path) -> list[str]:
    """Every file below `folder`, relative, sorted."""
    if not folder.exists():
        return []
    return sorted(
        os.path.relpath(os.path.join(root, name), folder)
        for root, _, names in os.walk(folder)
        for name in names
    )
