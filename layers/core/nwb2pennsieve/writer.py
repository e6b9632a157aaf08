"""Executing work items: read a slab, scale it to µV, write big-endian float64 in stored gzip.

An item is processed one chunk at a time, and each chunk in blocks of rows: a block is read
(whole HDF5 chunk rows where the data is chunked), transposed and scaled into a reused float64
buffer in place, byte-swapped to big-endian, and appended to every channel's open chunk file.
Memory is a few tens of MiB for the buffers plus the HDF5 chunk cache, whatever the item's size
when writing files; an S3 store holds one chunk of each of the item's channels until it is put.
"""

from __future__ import annotations

import json
import sys
from typing import Protocol

import h5py
import numpy as np

from .errors import InvalidSeriesError, Nwb2PennsieveError, StorageError
from .gzipstored import StoredGzipWriter
from .models import ItemResult, Plan, SeriesPlan, WorkItem, chunk_file_name, metadata_file_name
from .storage import PendingObject, Store

BLOCK_BYTES = 32 * 1024 * 1024  # float64 bytes per block of rows
_LITTLE_ENDIAN = sys.byteorder == "little"


class SlabReader(Protocol):
    """Reads rows [start, stop) of the item's columns into ``out`` (shape (rows, columns) or (rows,))."""

    def read(self, start: int, stop: int, out: np.ndarray) -> None: ...


class H5SlabReader:
    """Reads through h5py, with a chunk cache that holds one row of the item's HDF5 chunks.

    The cache means an HDF5 chunk cut by a chunk boundary is decompressed once, not twice.
    """

    def __init__(self, h5: h5py.File, series: SeriesPlan, column_start: int, column_stop: int) -> None:
        self._columns = (column_start, column_stop)
        self._two_d = len(series.shape) == 2
        dapl = h5py.h5p.create(h5py.h5p.DATASET_ACCESS)
        if series.hdf5_chunks:
            itemsize = np.dtype(series.dtype).itemsize
            rows = series.hdf5_chunks[0]
            if self._two_d:
                width = series.hdf5_chunks[1]
                covered = (-(-column_stop // width) - column_start // width) * width
            else:
                covered = 1
            nbytes = int(1.25 * rows * covered * itemsize) + (1 << 20)
            dapl.set_chunk_cache(100_003, nbytes, 1.0)
        self.dataset = h5py.Dataset(h5py.h5d.open(h5.id, series.data_path.encode(), dapl))

    def read(self, start: int, stop: int, out: np.ndarray) -> None:
        if self._two_d:
            self.dataset.read_direct(out, np.s_[start:stop, self._columns[0] : self._columns[1]])
        else:
            self.dataset.read_direct(out, np.s_[start:stop])


def block_rows(series: SeriesPlan, width: int, chunk_samples: int) -> int:
    """Rows per block: about BLOCK_BYTES of float64, at most a chunk, whole HDF5 chunk rows if possible."""
    rows = max(1, min(chunk_samples, BLOCK_BYTES // (8 * width)))
    if series.hdf5_chunks and rows >= series.hdf5_chunks[0]:
        rows -= rows % series.hdf5_chunks[0]
    return rows


def write_work_item(
    h5: h5py.File, plan: Plan, item: WorkItem, store: Store, *, reader: SlabReader | None = None
) -> ItemResult:
    """Write every chunk file of ``item`` into ``store``; return what was written.

    Each file appears under its final name only when complete; on any error the files of the
    chunk being written are discarded and the error says which file, series and item failed.
    """
    series = plan.series[item.series]
    try:
        return _write(h5, plan, series, item, store, reader)
    except Nwb2PennsieveError as exc:
        if exc.series is None:
            exc.series = series.path
        raise exc.with_file(plan.source) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InvalidSeriesError(
            f"reading or writing work item {item.id} failed ({exc})", file=plan.source, series=series.path
        ) from None


def _write(
    h5: h5py.File, plan: Plan, series: SeriesPlan, item: WorkItem, store: Store, reader: SlabReader | None
) -> ItemResult:
    channels = series.channels[item.column_start : item.column_stop]
    width = len(channels)
    if reader is None:
        reader = H5SlabReader(h5, series, item.column_start, item.column_stop)
    rows = block_rows(series, width, plan.chunk_samples)
    native = np.dtype(series.dtype).newbyteorder("=")
    raw = np.empty((rows, width) if len(series.shape) == 2 else (rows,), dtype=native)
    out = np.empty((width, rows), dtype=np.float64)
    # µV = (data × conversion × channel_conversion + offset) × unit factor. Without an offset the
    # two factors are folded into one multiplication; with one, the NWB order is kept, since
    # folding the unit factor in first loses bits when the offset nearly cancels the data.
    native_scale = np.array([c.scale for c in channels], dtype=np.float64)[:, None]
    offset = np.array([c.offset for c in channels], dtype=np.float64)[:, None]
    shifted = bool(np.any(offset != 0.0))
    factor = series.unit_factor
    scale = native_scale if shifted else native_scale * factor
    scaled = bool(np.any(scale != 1.0))

    files = 0
    payload = 0
    for chunk in series.chunks[item.chunk_start : item.chunk_stop]:
        n = chunk.samples
        pending: list[PendingObject] = []
        try:
            for ch in channels:
                pending.append(store.open_pending(chunk_file_name(ch.index, chunk.start_us, chunk.end_us)))
            writers = [StoredGzipWriter(p, n * 8) for p in pending]
            start = chunk.start
            while start < chunk.stop:
                stop = min(chunk.stop, (start // rows + 1) * rows)
                m = stop - start
                reader.read(start, stop, raw[:m])
                block = out[:, :m]
                source = raw[:m].T if raw.ndim == 2 else raw[None, :m]
                if scaled:
                    np.multiply(source, scale, out=block)
                else:
                    np.copyto(block, source)
                if shifted:
                    np.add(block, offset, out=block)
                    if factor != 1.0:
                        np.multiply(block, factor, out=block)
                if _LITTLE_ENDIAN:
                    block.byteswap(inplace=True)
                for j, writer in enumerate(writers):
                    writer.write(block[j])
                start = stop
            for writer in writers:
                writer.close()
            for p in pending:
                p.commit()
        except BaseException:
            for p in pending:
                p.abort()
            raise
        files += width
        payload += n * 8 * width
    return ItemResult(id=item.id, files=files, payload_bytes=payload)


def write_channel_metadata(plan: Plan, store: Store) -> list[str]:
    """Write ``channel-{index:05d}.metadata.json`` for every channel; return the names written."""
    names = []
    for index, metadata in plan.channel_metadata():
        name = metadata_file_name(index)
        body = json.dumps(metadata.model_dump(by_alias=True), separators=(", ", ": "))
        try:
            store.write_bytes(name, body.encode())
        except OSError as exc:
            raise StorageError(f"cannot write {store.describe(name)} ({exc.strerror or exc})") from None
        names.append(name)
    return names
