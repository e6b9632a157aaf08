"""Reading a work item's slab: the :class:`SlabReader` protocol, its h5py reader and block sizing.

The writer reads an item one column group at a time (the columns of one HDF5 chunk, or all the
item's columns when the data is contiguous or 1-D) and a column group in blocks of rows. Any
reader that satisfies :class:`SlabReader` can feed it: :class:`H5SlabReader` here (local files,
or h5py over an S3 range reader) and the cloud's direct chunk reader
(:class:`~nwb2pennsieve.source.direct.DirectChunkReader`, over any range reader).
"""

from __future__ import annotations

from types import TracebackType
from typing import Protocol, Self, runtime_checkable

import h5py
import numpy as np

BLOCK_BYTES = 32 * 1024 * 1024  # float64 bytes per block of rows
# Compressed data also holds HDF5's decompression buffers and a chunk cache: smaller blocks there.
COMPRESSED_BLOCK_BYTES = 16 * 1024 * 1024
# HDF5's chunk-cache preemption weight (its default). At 1.0 ("fully read chunks first") a cache
# that only ever reads part of each chunk (a column group narrower than the HDF5 chunk) kept every
# chunk it had read, far past its size: +234 MB of RSS over one 60 s Neuropixels work item
# (tests/unit/test_slabs_memory.py).
CHUNK_CACHE_W0 = 0.75


class SlabSeries(Protocol):
    """What a slab reader needs to know of a series (the plan's ``SeriesPlan`` has it)."""

    @property
    def data_path(self) -> str: ...

    @property
    def dtype(self) -> str: ...

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def hdf5_chunks(self) -> tuple[int, ...] | None: ...

    @property
    def compression(self) -> str | None: ...


@runtime_checkable
class SlabReader(Protocol):
    """Reads rows of a work item's columns, one column group at a time.

    ``column_groups`` are the (start, stop) column ranges, absolute and in order, the writer
    reads one at a time; together they cover the item's columns. ``select`` narrows the following
    reads to one of them (or any range inside the item's columns); ``columns`` is the range
    selected now. ``read`` fills ``out`` (shape (rows, columns), contiguous, or (rows,) for 1-D
    data) with rows [start, stop) of the selected columns. ``close`` releases what the reader
    holds; the reader is also a context manager that closes it.
    """

    @property
    def column_groups(self) -> list[tuple[int, int]]: ...

    @property
    def columns(self) -> tuple[int, int]: ...

    def select(self, column_start: int, column_stop: int) -> None: ...

    def read(self, start: int, stop: int, out: np.ndarray) -> None: ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


def column_groups(series: SlabSeries, column_start: int, column_stop: int) -> list[tuple[int, int]]:
    """The item's columns cut at the HDF5 chunk grid (one group for contiguous or 1-D data)."""
    if len(series.shape) != 2 or not series.hdf5_chunks:
        return [(column_start, column_stop)]
    width = series.hdf5_chunks[1]
    groups = []
    c0 = column_start
    while c0 < column_stop:
        c1 = min(column_stop, (c0 // width + 1) * width)
        groups.append((c0, c1))
        c0 = c1
    return groups


def block_rows(series: SlabSeries, width: int, chunk_samples: int) -> int:
    """Rows per block: about BLOCK_BYTES of float64, at most a chunk, whole HDF5 chunk rows if possible."""
    budget = COMPRESSED_BLOCK_BYTES if series.compression else BLOCK_BYTES
    rows = max(1, min(chunk_samples, budget // (8 * width)))
    if series.hdf5_chunks and rows >= series.hdf5_chunks[0]:
        rows -= rows % series.hdf5_chunks[0]
    return rows


def check_selection(item: tuple[int, int], column_start: int, column_stop: int) -> None:
    """Refuse a column range outside the item's columns (a reader holds only those)."""
    if not item[0] <= column_start < column_stop <= item[1]:
        raise ValueError(f"columns [{column_start}, {column_stop}) are not inside the item's [{item[0]}, {item[1]})")


class ClosedOnExit:
    """``with x:`` closes ``x``: for the readers and inputs that hold files, pools or sessions."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class ItemColumns(ClosedOnExit):
    """The columns a slab reader holds (its work item's) and the range it reads now (``select``)."""

    def __init__(self, column_start: int, column_stop: int) -> None:
        self._item = (column_start, column_stop)
        self._columns = self._item

    @property
    def columns(self) -> tuple[int, int]:
        return self._columns

    def select(self, column_start: int, column_stop: int) -> None:
        """Narrow the following reads to these (absolute) columns, e.g. one column group."""
        check_selection(self._item, column_start, column_stop)
        self._columns = (column_start, column_stop)


class H5SlabReader(ItemColumns):
    """Reads through h5py, one column group (the columns of one HDF5 chunk) at a time.

    An uncompressed chunk read whole-width into a contiguous buffer is copied by HDF5 straight from
    the file, so no chunk cache is set. Filtered (compressed) data, or groups narrower than their
    HDF5 chunk, get a cache of a little over two chunks of the group: a block of rows crossing a
    chunk boundary then decompresses each chunk once.
    """

    def __init__(self, h5: h5py.File, series: SlabSeries, column_start: int, column_stop: int) -> None:
        super().__init__(column_start, column_stop)
        self._two_d = len(series.shape) == 2
        self._groups = column_groups(series, column_start, column_stop)
        dapl = h5py.h5p.create(h5py.h5p.DATASET_ACCESS)
        if series.hdf5_chunks:
            itemsize = np.dtype(series.dtype).itemsize
            rows = series.hdf5_chunks[0]
            width = series.hdf5_chunks[1] if self._two_d else 1
            probe = h5py.h5d.open(h5.id, series.data_path.encode())
            filtered = probe.get_create_plist().get_nfilters() > 0
            # Close it before reopening: HDF5 shares one open dataset (and its chunk cache, sized by
            # the first open) between opens, so the cache set below would otherwise be ignored.
            del probe
            partial = self._two_d and any(c1 - c0 != width for c0, c1 in self._groups)
            nbytes = int(2.25 * rows * width * itemsize) + (1 << 20) if filtered or partial else 0
            dapl.set_chunk_cache(10_007, nbytes, CHUNK_CACHE_W0)
        self.dataset = h5py.Dataset(h5py.h5d.open(h5.id, series.data_path.encode(), dapl))

    @property
    def column_groups(self) -> list[tuple[int, int]]:
        return list(self._groups)

    def read(self, start: int, stop: int, out: np.ndarray) -> None:
        if self._two_d:
            self.dataset.read_direct(out, np.s_[start:stop, self._columns[0] : self._columns[1]])
        else:
            self.dataset.read_direct(out, np.s_[start:stop])

    def close(self) -> None:
        """Close this open of the dataset (and free its chunk cache); the file stays open."""
        if self.dataset.id.valid:
            self.dataset.id.close()
