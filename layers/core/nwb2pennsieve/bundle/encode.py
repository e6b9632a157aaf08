"""A small Zarr v3 encoder: metadata documents and sharded-array shard objects, byte for byte ours.

Only what the viewer bundle needs: groups, and arrays of float32 / int64 / unsigned integers chunked along
axis 0 only, stored with the ``sharding_indexed`` codec (inner codecs ``bytes`` + ``zstd``; index
codecs ``bytes`` + ``crc32c``, index at the end, as the Zarr v3 sharding specification requires
for a reader that fetches the index with one suffix range request). Writing the shards ourselves
keeps the bytes deterministic (the same input gives the same objects, whoever writes them) and
lets each writer emit whole shard objects: no read-modify-write of a shard, ever.

A shard object is ``chunk_0 || chunk_1 || ... || index``; the index holds (offset, nbytes) as two
little-endian uint64 per inner chunk in row-major order, then the CRC32C of those bytes (uint32
little-endian): ``16 * chunks_per_shard + 4`` bytes. An inner chunk equal to the fill value
everywhere (all NaN for a float array) is not stored: its index entry is (2**64-1, 2**64-1); a
shard with no stored chunk is no object at all. Edge chunks are padded with the fill value to
the full chunk shape, as Zarr requires.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import google_crc32c
import numpy as np
from backports import zstd

from ..options import DEFAULT_BUNDLE_ZSTD_LEVEL

if TYPE_CHECKING:
    from ..output.storage import PendingObject

DType = Literal["float32", "int64", "uint8", "uint16", "uint32", "uint64"]
ZSTD_LEVEL = DEFAULT_BUNDLE_ZSTD_LEVEL
EMPTY = np.uint64(2**64 - 1)
INDEX_ENTRY_BYTES = 16
CRC_BYTES = 4


def dumps(document: dict[str, Any]) -> bytes:
    """A metadata document as deterministic, compact JSON bytes (``NaN`` is written as the string Zarr uses).

    Compact: the consolidated root inlines every array's metadata and is the reader's first
    fetch, and only compact output takes the standard library's C encoder.
    """
    return (json.dumps(document, separators=(",", ":"), sort_keys=False, allow_nan=False) + "\n").encode()


_compressors = threading.local()


def compress(data: bytes | memoryview, level: int) -> bytes:
    """One Zstd frame of ``data``: the same bytes as ``zstd.compress``, with this thread's compressor
    for ``level`` reused (a new compression context per 32 KiB chunk is a measurable share of the time)."""
    cache: dict[int, zstd.ZstdCompressor] = _compressors.__dict__.setdefault("by_level", {})
    compressor = cache.get(level)
    if compressor is None:
        compressor = cache[level] = zstd.ZstdCompressor(level=level)
    return compressor.compress(data, mode=zstd.ZstdCompressor.FLUSH_FRAME)


def group_metadata(attributes: dict[str, Any] | None = None) -> dict[str, Any]:
    """A group's ``zarr.json``."""
    return {"zarr_format": 3, "node_type": "group", "attributes": dict(attributes or {})}


