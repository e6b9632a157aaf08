"""A read-only, seekable file object made of ranged requests, whatever answers them.

h5py opens it like a local file (``h5py.File(reader, "r")``). Small reads (HDF5 metadata) are
served from a cache of aligned blocks, so the many tiny reads h5py makes while opening a file
cost a handful of requests; large reads (raw data) are fetched exactly, never cached, so a
reader never holds more than its block cache. Every request is counted: the tests and the
benchmark check how many bytes a conversion really read.

Subclasses say how one range is fetched: the cloud's
:class:`~nwb2pennsieve.source.s3.S3RangeReader` (S3 GETs) and
:class:`~nwb2pennsieve.source.http.HTTPRangeReader` (HTTP ``Range`` requests).
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from typing import Any

from ..errors import StorageError
from .identity import SourceIdentity

BLOCK_BYTES = 64 * 1024  # HDF5 metadata is scattered in small pieces; 64 KiB blocks fetch a few at once
CACHE_BLOCKS = 512  # 32 MiB of cached blocks at most
DIRECT_BYTES = 1024 * 1024  # reads at least this long bypass the cache


class ReadStats:
    """Bytes and requests one reader (or several sharing it) fetched."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests = 0
        self.bytes = 0

    def add(self, nbytes: int) -> None:
        with self._lock:
            self.requests += 1
            self.bytes += nbytes


class RangeReader(io.RawIOBase):
    """A remote file of ``size`` bytes as a seekable binary file.

    A subclass sets ``size`` and implements :meth:`get` (one request for bytes [start, stop));
    it may seed the block cache with :meth:`keep` (e.g. the bytes its first request returned).
    """

    size: int
    identity: SourceIdentity  # the version read (set by the subclass when it learns it)

    def __init__(
        self, *, stats: ReadStats | None = None, block_bytes: int = BLOCK_BYTES, cache_blocks: int = CACHE_BLOCKS
    ) -> None:
        super().__init__()
        self.stats = stats or ReadStats()
        self._block = block_bytes
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._cache_blocks = cache_blocks
        self._lock = threading.Lock()
        self._pos = 0

    @property
    def uri(self) -> str:
        """What errors call the file."""
        raise NotImplementedError

    def get(self, start: int, stop: int) -> bytes:
        """Bytes [start, stop) in one request (0 <= start < stop <= size)."""
        raise NotImplementedError

    # --- fetching -------------------------------------------------------------------------------

    def fetch(self, start: int, stop: int) -> bytes:
        """Bytes [start, stop) of the file, in one request (thread-safe, not cached)."""
        stop = min(stop, self.size)
        if stop <= start:
            return b""
        body = self.get(start, stop)
        self.stats.add(len(body))
        if len(body) != stop - start:
            raise StorageError(f"asked for {stop - start} bytes at {start}, got {len(body)}", file=self.uri)
        return body

    def keep(self, start: int, data: bytes) -> None:
        """Cache the whole blocks of ``data`` (which starts at block-aligned ``start``)."""
        first = start // self._block
        with self._lock:
            for k in range(len(data) // self._block + (1 if start + len(data) >= self.size else 0)):
                piece = data[k * self._block : (k + 1) * self._block]
                if piece:
                    self._cache[first + k] = piece

    def _blocks(self, first: int, last: int) -> list[bytes]:
        """Blocks first..last (inclusive), fetching each missing run of blocks in one request."""
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

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            size = self.size - self._pos
        buf = bytearray(max(0, min(size, self.size - self._pos)))
        n = self.readinto(buf)
        return bytes(buf[:n])
