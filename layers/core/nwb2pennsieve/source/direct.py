"""A work item's slab, read straight from the HDF5 chunk byte ranges of a remote file (S3 or HTTP).

h5py over a range reader works, but it reads each stored chunk through many small ``read``
calls and one at a time. Here the dataset's chunk index tells where each stored chunk lies
(``get_chunk_info_by_coord``); the chunks a block of rows needs are fetched in parallel ranged
ranged requests (adjacent ones merged), decoded by the checking decoders
(:mod:`~nwb2pennsieve.source.decoders`: deflate, shuffle, Fletcher-32, Zstd, LZ4, Blosc, Bitshuffle,
BZip2) and copied into the writer's buffer, while the next block's chunks are already being fetched.
Contiguous data is one byte range per block. Any other filter (Blosc2, LZF, scale-offset) falls
back to h5py over the range reader. A local file whose data is stored through a plugin's filter is
read the same way, from HDF5's own file descriptor (:class:`LocalRanges`).

A damaged chunk fails as it does through HDF5: the Fletcher-32 checksum is verified (as HDF5 does,
accepting the byte order of HDF5 before 1.6.3 too), and a chunk that does not decode, or decodes to
the wrong size, raises :class:`OSError` with HDF5's wording (so the same one line as through h5py:
the writer turns it into one naming the file, series and chunk).

Each stored chunk is fetched once per work item: the decoded chunks of the current band of
rows are kept until the writer moves past them, so a chunk cut by a chunk-file boundary is not
fetched twice.
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import h5py
import numpy as np

from .decoders import checkable, decode, fletcher32, fletcher32_matches, pipeline, unshuffle, uses_plugins
from .slabs import H5SlabReader, ItemColumns, SlabReader, SlabSeries

__all__ = ["DirectChunkReader", "LocalRanges", "direct_readable", "fletcher32", "fletcher32_matches", "unshuffle"]

MERGE_BYTES = 16 * 1024 * 1024  # at most this much in one merged GET
RANGE_BYTES = 8 * 1024 * 1024  # contiguous data: a block is split in GETs of this size
FETCH_THREADS = 16


def direct_readable(dataset: h5py.Dataset) -> bool:
    """Whether :class:`DirectChunkReader` can decode this dataset's stored bytes itself."""
    if dataset.dtype.kind not in "iuf" or dataset.ndim not in (1, 2):
        return False
    layout = dataset.id.get_create_plist().get_layout()
    if layout == h5py.h5d.CONTIGUOUS:
        return True
    return layout == h5py.h5d.CHUNKED and checkable(pipeline(dataset))


class ByteRanges(Protocol):
    """Where stored bytes are fetched from: a range reader (S3, HTTP) or a local file."""

    def fetch(self, start: int, stop: int) -> bytes: ...


class LocalRanges:
    """Byte ranges of the local file HDF5 has open, read from its own descriptor (so the bytes are
    those of the very file h5py reads, even if the path now names another)."""

    def __init__(self, h5: h5py.File) -> None:
        self._fd = int(h5.id.get_vfd_handle())

    def fetch(self, start: int, stop: int) -> bytes:
        data = os.pread(self._fd, stop - start, start)
        if len(data) != stop - start:
            raise OSError(f"the file ends at byte {start + len(data)}, before {stop}: truncated")
        return data


@dataclass(frozen=True)
class _Stored:
    coord: tuple[int, ...]  # chunk index along each dimension
    offset: int | None  # byte offset in the file; None when the chunk was never written
    size: int
    filter_mask: int


