"""A ranged HTTP server on 127.0.0.1 whose content, validators and faults a test controls.

It serves ``body`` at any path with ``Range`` support; ``etag`` ("strong", "weak" or None) and
``last_modified`` say which validators it sends; :meth:`replace` gives it new content (a new ETag
and a newer Last-Modified). ``fault(n, start, stop)`` chooses, per request (``n`` counts from 1),
what goes wrong: ``"drop"`` (the connection closed before any answer), ``"drop-body"`` (half the
body, then closed), ``"short"`` (a Content-Length larger than the body sent), ``"stall"`` (half the
body, then silence), ``"hang"`` (no answer at all), ``"status:NNN"``; None answers normally.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Fault = Callable[[int, int, int], str | None]


class FaultServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, body: bytes, *, etag: str | None = "strong", last_modified: bool = True) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.body = body
        self.etag = etag
        self.last_modified = last_modified
        self.version = 1
        self.mtime = time.time() - 3600
        self.fault: Fault | None = None
        self.stall_s = 30.0
        self.requests = 0
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)

    def __enter__(self) -> FaultServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()

    def handle_error(self, request: Any, client_address: Any) -> None:  # a client that hung up: not news
        pass

    def url(self, name: str = "rec.nwb") -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{name}"

    def replace(self, body: bytes) -> None:
        """New content: a new ETag and a newer Last-Modified."""
        with self.lock:
            self.body = body
            self.version += 1
            self.mtime += 60

    def headers(self) -> dict[str, str]:
        out = {}
        if self.etag:
            out["ETag"] = f'{"W/" if self.etag == "weak" else ""}"v{self.version}"'
        if self.last_modified:
            out["Last-Modified"] = formatdate(self.mtime, usegmt=True)
        return out


class _Handler(BaseHTTPRequestHandler):
    server: FaultServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _close(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def do_GET(self) -> None:
        server = self.server
        with server.lock:
            server.requests += 1
            n, body, validators = server.requests, server.body, server.headers()
        start, _, stop_text = self.headers.get("Range", "bytes=0-").removeprefix("bytes=").partition("-")
        start, stop = int(start), min(len(body), int(stop_text) + 1 if stop_text else len(body))
        what = server.fault(n, start, stop) if server.fault else None
        if what == "hang":
            time.sleep(server.stall_s)
            return self._close()
        if what == "drop":
            return self._close()
        if what and what.startswith("status:"):
            self.send_response(int(what[7:]))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        if start >= len(body):
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(body)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        self.send_response(206)
        for key, value in validators.items():
            self.send_header(key, value)
        self.send_header("Content-Range", f"bytes {start}-{stop - 1}/{len(body)}")
        self.send_header("Content-Length", str(stop - start))
        self.end_headers()
        data = body[start:stop]
        try:
            if what in ("drop-body", "short", "stall"):
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                if what == "stall":
                    time.sleep(server.stall_s)
                return self._close()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return None
