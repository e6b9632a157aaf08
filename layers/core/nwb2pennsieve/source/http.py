"""An ``http(s)://`` URL read in place: a seekable file made of ``Range`` requests.

Follows a redirect once (a DANDI asset URL lands on a signed S3 URL) and goes back through the
given URL when a signed URL expires; refuses a server without ``Range`` support without reading
the body; pins the version it reads (a strong ETag, else Last-Modified, and the size: the plan's
when it is given) and fails when another answers.

Network faults are retried here, around the request **and** its body (a dropped connection, a
reset, a stalled or short body, 408/429/5xx), with back-off, at most :attr:`NetworkPolicy.tries`
times per range and never longer than :attr:`NetworkPolicy.budget_s` without a range read: then
one :class:`~nwb2pennsieve.errors.NetworkError` names the host and the cause. A host name that
does not resolve, a TLS failure and 4xx answers are not retried. urllib3 retries nothing itself
(it would log a line per retry).
"""

from __future__ import annotations

import logging
import random
import re
import time
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from ..errors import InvalidInputError, NetworkError, StorageError
from .identity import InputChangedError, SourceIdentity, check_same, strong_etag
from .ranges import BLOCK_BYTES, CACHE_BLOCKS, RangeReader, ReadStats

if TYPE_CHECKING:
    import requests

