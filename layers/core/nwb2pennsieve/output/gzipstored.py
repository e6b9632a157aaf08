"""gzip with "stored" (uncompressed) deflate blocks, written incrementally.

The reference writer uses gzip level 0; this writes the same framing itself (header with mtime 0,
stored blocks of at most 65,535 bytes, CRC-32 and size trailer), which is valid gzip, costs no
compression CPU, and lets a file be streamed piece by piece. Block boundaries depend only on the
total length, so the bytes never depend on how the payload was split into pieces.
"""

from __future__ import annotations

import struct
from typing import Protocol

try:  # ISA-L's CRC-32 (optional, the same values) runs many times faster than zlib's
    from isal.isal_zlib import crc32
except ImportError:  # pragma: no cover - depends on what is installed
    from zlib import crc32

HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # magic, deflate, no flags, mtime 0, XFL 0, OS unknown
MAX_BLOCK = 65_535


class Sink(Protocol):
    def writev(self, parts: list[bytes | memoryview]) -> None: ...


def framed_size(payload: int) -> int:
    """Size of the gzip file holding ``payload`` bytes."""
    blocks = max(1, -(-payload // MAX_BLOCK))
    return len(HEADER) + 5 * blocks + payload + 8


class StoredGzipWriter:
    """Write a gzip member of exactly ``total`` payload bytes to ``sink`` as pieces arrive."""

    __slots__ = ("_block_left", "_crc", "_remaining", "_sink", "_total")

    def __init__(self, sink: Sink, total: int) -> None:
        self._sink = sink
        self._total = total
        self._remaining = total
        self._block_left = 0
        self._crc = 0
        sink.writev([HEADER if total else HEADER + b"\x01\x00\x00\xff\xff"])

    def write(self, piece: bytes | memoryview) -> None:
        view = memoryview(piece).cast("B")
        if view.nbytes > self._remaining:
            raise ValueError("more bytes than the declared total")
        self._crc = crc32(view, self._crc)
        parts: list[bytes | memoryview] = []
        while view.nbytes:
            if self._block_left == 0:
                n = min(MAX_BLOCK, self._remaining)
                parts.append(struct.pack("<BHH", 1 if n == self._remaining else 0, n, n ^ 0xFFFF))
                self._block_left = n
            take = min(self._block_left, view.nbytes)
            parts.append(view[:take])
            view = view[take:]
            self._block_left -= take
            self._remaining -= take
        self._sink.writev(parts)

    def close(self) -> None:
        if self._remaining:
            raise ValueError(f"{self._remaining} bytes short of the declared total")
        self._sink.writev([struct.pack("<II", self._crc, self._total & 0xFFFFFFFF)])
