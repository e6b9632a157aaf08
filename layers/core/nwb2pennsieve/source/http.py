"""An ``http(s)://`` URL read in place: a seekable file made of ``Range`` requests.

Retries connection errors and 429/5xx answers with back-off (GET and HEAD only); follows a
redirect once (a DANDI asset URL lands on a signed S3 URL) and goes back through the given URL
when a signed URL expires; refuses a server without ``Range`` support without reading the body;
fails when the ETag changes while the file is read.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from ..errors import InvalidInputError, StorageError
from .ranges import BLOCK_BYTES, CACHE_BLOCKS, RangeReader, ReadStats

if TYPE_CHECKING:
    import requests

RETRIES = 5  # connection errors and 429/5xx answers, with exponential back-off
TIMEOUT = (10.0, 60.0)  # seconds to connect, seconds between bytes
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


def url_name(url: str) -> str:
    """What messages call a URL: without its query (a signed URL's signature is a credential) or
    user info."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def http_session(*, retries: int = RETRIES, pool: int = 16) -> requests.Session:
    """A session that retries connection errors and 429/5xx answers (GET and HEAD only)."""
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    retry = Retry(
        total=retries,
        backoff_factor=0.5,
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=frozenset({"GET", "HEAD"}),
        raise_on_status=False,
        respect_retry_after_header=True,
    )
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry, pool_connections=pool, pool_maxsize=pool)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


class HTTPRangeReader(RangeReader):
    """An ``http(s)://`` URL as a seekable binary file, made of ``Range`` requests.

    The first request (the file's first block, which h5py reads first anyway) follows redirects
    (a DANDI asset URL redirects to a signed S3 URL) and learns the size from ``Content-Range``;
    later requests go straight to where it landed, and back through the given URL when a signed
    URL has expired. A server that answers a range request with the whole file (no ``Range``
    support) is refused without reading the body: nothing is downloaded. A file whose ETag
    changes while it is read fails loudly instead of mixing two files' bytes.
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
    ) -> None:
        super().__init__(stats=stats, block_bytes=block_bytes, cache_blocks=cache_blocks)
        self.url = url
        self._name = name or url_name(url)
        self._own_session = session is None
        self.session = session or http_session()
        self.etag: str | None = None
        self.size = 0
        self._target = url
        try:
            self._resolve()
        except BaseException:
            self.close()
            raise

    @property
    def uri(self) -> str:
        return self._name

    def close(self) -> None:
        if self._own_session:
            self.session.close()
        super().close()

    def _request(self, url: str, start: int, stop: int) -> requests.Response:
        import requests

        try:
            return self.session.get(
                url, headers={"Range": f"bytes={start}-{stop - 1}"}, stream=True, timeout=TIMEOUT, allow_redirects=True
            )
        except requests.RequestException as exc:
            raise StorageError(f"cannot read the URL ({type(exc).__name__}: {exc})", file=self.uri) from None

    def _refuse(self, response: requests.Response) -> None:
        """Raise the error an unexpected answer means (the body is never read)."""
        status = response.status_code
        response.close()
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

    def _resolve(self) -> None:
        """Request the first block from the given URL: learn the size, the ETag and where it lands."""
        response = self._request(self.url, 0, self._block)
        if response.status_code == 416:  # no byte 0: an empty file
            response.close()
            raise InvalidInputError("the file is empty (0 bytes)", file=self.uri)
        if response.status_code != 206:
            self._refuse(response)
        match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
        if not match or match.group(3) == "*" or int(match.group(1)) != 0:
            response.close()
            raise InvalidInputError("the server's range answer has no usable Content-Range header", file=self.uri)
        etag = response.headers.get("ETag")
        if self.etag is not None and etag != self.etag:
            response.close()
            raise InvalidInputError("the file changed while it was being read", file=self.uri)
        self.etag = etag
        self.size = int(match.group(3))
        self._target = response.url or self.url
        body = response.content
        self.stats.add(len(body))
        self.keep(0, body)

    def get(self, start: int, stop: int) -> bytes:
        response = self._request(self._target, start, stop)
        if response.status_code in (401, 403, 410) and self._target != self.url:
            response.close()  # a signed URL that expired: follow the given URL again
            self._resolve()
            response = self._request(self._target, start, stop)
        if response.status_code != 206:
            self._refuse(response)
        match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
        if not match or int(match.group(1)) != start:
            response.close()
            raise StorageError(f"the server answered bytes {start}-{stop - 1} with another range", file=self.uri)
        if self.etag is not None and response.headers.get("ETag") != self.etag:
            response.close()
            raise InvalidInputError("the file changed while it was being read", file=self.uri)
        return bytes(response.content)
