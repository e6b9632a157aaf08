"""Where an input file is: a local path, an ``http(s)://`` URL or an ``s3://bucket/key`` object.

A URL or an S3 object is read in place with ranged requests (a
:class:`~nwb2pennsieve.source.ranges.RangeReader`), never downloaded: planning reads the file's
metadata, and each work item reads its series' stored chunks by their byte ranges (the cloud's
direct chunk reader). :class:`InputSource` is small and picklable, so each worker of the local
pool opens the input itself (:func:`open_input`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, Literal, cast
from urllib.parse import urlsplit, urlunsplit

import h5py
from pydantic import BaseModel, ConfigDict

from ..bundle.series import item_rows
from ..errors import InvalidInputError, StorageError
from ..plan.models import ItemResult, Plan, WorkItem
from ..write.execute import execute_item
from .nwb import open_nwb
from .ranges import BLOCK_BYTES, CACHE_BLOCKS, RangeReader, ReadStats
from .slabs import ClosedOnExit, H5SlabReader, SlabReader

if TYPE_CHECKING:
    import requests

    from ..output.storage import Store

# Over a range reader h5py's chunk cache holds metadata only: the work items' data is read by
# byte range (the direct chunk reader), not through h5py.
REMOTE_H5_CACHE_BYTES = 4 * 1024 * 1024
RETRIES = 5  # connection errors and 429/5xx answers, with exponential back-off
TIMEOUT = (10.0, 60.0)  # seconds to connect, seconds between bytes
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


class InputSource(BaseModel):
    """An input file: ``kind`` says how ``location`` (a path or a URL) is read."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["file", "http", "s3"]
    location: str

    @classmethod
    def parse(cls, value: str | os.PathLike[str] | InputSource) -> InputSource:
        """``http(s)://...`` and ``s3://bucket/key`` are URLs; anything else is a local path."""
        if isinstance(value, InputSource):
            return value
        text = os.fspath(value)
        scheme = text.split("://", 1)[0].lower() if "://" in text else ""
        if scheme in ("http", "https"):
            return cls(kind="http", location=text)
        if scheme == "s3":
            bucket, _, key = text[len("s3://") :].partition("/")
            if not bucket or not key:
                raise InvalidInputError("an S3 input is s3://bucket/key", file=text)
            return cls(kind="s3", location=text)
        if scheme:
            raise InvalidInputError(f"{scheme}:// inputs are not supported (a path, http(s):// or s3://)", file=text)
        return cls(kind="file", location=text)

    @property
    def name(self) -> str:
        """What messages and the plan call the file: the base name of a path, else the URL
        without its query (a signed URL's signature is a credential) or user info."""
        if self.kind == "file":
            return os.path.basename(self.location) or self.location
        if self.kind == "s3":
            return self.location
        parts = urlsplit(self.location)
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))

    @property
    def stem(self) -> str:
        """The file name without ``.nwb`` (the last path segment of a URL)."""
        path = self.location if self.kind == "file" else urlsplit(self.location).path
        last = [p for p in path.replace(os.sep, "/").split("/") if p]
        base = last[-1] if last else "input"
        return base[: -len(".nwb")] if base.lower().endswith(".nwb") else base

    def s3_location(self) -> tuple[str, str]:
        bucket, _, key = self.location[len("s3://") :].partition("/")
        return bucket, key


# --- HTTP ----------------------------------------------------------------------------------------


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
        self._name = name or InputSource(kind="http", location=url).name
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


# --- opening any input ---------------------------------------------------------------------------


def _s3_client() -> object:
    import boto3

    # The default chain: credentials, region and AWS_ENDPOINT_URL from the environment.
    return boto3.client("s3")


def range_reader(source: InputSource, *, stats: ReadStats | None = None) -> RangeReader | None:
    """The range reader of a URL or S3 input (None for a local file)."""
    if source.kind == "http":
        return HTTPRangeReader(source.location, name=source.name, stats=stats)
    if source.kind == "s3":
        from .s3 import S3RangeReader

        bucket, key = source.s3_location()
        reader = S3RangeReader(_s3_client(), bucket, key, stats=stats)  # type: ignore[arg-type]
        if reader.size == 0:
            raise InvalidInputError("the file is empty (0 bytes)", file=source.name)
        return reader
    return None


@dataclass
class OpenedInput(ClosedOnExit):
    """An open input: the HDF5 file and, for a URL or S3 input, the range reader under it."""

    source: InputSource
    h5: h5py.File
    reader: RangeReader | None = None

    def slab_reader(self, plan: Plan, item: WorkItem) -> SlabReader:
        """The reader of ``item``'s slab: stored chunks by byte range when remote, else h5py."""
        series = plan.series[item.series]
        if self.reader is None:
            return H5SlabReader(self.h5, series, item.column_start, item.column_stop)
        from .direct import slab_reader

        rows = item_rows(series, item)  # with the bundle, the window's rows too
        return slab_reader(self.h5, series, item.column_start, item.column_stop, self.reader, rows=rows)

    def write_item(self, plan: Plan, item: WorkItem, store: Store) -> ItemResult:
        """Write ``item``'s outputs into ``store`` (:func:`~nwb2pennsieve.write.execute.execute_item`)."""
        if self.reader is None:
            return execute_item(self.h5, plan, item, store)
        with self.slab_reader(plan, item) as slab:
            return execute_item(self.h5, plan, item, store, reader=slab)

    def close(self) -> None:
        self.h5.close()
        if self.reader is not None:
            self.reader.close()


def open_input(
    source: str | os.PathLike[str] | InputSource, *, name: str | None = None, stats: ReadStats | None = None
) -> OpenedInput:
    """Open a local path, URL or S3 object as an NWB file (see :func:`~nwb2pennsieve.source.nwb.open_nwb`).

    ``name`` is what errors call the file (default: :attr:`InputSource.name`).
    """
    src = InputSource.parse(source)
    label = name or src.name
    reader = range_reader(src, stats=stats)
    if reader is None:
        return OpenedInput(src, open_nwb(src.location, name=label))
    try:
        h5 = open_nwb(cast(BinaryIO, reader), name=label, cache_bytes=REMOTE_H5_CACHE_BYTES)
    except BaseException:
        reader.close()
        raise
    return OpenedInput(src, h5, reader)
