"""One small HTTP layer on ``requests``: timeouts, retries with backoff and jitter, bearer auth.

Retries: connection errors, 429 and 5xx, with exponential backoff and full jitter, honouring
``Retry-After``. Auth: ``Authorization: Bearer <token>`` from a :class:`TokenProvider`; on 401
or 403 the token is refreshed once (one refresh for all threads that saw the same stale token)
and the call retried once. Each thread has its own :class:`requests.Session` (sessions are not
documented as thread-safe), so the layer is safe under concurrent use.
"""

from __future__ import annotations

import email.utils
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol

import requests
from requests.adapters import HTTPAdapter

from .errors import PennsieveHTTPError, safe_url

log = logging.getLogger("nwb2pennsieve.pennsieve.http")

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# No (complete) answer: refused, reset, timed out, or cut in the middle of the body.
_TRANSIENT = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)


class TokenProvider(Protocol):
    def token(self) -> str: ...
    def refresh(self, stale: str) -> str: ...


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` tries in all; the k-th wait is uniform in [0, min(max_delay, base_delay·2^k)]."""

    attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 20.0
    connect_timeout: float = 10.0
    read_timeout: float = 60.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(self.max_delay, max(0.0, retry_after))
        return random.uniform(0.0, min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def error_message(response: requests.Response) -> str:
    """The ``message`` of an API/API2 error body, else a short text."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200].strip()
    if isinstance(body, dict):
        return str(body.get("message") or body.get("type") or "")[:300]
    return ""


class SizedReader:
    """A file-like body of exactly ``size`` bytes: fails if the source is shorter or longer.

    ``__len__`` makes ``requests`` send ``Content-Length`` (S3 presigned PUTs refuse chunked
    uploads) while the bytes stream from the source.
    """

    def __init__(self, source: BinaryIO, size: int, name: str) -> None:
        self._source = source
        self._size = size
        self._name = name
        self.sent = 0

    def __len__(self) -> int:
        return self._size

    def read(self, n: int = -1) -> bytes:
        left = self._size - self.sent
        data = self._source.read(left if n is None or n < 0 else min(n, left)) if left > 0 else b""
        self.sent += len(data)
        if not data and self.sent < self._size:
            raise OSError(f"{self._name}: source ended after {self.sent} of {self._size} bytes")
        if self.sent == self._size and left > 0 and self._source.read(1):
            raise OSError(f"{self._name}: source is longer than its size {self._size}")
        return data

    def close(self) -> None:
        self._source.close()


_ENV_SETTINGS = ("http_proxy", "https_proxy", "all_proxy", "requests_ca_bundle", "curl_ca_bundle")


def _env_matters() -> bool:
    return any(os.environ.get(name) or os.environ.get(name.upper()) for name in _ENV_SETTINGS)


class HttpClient:
    """Thread-safe JSON/HTTP calls with retries and bearer auth."""

    def __init__(
        self,
        auth: TokenProvider | None = None,
        *,
        retry: RetryPolicy | None = None,
        pool_size: int = 16,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.auth = auth
        self.retry = retry or RetryPolicy()
        self._pool_size = pool_size
        self._sleep = sleep
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            # Reading proxies/CA bundles from the environment costs ~0.1 ms a request (a scan of
            # os.environ); skip it unless one is set. It also keeps ~/.netrc credentials away
            # from presigned URLs.
            session.trust_env = _env_matters()
            adapter = HTTPAdapter(pool_connections=4, pool_maxsize=self._pool_size, max_retries=0)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def release_thread_session(self) -> None:
        """Close the calling thread's session (worker threads call it before they end)."""
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is not None:
            self._local.session = None
            session.close()
            with self._lock:
                self._sessions.remove(session)

    def close(self) -> None:
        with self._lock:
            for s in self._sessions:
                s.close()
            self._sessions.clear()

    def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        authenticated: bool = True,
        retry_on: Collection[int] = RETRY_STATUSES,
        retry_connection_errors: bool = True,
    ) -> requests.Response:
        """Send one call; returns the final response (any status): callers map statuses to errors.

        Raises :class:`PennsieveHTTPError` only when no answer came after every attempt, or when
        the last answer was still a retryable status.
        """
        attempts = self.retry.attempts
        refreshed = False
        attempt = 0
        while True:
            attempt += 1
            headers = {"Accept": "application/json"}
            token = None
            if authenticated and self.auth is not None:
                token = self.auth.token()
                headers["Authorization"] = f"Bearer {token}"
            try:
                response = self._session().request(
                    method,
                    url,
                    params=params,
                    json=json,
                    headers=headers,
                    timeout=(self.retry.connect_timeout, self.retry.read_timeout),
                )
            except _TRANSIENT as exc:
                if not retry_connection_errors or attempt >= attempts:
                    raise PennsieveHTTPError(method, url, None, type(exc).__name__) from None
                delay = self.retry.delay(attempt)
                log.info("%s %s: %s, retry %d in %.2fs", method, safe_url(url), type(exc).__name__, attempt, delay)
                self._sleep(delay)
                continue
            status = response.status_code
            if status in (401, 403) and token is not None and not refreshed and self.auth is not None:
                refreshed = True
                attempt -= 1  # the refresh retry is extra, not one of the backoff attempts
                _ = response.content  # read it: the connection goes back to the pool
                log.info("%s %s: HTTP %d, refreshing the token once", method, safe_url(url), status)
                self.auth.refresh(token)
                continue
            if status in retry_on:
                if attempt >= attempts:
                    raise PennsieveHTTPError(method, url, status, error_message(response))
                _ = response.content
                delay = self.retry.delay(attempt, parse_retry_after(response.headers.get("Retry-After")))
                log.info("%s %s: HTTP %d, retry %d in %.2fs", method, safe_url(url), status, attempt, delay)
                self._sleep(delay)
                continue
            return response

    def put_stream(self, url: str, open_body: Callable[[], SizedReader]) -> requests.Response:
        """PUT a body to a presigned URL (no bearer header), retrying like :meth:`request`.

        ``open_body`` is called once per attempt (a stream cannot be rewound).
        """
        attempt = 0
        while True:
            attempt += 1
            body = open_body()
            try:
                response = self._session().put(
                    url,
                    data=body,
                    headers={"Content-Type": "application/octet-stream"},
                    timeout=(self.retry.connect_timeout, self.retry.read_timeout),
                )
            except _TRANSIENT as exc:
                if attempt >= self.retry.attempts:
                    raise PennsieveHTTPError("PUT", url, None, type(exc).__name__) from None
                self._sleep(self.retry.delay(attempt))
                continue
            finally:
                body.close()
            if response.status_code in RETRY_STATUSES and attempt < self.retry.attempts:
                _ = response.content
                self._sleep(self.retry.delay(attempt, parse_retry_after(response.headers.get("Retry-After"))))
                continue
            return response
