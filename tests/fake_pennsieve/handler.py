"""The fake Pennsieve's HTTP side: injected faults, the error and reply types of its routes, and
the request handler (routing, bearer auth, body limits, fault injection, API/API2 error shapes)."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qs, urlsplit

from .assets import RANGES_MAX_BODY

if TYPE_CHECKING:
    from .server import FakePennsieve


@dataclass
class Fault:
    """Injected on requests matching ``method`` and the ``path`` regex: after ``skip`` matches,
    the next ``times`` matches get the fault.

    - ``status``: answer ``status`` (with ``Retry-After`` if given). ``phase="after"`` does the
      work first, then answers the error (the client cannot know it succeeded).
    - ``drop``: read the request, then close the connection without an answer (``phase`` as above).
    - ``delay``: sleep ``delay`` seconds, then answer normally.
    - ``expire_tokens``: expire every token seen so far, then handle the request (it gets a 401).
    """

    action: Literal["status", "drop", "delay", "expire_tokens"]
    method: str = "*"
    path: str = ".*"
    status: int = 503
    retry_after: str | None = None
    delay: float = 0.0
    skip: int = 0
    times: int = 1
    phase: Literal["before", "after"] = "before"
    extra: dict[str, Any] | None = None  # more fields of the error body (an API2 ``invalid_chunks``)
    matched: int = 0
    fired: int = 0

    def take(self, method: str, path: str) -> bool:
        if self.method not in ("*", method) or not re.search(self.path, path):
            return False
        self.matched += 1
        if self.matched <= self.skip or self.fired >= self.times:
            return False
        self.fired += 1
        return True


class ApiError(Exception):
    def __init__(self, status: int, message: str, api2: bool = False, extra: dict[str, Any] | None = None) -> None:
        self.status = status
        self.message = message
        self.api2 = api2
        self.extra = extra or {}


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    raw: bytes | None = None


Route = tuple[str, "re.Pattern[str]", bool, bool, Any]  # method, path, API2?, authed?, handler


def handler_class(fake: FakePennsieve) -> type[BaseHTTPRequestHandler]:
    """The request handler of ``fake``'s server: routing, auth, faults, bodies, error shapes."""
    return type("Handler", (FakeHandler,), {"fake": fake, "routes": fake._routes()})


class FakeHandler(BaseHTTPRequestHandler):
    """One request to the fake; :func:`handler_class` binds ``fake`` and its ``routes``."""

    fake: FakePennsieve
    routes: list[Route]
    protocol_version = "HTTP/1.1"
    # Headers and body are separate writes: with Nagle on, the body waits for the client's
    # delayed ACK (~40 ms a request), a cost of this server, not of Pennsieve.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send(
        self, status: int, payload: bytes, content_type: str = "application/json", headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
        with self.fake.lock:
            self.fake.statuses[status] += 1

    def _error(
        self,
        status: int,
        message: str,
        api2: bool,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        body = (
            {"message": message, **(extra or {})}
            if api2
            else {"type": _ERROR_TYPES.get(status, "Error"), "message": message, "code": status}
        )
        self._send(status, json.dumps(body).encode(), headers=headers)

    def _drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _read_body(self, api2: bool, is_s3: bool, limit: int) -> bytes | None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self.close_connection = True
            self._error(411 if is_s3 else 400, "MissingContentLength", api2)
            return None
        length = int(self.headers.get("Content-Length") or 0)
        if length > limit and not is_s3:
            self.close_connection = True
            self._error(413, "Request Entity Too Large", api2)
            return None
        data = self.rfile.read(length) if length else b""
        if len(data) != length:
            self.close_connection = True
            return None
        return data

    def _faults_before(self, method: str, path: str, api2: bool) -> list[Fault] | None:
        """Fire the faults matching this request: the ones to apply after the work, or None when a
        fault already answered (or dropped) it."""
        with self.fake.lock:
            fired = [f for f in self.fake.faults if f.take(method, path)]
        after: list[Fault] = []
        for f in fired:
            if f.action == "delay":
                time.sleep(f.delay)
            elif f.action == "expire_tokens":
                self.fake.expire_tokens()
            elif f.phase == "after":
                after.append(f)
            elif f.action == "drop":
                self._drop()
                return None
            else:
                headers = {"Retry-After": f.retry_after} if f.retry_after else None
                self._error(f.status, "injected fault", api2, headers, extra=f.extra)
                return None
        return after

    def _work(self, route: Route, match: re.Match[str], query: dict[str, str], raw: bytes, is_s3: bool) -> Reply:
        """The route's handler on the request (auth checked, the body parsed); raises ApiError."""
        _, _, api2, authed, handler = route
        if is_s3 and self.headers.get("Authorization"):
            with self.fake.lock:
                self.fake.auth_headers_on_put += 1
            raise ApiError(400, "Only one auth mechanism allowed", True)
        if authed:
            self.fake._check_token(self.headers.get("Authorization"), api2)
        body: Any = raw if is_s3 else None
        if raw and not is_s3:
            try:
                body = json.loads(raw)
            except ValueError:
                raise ApiError(400, "body is not JSON", api2) from None
        with self.fake.lock:
            reply: Reply = handler(query, body, *match.groups())
        return reply

    def _handle(self, method: str) -> None:
        parts = urlsplit(self.path)
        path, query = parts.path, {k: v[0] for k, v in parse_qs(parts.query).items()}
        if self.fake.latency:
            time.sleep(self.fake.latency)
        found = next(((r, m) for r in self.routes if r[0] == method and (m := r[1].match(path)) is not None), None)
        if found is None:
            self._error(404, f"no route {method} {path}", False)
            return
        route, match = found
        api2, is_s3 = route[2], path.startswith("/s3/")
        with self.fake.lock:
            self.fake.requests[f"{method} {route[1].pattern}"] += 1
        raw = self._read_body(api2, is_s3, RANGES_MAX_BODY if "ranges" in route[1].pattern else self.fake.max_body)
        after = self._faults_before(method, path, api2) if raw is not None else None
        if raw is None or after is None:
            return
        try:
            reply = self._work(route, match, query, raw, is_s3)
        except ApiError as exc:
            self._error(exc.status, exc.message, api2, extra=exc.extra)
            return
        except (ValueError, KeyError, TypeError) as exc:
            self._error(400, f"bad request: {type(exc).__name__}", api2)
            return
        for f in after:
            if f.action == "drop":
                self._drop()
            else:
                self._error(f.status, "injected fault after the work was done", api2)
            return
        self._send(reply.status, reply.raw if reply.raw is not None else json.dumps(reply.body).encode())

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_DELETE(self) -> None:
        self._handle("DELETE")


_ERROR_TYPES = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 423: "Locked"}