@dataclass(frozen=True)
class ArraySpec:
    """A sharded array chunked along axis 0: ``shape[1:]`` is never chunked."""

    shape: tuple[int, ...]
    dtype: DType
    chunk_rows: int
    shard_rows: int
    attributes: dict[str, Any] = field(default_factory=dict)
    zstd_level: int = ZSTD_LEVEL

    def __post_init__(self) -> None:
        if self.chunk_rows < 1 or self.shard_rows % self.chunk_rows:
            raise ValueError(f"shard of {self.shard_rows} rows is not a whole number of {self.chunk_rows}-row chunks")

    @property
    def is_float(self) -> bool:
        return self.dtype == "float32"

    @property
    def fill_value(self) -> float | int:
        return math.nan if self.is_float else 0

    @property
    def rows(self) -> int:
        return self.shape[0]

    @property
    def chunks_per_shard(self) -> int:
        return self.shard_rows // self.chunk_rows

    @property
    def shard_count(self) -> int:
        return -(-self.rows // self.shard_rows)

    def shard_key(self, shard: int) -> str:
        """The shard's object path inside the array (default chunk key encoding, ``/`` separator)."""
        return "/".join(["c", str(shard)] + ["0"] * (len(self.shape) - 1))

    def metadata(self) -> dict[str, Any]:
        """The array's ``zarr.json``."""
        tail = list(self.shape[1:])
        endian: dict[str, Any] = {"name": "bytes", "configuration": {"endian": "little"}}
        zstd_codec = {"name": "zstd", "configuration": {"level": self.zstd_level, "checksum": False}}
        return {
            "shape": list(self.shape),
            "data_type": self.dtype,
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [self.shard_rows, *tail]}},
            "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
            "fill_value": "NaN" if self.is_float else 0,
            "codecs": [
                {
                    "name": "sharding_indexed",
                    "configuration": {
                        "chunk_shape": [self.chunk_rows, *tail],
                        "codecs": [endian, zstd_codec],
                        "index_codecs": [endian, {"name": "crc32c"}],
                        "index_location": "end",
                    },
                }
            ],
            "attributes": dict(self.attributes),
            "zarr_format": 3,
            "node_type": "array",
            "storage_transformers": [],
        }


def index_bytes(entries: np.ndarray) -> bytes:
    """The encoded shard index: (chunks, 2) uint64 little-endian, then its CRC32C."""
    raw = np.ascontiguousarray(entries, dtype="<u8").tobytes()
    return raw + google_crc32c.value(raw).to_bytes(CRC_BYTES, "little")


def decode_index(tail: bytes, chunks_per_shard: int) -> np.ndarray:
    """The (chunks, 2) uint64 (offset, nbytes) table from a shard's last ``16 n + 4`` bytes; checks the CRC."""
    raw, crc = tail[:-CRC_BYTES], tail[-CRC_BYTES:]
    if len(raw) != INDEX_ENTRY_BYTES * chunks_per_shard:
        raise ValueError(f"shard index of {len(raw)} bytes for {chunks_per_shard} chunks")
    if google_crc32c.value(raw) != int.from_bytes(crc, "little"):
        raise ValueError("shard index checksum mismatch")
    return np.frombuffer(raw, dtype="<u8").reshape(chunks_per_shard, 2)