class DirectChunkReader(ItemColumns):
    """Reads rows of columns [column_start, column_stop) of a series from its S3 object.

    ``rows`` is the row range the work item will read (for read-ahead); blocks must be read in
    increasing row order for the band cache and read-ahead to pay off (the writer does). The
    item's columns are one column group: a band of rows is fetched for all of them at once, and
    the chunks are fetched in parallel anyway. A :class:`~nwb2pennsieve.source.slabs.SlabReader`.
    """

    def __init__(
        self,
        h5: h5py.File,
        series: SlabSeries,
        column_start: int,
        column_stop: int,
        source: ByteRanges,
        *,
        rows: tuple[int, int] | None = None,
        threads: int = FETCH_THREADS,
    ) -> None:
        self.dataset: h5py.Dataset = h5[series.data_path]
        self.source = source
        super().__init__(column_start, column_stop)
        self._rows = rows or (0, int(self.dataset.shape[0]))
        self._two_d = self.dataset.ndim == 2
        self._dtype = self.dataset.dtype
        plist = self.dataset.id.get_create_plist()
        self._chunked = plist.get_layout() == h5py.h5d.CHUNKED
        self._filters = pipeline(self.dataset) if self._chunked else []
        self._chunk_shape: tuple[int, ...] = tuple(self.dataset.chunks or ())
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="chunk-fetch")
        self._bands: dict[int, dict[tuple[int, ...], Future[np.ndarray]]] = {}
        self._info: dict[tuple[int, ...], _Stored] = {}
        self._contiguous_offset: int | None = None
        if not self._chunked:
            self._contiguous_offset = self.dataset.id.get_offset()

    @property
    def column_groups(self) -> list[tuple[int, int]]:
        return [self._item]

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._bands.clear()

    # --- chunked data ---------------------------------------------------------------------------

    def _column_chunks(self) -> range:
        if not self._two_d:
            return range(1)
        # The item's columns, not the selection: a band's chunks are kept for every column group.
        width = self._chunk_shape[1]
        return range(self._item[0] // width, (self._item[1] - 1) // width + 1)

    def _stored(self, coord: tuple[int, ...]) -> _Stored:
        info = self._info.get(coord)
        if info is None:
            offset = tuple(c * s for c, s in zip(coord, self._chunk_shape, strict=True))
            found = self.dataset.id.get_chunk_info_by_coord(offset)
            info = _Stored(coord, found.byte_offset, int(found.size or 0), int(found.filter_mask or 0))
            self._info[coord] = info
        return info

    def _where(self, info: _Stored) -> str:
        """The stored chunk's place, for errors: its sample (row) range and column range."""
        r0 = info.coord[0] * self._chunk_shape[0]
        place = f"samples {r0}-{min(r0 + self._chunk_shape[0], int(self.dataset.shape[0])) - 1}"
        if self._two_d:
            c0 = info.coord[1] * self._chunk_shape[1]
            place += f", columns {c0}-{min(c0 + self._chunk_shape[1], int(self.dataset.shape[1])) - 1}"
        return f"the HDF5 chunk at {place}"

    def _decode(self, raw: bytes, info: _Stored) -> np.ndarray:
        """The chunk's values from its stored bytes; :class:`OSError` (HDF5's wording) if damaged."""
        expected = int(np.prod(self._chunk_shape)) * self._dtype.itemsize
        try:
            data = decode(raw, self._filters, info.filter_mask, expected, self._dtype.itemsize)
        except OSError as exc:
            raise OSError(f"{exc} in {self._where(info)}") from None
        return np.frombuffer(data, dtype=self._dtype).reshape(self._chunk_shape)

    def _fill(self) -> np.ndarray:
        fill = self.dataset.fillvalue
        return np.full(self._chunk_shape, fill if fill is not None else 0, dtype=self._dtype)

    def _fetch_band(self, band: int) -> dict[tuple[int, ...], Future[np.ndarray]]:
        """Start fetching every stored chunk of row band ``band`` the item needs."""
        coords = [(band, c) if self._two_d else (band,) for c in self._column_chunks()]
        infos = [self._stored(c) for c in coords]
        futures: dict[tuple[int, ...], Future[np.ndarray]] = {}
        missing = [i for i in infos if i.offset is None]
        for info in missing:
            done: Future[np.ndarray] = Future()
            done.set_result(self._fill())
            futures[info.coord] = done
        stored = sorted((i for i in infos if i.offset is not None), key=lambda i: i.offset or 0)
        groups: list[list[_Stored]] = []
        for info in stored:
            last = groups[-1][-1] if groups else None
            if (
                last is not None
                and last.offset is not None
                and last.offset + last.size == info.offset
                and info.offset + info.size - (groups[-1][0].offset or 0) <= MERGE_BYTES
            ):
                groups[-1].append(info)
            else:
                groups.append([info])
        for group in groups:
            whole = self._pool.submit(self._fetch_group, group)
            for k, info in enumerate(group):
                futures[info.coord] = self._pool.submit(self._pick, whole, k, info)
        return futures

    def _fetch_group(self, group: list[_Stored]) -> list[bytes]:
        start = group[0].offset or 0
        data = self.source.fetch(start, (group[-1].offset or 0) + group[-1].size)
        return [data[(i.offset or 0) - start : (i.offset or 0) - start + i.size] for i in group]

    def _pick(self, whole: Future[list[bytes]], k: int, info: _Stored) -> np.ndarray:
        return self._decode(whole.result()[k], info)

    def _band(self, band: int) -> dict[tuple[int, ...], Future[np.ndarray]]:
        if band not in self._bands:
            self._bands[band] = self._fetch_band(band)
        return self._bands[band]

    def _read_chunked(self, start: int, stop: int, out: np.ndarray) -> None:
        rows = self._chunk_shape[0]
        first, last = start // rows, (stop - 1) // rows
        for old in [b for b in self._bands if b < first]:
            del self._bands[old]
        # Read ahead: the bands of the next block of the same size, while this one is copied.
        ahead = min(self._rows[1], stop + (stop - start))
        for band in range(first, (ahead - 1) // rows + 1):
            self._band(band)
        c0, c1 = self._columns
        for band in range(first, last + 1):
            r0 = max(start, band * rows)
            r1 = min(stop, (band + 1) * rows)
            for coord, future in self._band(band).items():
                if self._two_d:
                    width = self._chunk_shape[1]
                    k0 = max(c0, coord[1] * width)
                    k1 = min(c1, (coord[1] + 1) * width)
                    if k1 <= k0:  # a chunk of the item outside the selected columns
                        continue
                    local = future.result()[r0 - band * rows : r1 - band * rows]
                    out[r0 - start : r1 - start, k0 - c0 : k1 - c0] = local[
                        :, k0 - coord[1] * width : k1 - coord[1] * width
                    ]
                else:
                    out[r0 - start : r1 - start] = future.result()[r0 - band * rows : r1 - band * rows]

    # --- contiguous data ------------------------------------------------------------------------

    def _read_contiguous(self, start: int, stop: int, out: np.ndarray) -> None:
        if self._contiguous_offset is None:  # never written: all fill value
            fill = self.dataset.fillvalue
            out[...] = fill if fill is not None else 0
            return
        row_bytes = self._dtype.itemsize * (int(self.dataset.shape[1]) if self._two_d else 1)
        begin = self._contiguous_offset + start * row_bytes
        end = self._contiguous_offset + stop * row_bytes
        pieces = [(b, min(end, b + RANGE_BYTES)) for b in range(begin, end, RANGE_BYTES)]
        parts = list(self._pool.map(lambda r: self.source.fetch(*r), pieces))
        block = np.frombuffer(b"".join(parts), dtype=self._dtype)
        if self._two_d:
            c0, c1 = self._columns
            out[...] = block.reshape(stop - start, -1)[:, c0:c1]
        else:
            out[...] = block

    def read(self, start: int, stop: int, out: np.ndarray) -> None:
        if self._chunked:
            self._read_chunked(start, stop, out)
        else:
            self._read_contiguous(start, stop, out)


def slab_reader(
    h5: h5py.File,
    series: SlabSeries,
    column_start: int,
    column_stop: int,
    source: ByteRanges | None,
    *,
    rows: tuple[int, int] | None = None,
) -> SlabReader:
    """The reader of a work item's slab. Over ranged requests (``source``): the stored chunks' byte
    ranges, decoded here, wherever the filters allow, else h5py. A local file (``source`` None):
    through HDF5 for its own filters (deflate, shuffle, Fletcher-32, ...), but a plugin's filter
    (Zstd, LZ4, Blosc, Bitshuffle, BZip2) is undone by the checking decoders
    (:mod:`~nwb2pennsieve.source.decoders`), never by hdf5plugin."""
    dataset = h5[series.data_path]
    if source is None:
        if dataset.chunks is None or not uses_plugins(pipeline(dataset)) or not direct_readable(dataset):
            return H5SlabReader(h5, series, column_start, column_stop)
        source = LocalRanges(h5)
    if direct_readable(dataset):
        return DirectChunkReader(h5, series, column_start, column_stop, source, rows=rows)
    return H5SlabReader(h5, series, column_start, column_stop)
