"""Executing work items: read a slab, scale it to µV, write big-endian float64 gzip chunk files.

An item is processed one chunk at a time; a chunk one column group at a time (the columns of one
HDF5 chunk, or all the item's columns when the data is contiguous); a column group in blocks of
rows. A block is read into a contiguous buffer, transposed and scaled straight into a reused
big-endian float64 buffer, and appended to each of the group's channel files. The slab consumers
(the viewer bundle) get the same µV as float32, converted straight from the block in pieces of
about a MiB (:func:`to_float32_uv`; no float64 pass when no chunk file is written). Reading whole HDF5
chunk columns into a contiguous buffer lets HDF5 copy uncompressed chunks straight from the file
with no chunk cache; compressed data gets a cache of two chunks of the group, so a chunk cut by a
block boundary is decompressed once. Memory is a few tens of MiB for the buffers, whatever the
item's size when writing files; an S3 store holds one chunk file of each of the group's channels
until it is put (compressed, at a compressed ``plan.options.gzip_level``), and each open file of a
compressed level one ISA-L compressor of ~0.2 MiB (:mod:`nwb2pennsieve.output.compression`). Reading
(the :class:`~nwb2pennsieve.source.slabs.SlabReader` protocol, the h5py reader and the block sizing) is
in :mod:`nwb2pennsieve.source.slabs`.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..errors import InvalidSeriesError, Nwb2PennsieveError, StorageError
from ..output.compression import ChunkFileWriter, open_chunk_writer
from ..output.storage import PendingObject, Store
from ..plan.models import (
    ChannelMetadata,
    Chunk,
    ChunkRecord,
    ItemResult,
    Plan,
    SeriesPlan,
    WorkItem,
    chunk_file_name,
    metadata_file_name,
)
from ..source.nwb import damage_reason
from ..source.slabs import SlabReader, block_rows

_LITTLE_ENDIAN = sys.byteorder == "little"
_BIG_F8 = np.dtype(">f8")


_scratch = threading.local()

Progress = Callable[[int], None]  # called with the float64 bytes of each chunk written (or, without chunk files, read)


class SlabConsumer(Protocol):
    """Takes the µV of every block the writer reads (the viewer bundle's writer is one): both
    outputs come from one read. Blocks of one column group arrive in row order."""

    def begin(self, column_groups: Sequence[tuple[int, int]]) -> tuple[int, int] | None:
        """Called once before reading; returns rows it also needs read before the item's chunks (or None)."""
        ...

    def consume(self, start: int, c0: int, values: np.ndarray) -> None:
        """Rows ``[start, start + m)`` of the columns from ``c0``: ``values`` is ``(m, width)`` float32 µV
        (row-major: one row per sample), each the float64 µV of the chunk files rounded once. The
        array is the writer's reused buffer: a consumer copies what it keeps past the call."""
        ...


def _buffer(name: str, size: int, dtype: np.dtype) -> np.ndarray:
    """A flat buffer of ``size`` items, kept per thread and reused by the next work items.

    Allocating the tens of MiB afresh for every item lets glibc's heap keep the freed blocks
    (its mmap threshold rises to 32 MiB after the first free), so a worker's RSS crept up by
    ~50 MiB over a run; one reused buffer keeps it flat.
    """
    key = (name, dtype.str)
    cache: dict[tuple[str, str], np.ndarray] = _scratch.__dict__.setdefault("buffers", {})
    have = cache.get(key)
    if have is None or have.size < size:
        cache.pop(key, None)
        have = cache[key] = np.empty(size, dtype=dtype)
    return have[:size]


def write_work_item(
    plan: Plan,
    item: WorkItem,
    store: Store,
    reader: SlabReader,
    *,
    consumers: Sequence[SlabConsumer] = (),
    progress: Progress | None = None,
    on_block: Callable[[], None] | None = None,
) -> ItemResult:
    """Write every chunk file of ``item`` into ``store`` (when the plan writes chunk files), reading
    through ``reader``, and hand every block read to ``consumers``; return what was written.
    ``progress`` is told the float64 bytes of each chunk as it is done: they add up to the item's
    ``output_bytes`` whatever the gzip level or the formats.

    Each file appears under its final name only when complete; on any error the files of the
    chunk being written are discarded and the error says which file, series and item failed. A
    read that fails (HDF5's "filter returned failure during read", "inflate() failed", a
    Fletcher-32 mismatch) is one line naming the chunk's samples and saying the file is damaged or
    truncated, never the library's text. ``on_block`` is called after each block of rows is read
    (the local pool's sign that a worker makes progress).
    """
    series = plan.series_of(item)
    try:
        chunk_files = plan.writes_chunks and not item.aux
        return _ItemWrite(plan, series, store, reader, consumers, on_block, chunk_files=chunk_files).run(item, progress)
    except Nwb2PennsieveError as exc:
        if exc.series is None:
            exc.series = series.path
        raise exc.with_file(plan.source) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InvalidSeriesError(
            f"reading or writing work item {item.id} failed ({exc})", file=plan.source, series=series.path
        ) from None


# What h5py (or the direct chunk reader) raises when stored data cannot be read.
READ_ERRORS = (OSError, RuntimeError, ValueError, KeyError, TypeError)


def _read(reader: SlabReader, start: int, stop: int, out: np.ndarray, chunk: tuple[int, int], columns: str) -> None:
    """``reader.read``, with a failure turned into one line naming the chunk (sample range)."""
    try:
        reader.read(start, stop, out)
    except Nwb2PennsieveError:
        raise
    except READ_ERRORS as exc:
        raise InvalidSeriesError(
            f"samples {chunk[0]}-{chunk[1] - 1} ({columns}) cannot be read: {damage_reason(exc)}"
        ) from None


@dataclass(frozen=True)
class _Group:
    """One column group and its µV scaling.

    µV = (data × conversion × channel_conversion + offset) × unit factor. Without an offset the two
    factors are folded into one multiplication (``scale`` holds the unit factor); with one, the NWB
    order is kept, since folding the unit factor in first loses bits when the offset nearly cancels
    the data.
    """

    c0: int
    c1: int
    scale: np.ndarray
    offset: np.ndarray
    scaled: bool
    shifted: bool

    @property
    def width(self) -> int:
        return self.c1 - self.c0


class _ItemWrite:
    """One work item: its spans (chunks, and rows a consumer needs first) × its column groups, each
    read in blocks of rows into reused buffers."""

    def __init__(
        self,
        plan: Plan,
        series: SeriesPlan,
        store: Store,
        reader: SlabReader,
        consumers: Sequence[SlabConsumer],
        on_block: Callable[[], None] | None = None,
        *,
        chunk_files: bool,
    ) -> None:
        self.series, self.store, self.reader, self.consumers = series, store, reader, consumers
        self.on_block = on_block
        self.gzip_level = plan.options.gzip_level
        self.chunk_files = chunk_files
        self.factor = series.unit_factor
        self.groups = [self._group(c0, c1) for c0, c1 in reader.column_groups]
        widest = max(g.width for g in self.groups)
        self.rows = block_rows(series, widest, plan.chunk_samples)
        native = np.dtype(series.dtype).newbyteorder("=")
        self.raw_flat = _buffer("raw", self.rows * widest, native)
        # The float64 block only when chunk files are written; the float32 one only for consumers.
        self.out_flat = _buffer("out", self.rows * widest, np.dtype(np.float64)) if self.chunk_files else None
        piece = max(_consumer_rows(g.width) * g.width for g in self.groups)
        self.uv32_flat = _buffer("uv32", piece, np.dtype(np.float32)) if consumers else None

    def _group(self, c0: int, c1: int) -> _Group:
        channels = self.series.channels[c0:c1]
        native_scale = np.array([c.scale for c in channels], dtype=np.float64)[:, None]
        offset = np.array([c.offset for c in channels], dtype=np.float64)[:, None]
        shifted = bool(np.any(offset != 0.0))
        scale = native_scale if shifted else native_scale * self.factor
        return _Group(c0, c1, scale, offset, bool(np.any(scale != 1.0)), shifted)

    def run(self, item: WorkItem, progress: Progress | None) -> ItemResult:
        # (start, stop, chunk or None): rows a consumer needs before the item's chunks come first, no file.
        spans: list[tuple[int, int, Chunk | None]] = []
        for consumer in self.consumers:
            lead = consumer.begin([(g.c0, g.c1) for g in self.groups])
            if lead is not None:
                spans.append((lead[0], lead[1], None))
        spans += [(c.start, c.stop, c) for c in self.series.chunks[item.chunk_start : item.chunk_stop]]
        files = payload = 0
        records: list[ChunkRecord] = []
        for span_start, span_stop, chunk in spans:
            for group in self.groups:
                written = self._span(span_start, span_stop, chunk, group)
                records += written
                done = (span_stop - span_start) * 8 * group.width
                if written:
                    files += group.width
                    payload += done
                if progress is not None and chunk is not None:
                    progress(done)
        stored = sum(r.size for r in records)
        return ItemResult(id=item.id, files=files, payload_bytes=payload, stored_bytes=stored, records=records)

    def _span(self, span_start: int, span_stop: int, chunk: Chunk | None, group: _Group) -> list[ChunkRecord]:
        """Rows [span_start, span_stop) of ``group``: its chunk files (none for rows a consumer needs
        before the item's chunks, or without chunk files), committed whole or not at all."""
        channels = self.series.channels[group.c0 : group.c1]
        self.reader.select(group.c0, group.c1)
        names = (
            []
            if chunk is None or not self.chunk_files
            else [chunk_file_name(ch.index, chunk.start_us, chunk.end_us) for ch in channels]
        )
        pending: list[PendingObject] = []
        try:
            for name in names:
                pending.append(self.store.open_pending(name))
            writers = [open_chunk_writer(p, (span_stop - span_start) * 8, self.gzip_level) for p in pending]
            first, last = channels[0].index, channels[-1].index
            columns = f"channel {first}" if group.width == 1 else f"channels {first}-{last}"
            start = span_start
            while start < span_stop:
                stop = min(span_stop, (start // self.rows + 1) * self.rows)
                self._block(start, stop, (span_start, span_stop), columns, group, writers)
                start = stop
            for writer in writers:
                writer.close()
            records = [
                ChunkRecord(name=n, size=w.stored_bytes, crc32=w.crc) for n, w in zip(names, writers, strict=True)
            ]
            for p in pending:
                p.commit()
        except BaseException:
            for p in pending:
                p.abort()
            raise
        return records

    def _block(
        self,
        start: int,
        stop: int,
        span: tuple[int, int],
        columns: str,
        group: _Group,
        writers: Sequence[ChunkFileWriter],
    ) -> None:
        """Read rows [start, stop) of ``group``, append their µV to its files, hand them to the consumers."""
        m, width = stop - start, group.width
        if len(self.series.shape) == 2:
            raw = self.raw_flat[: m * width].reshape(m, width)
            _read(self.reader, start, stop, raw, span, columns)
        else:
            raw = self.raw_flat[:m].reshape(m, 1)
            _read(self.reader, start, stop, self.raw_flat[:m], span, columns)
        if self.on_block is not None:
            self.on_block()
        if writers:
            assert self.out_flat is not None
            block = self.out_flat[: width * m].reshape(width, m)
            _to_big_endian_uv(raw.T, block, group.scale, group.offset, self.factor, group.scaled, group.shifted)
            for j, writer in enumerate(writers):
                writer.write(block[j])
        if self.consumers:
            self._feed(raw, start, group)

    def _feed(self, raw: np.ndarray, start: int, group: _Group) -> None:
        # In pieces of about 1 MiB: a consumer's passes over a piece (a fold, a transposing copy)
        # then read it from the cache, not from memory.
        assert self.uv32_flat is not None
        m, width = raw.shape[0], group.width
        step = _consumer_rows(width)
        for a in range(0, m, step):
            b = min(m, a + step)
            uv = self.uv32_flat[: (b - a) * width].reshape(b - a, width)
            to_float32_uv(raw[a:b], uv, group.scale.T, group.offset.T, self.factor, group.shifted)
            for consumer in self.consumers:
                consumer.consume(start + a, group.c0, uv)


def _to_big_endian_uv(
    source: np.ndarray,
    block: np.ndarray,
    scale: np.ndarray,
    offset: np.ndarray,
    factor: float,
    scaled: bool,
    shifted: bool,
) -> None:
    """``block`` (native float64 memory) ← µV of ``source``, as big-endian float64 bytes.

    With an offset: (source × scale + offset) × factor, in that order; without one, ``scale``
    already holds the unit factor: source × scale.

    Without an offset the product is written straight into a big-endian view of ``block`` (numpy
    swaps the bytes as it stores them): one pass over the memory instead of two. The values are the
    same float64 products either way.
    """
    if shifted:
        _shifted_uv(source, block, scale, offset, factor, scaled)
        if _LITTLE_ENDIAN:
            block.byteswap(inplace=True)
        return
    big = block.view(_BIG_F8)
    if scaled:
        np.multiply(source, scale, out=big)
    else:
        np.copyto(big, source)


def _shifted_uv(
    source: np.ndarray, out: np.ndarray, scale: np.ndarray, offset: np.ndarray, factor: float, scaled: bool
) -> None:
    """``out`` (float64) ← (source × scale + offset) × factor, in that NWB order (a series with an offset)."""
    if scaled:
        np.multiply(source, scale, out=out)
    else:
        np.copyto(out, source)
    np.add(out, offset, out=out)
    if factor != 1.0:
        np.multiply(out, factor, out=out)


CONSUMER_BYTES = 1 << 20  # float32 bytes of µV a consumer is handed at a time


def _consumer_rows(width: int) -> int:
    """Rows of a piece handed to the consumers: about CONSUMER_BYTES, a multiple of 64 rows."""
    return max(64, CONSUMER_BYTES // (4 * width) // 64 * 64)


_F32_STEP = 1 << 15  # values per pass of the float64 detour (a shifted series): 256 KiB of scratch


def to_float32_uv(
    source: np.ndarray, out: np.ndarray, scale: np.ndarray, offset: np.ndarray, factor: float, shifted: bool
) -> None:
    """``out`` (float32, ``(m, width)``) ← the µV of ``source`` (``(m, width)``), each the float64
    value :func:`_to_big_endian_uv` computes for the chunk files, rounded once to float32.

    ``scale`` and ``offset`` are ``(1, width)`` (the writer's per-channel columns, transposed).
    Without an offset the float64 product ``source × scale`` is rounded as numpy stores it (the
    ufunc's float64 loop, cast on output): one pass over the data, no float64 block. With one,
    (source × scale + offset) × factor is computed in float64, in the same order, a few rows at a
    time, and then rounded.
    """
    if not shifted:
        # A scale of 1 still goes through the float64 loop: float32(float64(x)), as the chunk files
        # hold float64(x) (an int64 rounded straight to float32 could round differently).
        np.multiply(source, scale, out=out, casting="unsafe")
        return
    step = max(1, _F32_STEP // max(1, source.shape[1]))
    scratch = _buffer("uv64", step * source.shape[1], np.dtype(np.float64))
    for a in range(0, source.shape[0], step):
        b = min(source.shape[0], a + step)
        part = scratch[: (b - a) * source.shape[1]].reshape(b - a, source.shape[1])
        _shifted_uv(source[a:b], part, scale, offset, factor, scaled=True)
        np.copyto(out[a:b], part, casting="unsafe")


def metadata_body(metadata: ChannelMetadata) -> bytes:
    """The bytes of one channel metadata file."""
    return json.dumps(metadata.model_dump(by_alias=True), separators=(", ", ": ")).encode()


def write_channel_metadata(plan: Plan, store: Store) -> list[str]:
    """Write ``channel-{index:05d}.metadata.json`` for every channel; return the names written."""
    names = []
    for index, metadata in plan.channel_metadata():
        name = metadata_file_name(index)
        try:
            store.write_bytes(name, metadata_body(metadata))
        except OSError as exc:
            raise StorageError(f"cannot write {store.describe(name)} ({exc.strerror or exc})") from None
        names.append(name)
    return names
