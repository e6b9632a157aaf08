"""A read-only, seekable file object over one S3 object version, made of ranged GETs.

h5py opens it like a local file (``h5py.File(reader, "r")``). Small reads (HDF5 metadata) are
served from a cache of aligned blocks, so the many tiny reads h5py makes while opening a file
cost a handful of requests; large reads (raw data) are fetched exactly, never cached, so a
reader never holds more than its block cache. Every request is counted: the tests and the
benchmark check how many bytes a function really read.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict

from ..errors import InvalidInputError, StorageError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

BLOCK_BYTES = 64 * 1024  # HDF5 metadata is scattered in small pieces; 64 KiB blocks fetch a few at once
CACHE_BLOCKS = 512  # 32 MiB of cached blocks at most
DIRECT_BYTES = 1024 * 1024  # reads at least this long bypass the cache


class ReadStats:
    """Bytes and requests one reader (or several sharing it) fetched from S3."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests = 0
        self.bytes = 0

    def add(self, nbytes: int) -> None:
        with self._lock:
            self.requests += 1
            self.bytes += nbytes


class _ObjectParams(TypedDict):
    """What names the object (and its version) in a HEAD or GET."""

    Bucket: str
    Key: str
    VersionId: NotRequired[str]
    IfMatch: NotRequired[str]


def _client_error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


class S3RangeReader(io.RawIOBase):
    """``s3://bucket/key`` (at ``version_id`` when given) as a seekable binary file.

    The object's size and ETag are read once (HEAD); every later GET names the same version (or,
    for unversioned buckets, carries ``IfMatch`` with the ETag), so a file replaced while it is
    being read fails loudly instead of mixing two files' bytes.
    """

    def __init__(
        self,
        client: S3Client,
        bucket: str,
        key: str,
        *,
        version_id: str | None = None,
        stats: ReadStats | None = None,
        block_bytes: int = BLOCK_BYTES,
        cache_blocks: int = CACHE_BLOCKS,
    ) -> None:
        super().__init__()
        self.client = client
        self.bucket = bucket
        self.key = key
        self.version_id = version_id or None
        self.stats = stats or ReadStats()
        self._block = block_bytes
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._cache_blocks = cache_blocks
        self._lock = threading.Lock()
        self._pos = 0
        try:
            head = client.head_object(**self._params())
        except Exception as exc:
            code = _client_error_code(exc)
            if code in ("404", "NoSuchKey", "NotFound", "NoSuchVersion"):
                raise InvalidInputError("the object does not exist (or that version is gone)", file=self.uri) from None
            if code in ("403", "AccessDenied"):
                raise InvalidInputError("access to the object is denied", file=self.uri) from None
            raise StorageError(f"cannot read the object ({exc})", file=self.uri) from None
        self.size: int = int(head["ContentLength"])
        self.etag: str = str(head.get("ETag", ""))
        if self.version_id is None and head.get("VersionId") not in (None, "null"):
            self.version_id = str(head["VersionId"])

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def _params(self) -> _ObjectParams:
        params: _ObjectParams = {"Bucket": self.bucket, "Key": self.key}
        if self.version_id:
            params["VersionId"] = self.version_id
        return params

    # --- fetching -------------------------------------------------------------------------------

    def fetch(self, start: int, stop: int) -> bytes:
        """Bytes [start, stop) of the object, in one GET (thread-safe, not cached)."""
        stop = min(stop, self.size)
        if stop <= start:
            return b""
        params = self._params()
        if not self.version_id and self.etag:
            params["IfMatch"] = self.etag
        try:
            body = self.client.get_object(Range=f"bytes={start}-{stop - 1}", **params)["Body"].read()
        except Exception as exc:
            code = _client_error_code(exc)
            if code in ("PreconditionFailed", "412"):
                raise InvalidInputError("the object changed while it was being read", file=self.uri) from None
            raise StorageError(f"reading bytes {start}-{stop - 1} failed ({exc})", file=self.uri) from None
        self.stats.add(len(body))
        if len(body) != stop - start:
            raise StorageError(f"asked for {stop - start} bytes at {start}, got {len(body)}", file=self.uri)
        return bytes(body)

    def _blocks(self, first: int, last: int) -> list[bytes]:
        """Blocks first..last (inclusive), fetching each missing run of blocks in one GET."""
        with self._lock:
            found = {b: self._cache[b] for b in range(first, last + 1) if b in self._cache}
            for b in found:
                self._cache.move_to_end(b)
        b = first
        while b <= last:
            if b in found:
                b += 1
                continue
            run_end = b
            while run_end + 1 <= last and run_end + 1 not in found:
                run_end += 1
            data = self.fetch(b * self._block, (run_end + 1) * self._block)
            with self._lock:
                for k in range(b, run_end + 1):
                    piece = data[(k - b) * self._block : (k - b + 1) * self._block]
                    found[k] = piece
                    self._cache[k] = piece
                while len(self._cache) > self._cache_blocks:
                    self._cache.popitem(last=False)
            b = run_end + 1
        return [found[k] for k in range(first, last + 1)]

    # --- the file protocol ----------------------------------------------------------------------

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            self._pos = offset
        elif whence == io.SEEK_CUR:
            self._pos += offset
        elif whence == io.SEEK_END:
            self._pos = self.size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        start = self._pos
        stop = min(self.size, start + view.nbytes)
        if stop <= start:
            return 0
        n = stop - start
        if n >= DIRECT_BYTES:
            view[:n] = self.fetch(start, stop)
        else:
            first, last = start // self._block, (stop - 1) // self._block
            data = b"".join(self._blocks(first, last))
            skip = start - first * self._block
            view[:n] = data[skip : skip + n]
        self._pos = stop
        return n

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = self.size - self._pos
        buf = bytearray(max(0, min(size, self.size - self._pos)))
        n = self.readinto(buf)
        return bytes(buf[:n])
