"""Chunk files at a gzip level: 0 is the stored framing (:mod:`.gzipstored`), 1-3 is ISA-L deflate.

``GZIP_LEVEL`` 0 writes what the reference writes (stored blocks, 4× the int16 input); levels 1,
2 and 3 are ISA-L's igzip levels (the ``isal`` package), which shrink scaled Neuropixels samples
4.3× at a few hundred MB/s per core (bench/results-compression.md). Pennsieve gunzips what it is
given, so any level gives the same samples.

Determinism. A compressed file is the same 10-byte header as level 0 (mtime 0), one raw deflate
stream, then the CRC-32 and the size. The deflate stream is fed in pieces of exactly
:data:`FEED_BYTES` counted from the file's start, whatever pieces the writer hands over (their
split depends on the work item's width and block rows). Even so the compressed bytes are not a
function of the payload alone: ISA-L's stream varies with the process's memory layout (never
with address-space randomisation off), and now and then one file of a conversion comes out a
byte longer or shorter (docs/architecture.md, measured). They
also differ between CPUs: ISA-L picks
its deflate body at run time (x86: SSE4.2 / AVX2 / AVX-512 versions in assembly, aarch64 its own,
a C fallback with another hash below SSE4.2) and promises no identical output across them. So
nothing compares compressed bytes across machines: the cloud's Finalize compares each file's
listed size with the size its writer recorded, and the CRC-32 of the decompressed bytes (in the
gzip trailer and in those records) is what identifies a file's content (docs/architecture.md).
"""

from __future__ import annotations

import struct
from types import ModuleType
from typing import Protocol

from isal import isal_zlib

from .gzipstored import HEADER, Sink, StoredGzipWriter, framed_size

crc32 = isal_zlib.crc32

LEVELS = (0, 1, 2, 3)
STORED = 0
FEED_BYTES = 64 * 1024
"""The compressor is fed exactly this many bytes per call (the last call: what is left)."""

# Which deflate implementation the compressed levels use. Only a benchmark swaps it (zlib, to
# compare); both modules have the same compressobj interface.
deflate: ModuleType = isal_zlib


class ChunkFileWriter(Protocol):
    """Writes one chunk file (a gzip member of a declared payload size) to a sink, piece by piece."""

    def write(self, piece: bytes | memoryview) -> None: ...
    def close(self) -> None: ...
    @property
    def stored_bytes(self) -> int: ...
    @property
    def crc(self) -> int: ...


class DeflateGzipWriter:
    """A gzip member of exactly ``total`` payload bytes, deflated at ``level``, streamed to ``sink``.

    Holds one compressor (ISA-L: ~0.2 MiB; 0.22 MiB measured at levels 1-2, 0.15 at 3) and at most
    :data:`FEED_BYTES` of carried payload; compressed bytes go to the sink as the compressor produces them.
    """

    __slots__ = ("_carry", "_compressor", "_crc", "_remaining", "_sink", "_stored", "_total")

    def __init__(self, sink: Sink, total: int, level: int) -> None:
        if level not in LEVELS or level == STORED:
            raise ValueError(f"a deflate level is 1 to 3, not {level}")
        self._sink = sink
        self._total = total
        self._remaining = total
        self._crc = 0
        self._carry = bytearray()
        self._compressor = deflate.compressobj(level, deflate.DEFLATED, -15)
        self._stored = len(HEADER)
        sink.writev([HEADER])

    @property
    def stored_bytes(self) -> int:
        return self._stored

    @property
    def crc(self) -> int:
        return self._crc

    def _emit(self, out: bytes) -> None:
        if out:
            self._stored += len(out)
            self._sink.writev([out])

    def write(self, piece: bytes | memoryview) -> None:
        view = memoryview(piece).cast("B")
        if view.nbytes > self._remaining:
            raise ValueError("more bytes than the declared total")
        self._remaining -= view.nbytes
        self._crc = crc32(view, self._crc)
        compress = self._compressor.compress
        if self._carry:
            take = min(FEED_BYTES - len(self._carry), view.nbytes)
            self._carry += view[:take]
            view = view[take:]
            if len(self._carry) < FEED_BYTES:
                return
            self._emit(compress(self._carry))
            self._carry.clear()
        whole = view.nbytes - view.nbytes % FEED_BYTES
        for start in range(0, whole, FEED_BYTES):
            self._emit(compress(view[start : start + FEED_BYTES]))
        self._carry += view[whole:]

    def close(self) -> None:
        if self._remaining:
            raise ValueError(f"{self._remaining} bytes short of the declared total")
        if self._carry:
            self._emit(self._compressor.compress(self._carry))
            self._carry = bytearray()
        self._emit(self._compressor.flush())
        self._emit(struct.pack("<II", self._crc, self._total & 0xFFFFFFFF))


class _Stored(StoredGzipWriter):
    """The stored framing with the size and CRC a record needs."""

    __slots__ = ()

    @property
    def stored_bytes(self) -> int:
        return framed_size(self._total)

    @property
    def crc(self) -> int:
        return self._crc


def open_chunk_writer(sink: Sink, total: int, level: int) -> ChunkFileWriter:
    """The writer of one chunk file of ``total`` payload bytes at gzip ``level`` (0 = stored)."""
    if level == STORED:
        return _Stored(sink, total)
    return DeflateGzipWriter(sink, total, level)