class ShardBuilder:
    """Builds one shard object from its rows, appended in order in pieces of any size.

    Only the current inner chunk is held uncompressed. Finished chunks are held compressed
    (:meth:`finish` returns them), or, given ``open_pending``, written as they are made to the
    object it opens on the first stored chunk (:meth:`commit` then adds the index and publishes
    it): the same bytes either way, and a streamed shard holds no more than one chunk in memory.
    """

    def __init__(
        self,
        spec: ArraySpec,
        shard: int,
        open_pending: Callable[[], PendingObject] | None = None,
        *,
        buffer: np.ndarray | None = None,
    ) -> None:
        self.spec = spec
        self.shard = shard
        first = shard * spec.shard_rows
        self.rows = min(spec.shard_rows, spec.rows - first)  # real rows in this shard
        if self.rows <= 0:
            raise ValueError(f"shard {shard} is beyond the array's {spec.rows} rows")
        self._filled = 0  # rows appended so far
        shape = (spec.chunk_rows, *spec.shape[1:])
        if buffer is None:
            buffer = np.empty(shape, dtype=spec.dtype)
        elif buffer.shape != shape or buffer.dtype != spec.dtype or not buffer.flags.c_contiguous:
            raise ValueError(f"a chunk buffer of {buffer.dtype} {buffer.shape} for {spec.dtype} chunks of {shape}")
        # The current inner chunk (a flushed chunk is padded with the fill value first). Given a
        # ``buffer``, a caller may fill it in place (:attr:`chunk`, then :meth:`advance`).
        self._buf = buffer
        self._in_buf = 0
        self._parts: list[bytes] = []
        self._entries: list[tuple[int, int, int]] = []  # (chunk, offset, nbytes) of each stored chunk
        self._offset = 0
        self._chunk = 0
        self._open_pending = open_pending
        self._pending: PendingObject | None = None

    @property
    def complete(self) -> bool:
        return self._filled == self.rows

    @property
    def filled(self) -> int:
        """Rows of the current inner chunk filled so far."""
        return self._in_buf

    @property
    def room(self) -> int:
        """Rows that still fit in the current inner chunk (before it is compressed)."""
        return min(self.spec.chunk_rows - self._in_buf, self.rows - self._filled)

    def append(self, rows: np.ndarray) -> None:
        n = rows.shape[0]
        if self._filled + n > self.rows:
            raise ValueError(f"{self._filled + n} rows for a shard of {self.rows}")
        done = 0
        while done < n:
            take = min(n - done, self.room)
            self._buf[self._in_buf : self._in_buf + take] = rows[done : done + take]
            self.advance(take)
            done += take

    def advance(self, n: int) -> None:
        """``n`` more rows (at most :attr:`room`) were written into the chunk buffer after :attr:`filled`."""
        if not 0 <= n <= self.room:
            raise ValueError(f"{n} rows for a chunk with room for {self.room}")
        self._in_buf += n
        self._filled += n
        if self._in_buf == self.spec.chunk_rows or self._filled == self.rows:
            self._flush_chunk()

    def _flush_chunk(self) -> None:
        if self._in_buf < self.spec.chunk_rows:
            self._buf[self._in_buf :] = self.spec.fill_value  # edge chunk: pad with the fill value
        # All NaN (not stored) is checked in full only when the first value is NaN: data rarely is.
        if not (self.spec.is_float and math.isnan(self._buf.item(0)) and np.isnan(self._buf).all()):
            data = compress(memoryview(self._buf).cast("B"), self.spec.zstd_level)
            self._entries.append((self._chunk, self._offset, len(data)))
            if self._open_pending is None:
                self._parts.append(data)
            else:
                if self._pending is None:
                    self._pending = self._open_pending()
                self._pending.write(data)
            self._offset += len(data)
        self._chunk += 1
        self._in_buf = 0

    def finish(self) -> list[bytes] | None:
        """The shard object's pieces (chunks then index), or None when no chunk is stored."""
        if not self.complete:
            raise ValueError(f"shard {self.shard} has {self._filled} of its {self.rows} rows")
        if self._open_pending is not None:
            raise ValueError("a streamed shard is published with commit()")
        if not self._parts:
            return None
        return [*self._parts, index_bytes(self._index())]

    def commit(self) -> bool:
        """A streamed shard: write its index and publish it; False when no chunk was stored (no object)."""
        if not self.complete:
            raise ValueError(f"shard {self.shard} has {self._filled} of its {self.rows} rows")
        pending, self._pending = self._pending, None
        if pending is None:
            return False
        try:
            pending.write(index_bytes(self._index()))
            pending.commit()
        except BaseException:
            pending.abort()
            raise
        return True

    def _index(self) -> np.ndarray:
        """The (chunks, 2) (offset, nbytes) table: EMPTY for a chunk not stored."""
        entries = np.full((self.spec.chunks_per_shard, 2), EMPTY, dtype=np.uint64)
        for chunk, offset, nbytes in self._entries:
            entries[chunk] = (offset, nbytes)
        return entries

    def abort(self) -> None:
        """Drop a streamed shard's partly written object."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.abort()


def encode_shard(spec: ArraySpec, shard: int, rows: np.ndarray) -> list[bytes] | None:
    """Shard ``shard`` of ``spec`` holding ``rows`` (all its real rows), or None when nothing is stored."""
    builder = ShardBuilder(spec, shard)
    builder.append(rows)
    return builder.finish()


def consolidated_root(children: dict[str, dict[str, Any]], attributes: dict[str, Any] | None = None) -> dict[str, Any]:
    """The root group's ``zarr.json`` with every descendant's metadata inlined (sorted by path)."""
    root = group_metadata(attributes)
    root["consolidated_metadata"] = {
        "kind": "inline",
        "must_understand": False,
        "metadata": {path: children[path] for path in sorted(children)},
    }
    return root