log = logging.getLogger(__name__)
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class NetworkPolicy(BaseModel):
    """How long a URL input may take to answer: per request, and without any range read at all."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    connect_timeout_s: float = 5.0
    read_timeout_s: float = 15.0  # seconds without a byte of an answer
    tries: int = 5  # per range
    budget_s: float = 60.0  # seconds without a range read before giving up


def url_name(url: str) -> str:
    """What messages call a URL: without its query (a signed URL's signature is a credential) or
    user info."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def http_session(*, pool: int = 16) -> requests.Session:
    """A session that retries nothing itself (the reader does, around the body too)."""
    import requests
    from requests.adapters import HTTPAdapter

    session = requests.Session()
    adapter = HTTPAdapter(max_retries=0, pool_connections=pool, pool_maxsize=pool)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _cause(exc: BaseException) -> tuple[str, bool]:
    """(what failed, in words; whether it is worth retrying) for a request's exception."""
    import requests

    text = repr(exc)
    if "NameResolutionError" in text or "Name or service not known" in text or "getaddrinfo" in text:
        return "its host name does not resolve", False
    if isinstance(exc, requests.exceptions.SSLError):
        return "the TLS connection failed", False
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "the connection timed out", True
    if isinstance(exc, requests.exceptions.ReadTimeout | TimeoutError):
        return "the server stopped sending", True
    if "refused" in text.lower():
        return "the server refused the connection", True
    if isinstance(exc, requests.exceptions.ChunkedEncodingError) or "IncompleteRead" in text:
        return "the answer was cut short", True
    return "the connection was dropped", True


class _Retry(Exception):
    """A transient fault of one try: retried while tries and the budget last."""

    def __init__(self, cause: str) -> None:
        self.cause = cause
        super().__init__(cause)


class HTTPRangeReader(RangeReader):
    """An ``http(s)://`` URL as a seekable binary file, made of ``Range`` requests.

    The first request (the file's first block, which h5py reads first anyway) follows redirects
    and learns the size from ``Content-Range`` and the version (ETag, Last-Modified); with
    ``expect`` (the planned version) another version raises
    :class:`~nwb2pennsieve.source.identity.InputChangedError`. Later requests go straight to where
    it landed, carry ``If-Match`` (or ``If-Unmodified-Since``) and are checked the same way.
    """

    def __init__(
        self,
        url: str,
        *,
        name: str | None = None,
        session: requests.Session | None = None,
        stats: ReadStats | None = None,
        block_bytes: int = BLOCK_BYTES,
        cache_blocks: int = CACHE_BLOCKS,
        expect: SourceIdentity | None = None,
        policy: NetworkPolicy | None = None,
    ) -> None:
        super().__init__(stats=stats, block_bytes=block_bytes, cache_blocks=cache_blocks)
        self.url = url
        self._name = name or url_name(url)
        self._own_session = session is None
        self.session = session or http_session()
        self.policy = policy or NetworkPolicy()
        self.expect = expect
        self.failure: NetworkError | None = None  # the last network failure (h5py hides it as damage)
        self.size = 0
        self._target = url
        self._failing_since: float | None = None
        try:
            self._resolve()
        except BaseException:
            self.close()
            raise

    @property
    def uri(self) -> str:
        return self._name

    @property
    def etag(self) -> str | None:
        return self.identity.etag

    def close(self) -> None:
        if self._own_session:
            self.session.close()
        super().close()

    # --- one range, with retries --------------------------------------------------------------

    def _conditions(self) -> dict[str, str]:
        known = getattr(self, "identity", None) or self.expect
        if known is None:
            return {}
        if known.etag:
            return {"If-Match": known.etag}
        if known.last_modified:
            return {"If-Unmodified-Since": known.last_modified}
        return {}

    def _ranged(self, url: str, start: int, stop: int) -> tuple[requests.Response, bytes]:
        """(answer, body) of one range, retried on transient faults (the body read included)."""
        if self.failure is not None:  # given up already: h5py may ask again and again, for nothing
            raise self.failure
        tries = 0
        began = time.monotonic()
        while True:
            tries += 1
            try:
                answer = self._try(url, start, stop)
                self._failing_since = None
                return answer
            except _Retry as fault:
                # The budget counts the time the reader has been failing without a range read since.
                now = time.monotonic()
                self._failing_since = self._failing_since or now
                waited = now - self._failing_since
                if tries >= self.policy.tries or waited >= self.policy.budget_s:
                    raise self._give_up(fault.cause, tries, time.monotonic() - began) from None
                pause = min(4.0, 0.25 * 2 ** (tries - 1)) * random.uniform(0.5, 1.0)
                log.debug("%s: %s; try %d again in %.2f s", self.uri, fault.cause, tries + 1, pause)
                time.sleep(min(pause, max(0.0, self.policy.budget_s - waited)))

    def _try(self, url: str, start: int, stop: int) -> tuple[requests.Response, bytes]:
        import requests

        headers = {"Range": f"bytes={start}-{stop - 1}", **self._conditions()}
        timeout = (self.policy.connect_timeout_s, self.policy.read_timeout_s)
        try:
            response = self.session.get(url, headers=headers, stream=True, timeout=timeout, allow_redirects=True)
        except requests.RequestException as exc:
            cause, transient = _cause(exc)
            if not transient:
                raise self._give_up(cause, 1, 0.0) from None
            raise _Retry(cause) from None
        if response.status_code in _TRANSIENT_STATUS:
            response.close()
            raise _Retry(f"the server answered HTTP {response.status_code}")
        if response.status_code != 206:
            return response, b""
        try:
            body = response.content
        except (requests.RequestException, OSError) as exc:
            raise _Retry(_cause(exc)[0]) from None
        if len(body) != int(response.headers.get("Content-Length", len(body))):
            raise _Retry("the answer was cut short")
        return response, body

    def _give_up(self, cause: str, tries: int, seconds: float) -> NetworkError:
        from urllib.parse import urlsplit

        parts = urlsplit(self._target)
        host = f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)
        tried = f" ({tries} tries in {seconds:.0f} s)" if tries > 1 else ""
        self.failure = NetworkError(f"the network failed: {host}: {cause}{tried}", file=self.uri)
        return self.failure

    # --- answers ------------------------------------------------------------------------------

    def _refuse(self, response: requests.Response) -> None:
        """Raise the error an unexpected answer means (the body is never read)."""
        status = response.status_code
        response.close()
        if status == 412:
            raise InputChangedError(
                "the file changed while it was being converted (the server says it is no longer the version "
                "planned); nothing was published",
                file=self.uri,
            )
        if status == 200:
            raise InvalidInputError(
                "the server does not support ranged requests (it answered a Range request with the whole file), "
                "so the file cannot be read in place; download it and convert the local copy",
                file=self.uri,
            )
        if status == 404:
            raise InvalidInputError("not found (HTTP 404)", file=self.uri)
        if status in (401, 403):
            raise InvalidInputError(f"access denied (HTTP {status})", file=self.uri)
        raise StorageError(f"the server answered HTTP {status} {response.reason or ''}".strip(), file=self.uri)

    def _version(self, response: requests.Response, size: int) -> SourceIdentity:
        etag = strong_etag(response.headers.get("ETag"))
        return SourceIdentity(size=size, etag=etag, last_modified=response.headers.get("Last-Modified"))

    def _resolve(self) -> None:
        """Request the first block from the given URL: learn the size, the version and where it lands."""
        response, body = self._ranged(self.url, 0, self._block)
        if response.status_code == 416:  # no byte 0: an empty file
            response.close()
            raise InvalidInputError("the file is empty (0 bytes)", file=self.uri)
        if response.status_code != 206:
            self._refuse(response)
        match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
        if not match or match.group(3) == "*" or int(match.group(1)) != 0:
            response.close()
            raise InvalidInputError("the server's range answer has no usable Content-Range header", file=self.uri)
        version = self._version(response, int(match.group(3)))
        check_same(getattr(self, "identity", None) or self.expect, version, self.uri)
        self.identity = version
        self.size = version.size
        self._target = response.url or self.url
        self.stats.add(len(body))
        self.keep(0, body)

    def get(self, start: int, stop: int) -> bytes:
        response, body = self._ranged(self._target, start, stop)
        if response.status_code in (401, 403, 410) and self._target != self.url:
            response.close()  # a signed URL that expired: follow the given URL again
            self._resolve()
            response, body = self._ranged(self._target, start, stop)
        if response.status_code != 206:
            self._refuse(response)
        match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
        if not match or int(match.group(1)) != start:
            response.close()
            raise StorageError(f"the server answered bytes {start}-{stop - 1} with another range", file=self.uri)
        total = self.size if match.group(3) == "*" else int(match.group(3))
        check_same(self.identity, self._version(response, total), self.uri)
        return body
