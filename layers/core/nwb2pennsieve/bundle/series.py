"""A converted series on the bundle's sample grid, and the work-item side of the bundle.

**The grid.** Level 0 of a continuous channel has no time axis: bin ``i`` is at ``start_us + i *
period_us``. A series timed by ``starting_time`` and ``rate`` is one segment: sample ``k`` is bin
``k``. A series with explicit timestamps is cut into segments at its gaps (a step of more than 2
periods, as for the chunk files); each segment starts at its own bin, ``round((t0 - start_us) /
period_us)`` with ``t0`` its first sample's integer-µs time (the chunk files' time), and sample
``k`` of the segment goes to that bin plus ``k``. A segment never starts before the previous one
ends plus one bin, so a gap always shows as at least one NaN bin even when the rate (given, or
estimated from the timestamps by the planner) drifts against the timestamps. Bins between
segments are NaN ("no data"); an inner chunk that is all NaN is never stored.

**Work items.** With the bundle on, a series' work items follow its bundle windows (whole level-0
shards, :func:`~.layout.align_windows`): the item of window ``w`` writes the chunk files of the
chunks whose first sample lies in the window and every bundle shard of the window; if the window
begins inside a chunk owned by the previous window, the item also reads those leading rows
(for the bundle only). :class:`BundleFeeder` is the writer's slab consumer that does it.
"""

from __future__ import annotations

import bisect
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from ..output.storage import Store
from ..plan.bundle_layout import WindowPlan, align_windows, plan_levels
from ..plan.models import Chunk, Plan, SeriesPlan, WorkItem
from .continuous import ItemPartial, ItemWriter
from .encode import ZSTD_LEVEL
from .metadata import ChannelInfo
from .sink import child_store

NAN_BLOCK = 1 << 16  # NaN rows are fed in blocks of this many bins (a long gap costs no memory)
_MAGIC = b"N2PPARTS"


def bundle_name(plan: Plan) -> str:
    """``<stem>.zarr``: the bundle's directory name, from the input file's name."""
    return PurePosixPath(plan.source).stem + ".zarr"


def bundle_store(output: Store, plan: Plan) -> Store:
    """The store of the bundle's objects: ``<stem>.zarr/`` inside the conversion's output."""
    return child_store(output, bundle_name(plan))


def channel_id(index: int) -> str:
    """A continuous channel's ``id``: the chunk files' channel name (``channel-00012``), so the two outputs join."""
    return f"channel-{index:05d}"


@dataclass(frozen=True)
class SeriesGrid:
    """Where each segment of a series lies on its level-0 grid."""

    starts: tuple[int, ...]  # first sample of each segment
    stops: tuple[int, ...]  # end (exclusive) of each segment
    offsets: tuple[int, ...]  # grid bin of each segment's first sample
    n_bins: int
    start_us: int
    rate_hz: float

    def bin_of(self, sample: int) -> int:
        s = bisect.bisect_right(self.starts, sample) - 1
        return self.offsets[s] + sample - self.starts[s]

    def first_sample_from(self, bin_: int) -> int:
        """The first sample whose bin is ``>= bin_`` (the series' length if none)."""
        s = bisect.bisect_right(self.offsets, bin_) - 1
        if s < 0:
            return 0
        k = self.starts[s] + bin_ - self.offsets[s]
        if k < self.stops[s]:
            return k
        return self.starts[s + 1] if s + 1 < len(self.starts) else self.stops[-1]


def series_grid(series: SeriesPlan) -> SeriesGrid:
    """The series' grid, from its plan alone (segments and chunk times), so every process agrees."""
    period_us = 1e6 / series.rate
    # Chunks are computed, not stored: take each segment's first chunk by its index (O(segments)).
    first_chunk: dict[int, Chunk] = {}
    index = 0
    for s, segment in enumerate(series.segments):
        first_chunk[s] = series.chunks[index]
        index += -(-(segment.stop - segment.start) // series.chunk_samples)
    t0 = series.chunks[0].start_us
    starts, stops, offsets = [], [], []
    end = 0
    for s, segment in enumerate(series.segments):
        at = 0 if s == 0 else max(end + 1, math.floor((first_chunk[s].start_us - t0) / period_us + 0.5))
        starts.append(segment.start)
        stops.append(segment.stop)
        offsets.append(at)
        end = at + segment.stop - segment.start
    return SeriesGrid(tuple(starts), tuple(stops), tuple(offsets), end, t0, series.rate)


def series_windows(series: SeriesPlan, window_bins: int) -> WindowPlan:
    grid = series_grid(series)
    return align_windows(grid.n_bins, window_bins, plan_levels(grid.n_bins, series.rate))


def window_chunks(series: SeriesPlan, grid: SeriesGrid, window: tuple[int, int]) -> tuple[int, int]:
    """(chunk_start, chunk_stop): the chunks whose first sample's bin lies in ``window``."""
    chunks = series.chunks  # computed on demand: bisect over their indices, never list them

    def first_bin(i: int) -> int:
        return grid.bin_of(chunks[i].start)

    everything = range(len(chunks))
    return (
        bisect.bisect_left(everything, window[0], key=first_bin),
        bisect.bisect_left(everything, window[1], key=first_bin),
    )


def first_group(plan: Plan, series: SeriesPlan) -> int:
    """The bundle group index of the series' first channel: groups are dense, from 0, in plan order.

    Without ``--series`` a group index is the chunk files' channel index; with it, the channels
    keep their whole-file indices (and so their ``id``) but the groups are still numbered densely.
    """
    return sum(len(s.channels) for s in plan.series[: series.index])


def channel_infos(plan: Plan) -> list[tuple[SeriesPlan, ChannelInfo]]:
    """Every continuous channel's group attributes; its ``id`` names its chunk-file channel index."""
    out = []
    for series in plan.series:
        grid = series_grid(series)
        first = first_group(plan, series)
        for column, ch in enumerate(series.channels):
            info = ChannelInfo(
                index=first + column,
                id=channel_id(ch.index),
                name=ch.name,
                rate_hz=series.rate,
                start_us=grid.start_us,
            )
            out.append((series, info))
    return out


class BundleFeeder:
    """The writer's slab consumer for one work item: feeds the item's window to an
    :class:`~.continuous.ItemWriter` per column group, NaN where the grid has no sample."""

    def __init__(
        self, store: Store, series: SeriesPlan, item: WorkItem, *, first_group: int, zstd_level: int = ZSTD_LEVEL
    ) -> None:
        if item.window is None or item.window_bins is None:
            raise ValueError(f"work item {item.id} has no bundle window")
        self.store = store
        self.series = series
        self.first_group = first_group  # the bundle group of the series' first channel (:func:`first_group`)
        self.item = item
        self.grid = series_grid(series)
        self.plan = align_windows(self.grid.n_bins, item.window_bins, plan_levels(self.grid.n_bins, series.rate))
        self.window = self.plan.windows[item.window]
        self.zstd_level = zstd_level
        self._writers: dict[int, ItemWriter] = {}
        self._next: dict[int, int] = {}

    def begin(self, column_groups: Sequence[tuple[int, int]]) -> tuple[int, int] | None:
        """One writer per column group; the rows of the window before the item's first chunk."""
        for c0, c1 in column_groups:
            channels = list(range(self.first_group + c0, self.first_group + c1))
            self._writers[c0] = ItemWriter(
                self.store, self.plan, self.item.window or 0, channels, zstd_level=self.zstd_level
            )
            self._next[c0] = self.window[0]
        a = self.grid.first_sample_from(self.window[0])
        b = self.grid.first_sample_from(self.window[1])
        if self.item.chunk_start < self.item.chunk_stop:
            b = min(b, self.series.chunks[self.item.chunk_start].start)
        return (a, b) if a < b else None

    def _fill(self, c0: int, until: int) -> None:
        writer = self._writers[c0]
        width = len(writer.channels)
        while self._next[c0] < until:
            n = min(NAN_BLOCK, until - self._next[c0])
            writer.feed(np.full((n, width), np.nan, dtype=np.float32))
            self._next[c0] += n

    def consume(self, start: int, c0: int, values: np.ndarray) -> None:
        """Rows ``[start, start + m)`` of the columns from ``c0``: ``values`` is ``(m, width)`` float32 µV."""
        m = values.shape[0]
        lo, hi = self.window
        k = start
        while k < start + m:
            s = bisect.bisect_right(self.grid.starts, k) - 1
            run_end = min(start + m, self.grid.stops[s])
            first_bin = self.grid.offsets[s] + k - self.grid.starts[s]
            a = max(first_bin, lo)
            b = min(first_bin + run_end - k, hi)
            if a < b:
                self._fill(c0, a)
                self._writers[c0].feed(values[k - start + a - first_bin : k - start + b - first_bin])
                self._next[c0] = b
            k = run_end

    def abort(self) -> None:
        """Drop the partly written shard objects (the item failed)."""
        for writer in self._writers.values():
            writer.abort()

    def finish(self) -> list[ItemPartial]:
        """Close the window (NaN to its end); the partial results for the reduce."""
        partials = []
        for c0, writer in self._writers.items():
            self._fill(c0, self.window[1])
            partial = writer.finish()
            if partial is not None:
                partials.append(partial)
        return partials


def pack_partials(partials: Sequence[ItemPartial]) -> bytes:
    """The partial results of one work item as one record object."""
    out = [_MAGIC]
    for p in partials:
        body = p.to_bytes()
        out.append(len(body).to_bytes(8, "little"))
        out.append(body)
    return b"".join(out)


def unpack_partials(data: bytes) -> list[ItemPartial]:
    if not data.startswith(_MAGIC):
        raise ValueError("not a record of bundle partial results")
    at = len(_MAGIC)
    out = []
    while at < len(data):
        size = int.from_bytes(data[at : at + 8], "little")
        out.append(ItemPartial.from_bytes(data[at + 8 : at + 8 + size]))
        at += 8 + size
    return out


class PartialSpill:
    """The items' partial results kept on disk, one file per channel block, until the reduce.

    The local pool's parent receives every item's partial results; holding them all until the end
    would cost 1/512 of the level-0 data in memory (300 MB for an hour of 384 channels). Each is
    appended to its block's file under ``folder`` (made when the first arrives) as it arrives,
    and :meth:`blocks` gives them back a block at a time (:func:`~.finish.reduce_partials`).
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)  # made on the first partial result
        self._files: dict[tuple[int, ...], Path] = {}

    def add(self, packed: bytes) -> None:
        """One item's partial results (:func:`pack_partials`)."""
        for partial in unpack_partials(packed):
            path = self._files.get(partial.channels)
            if path is None:
                self.folder.mkdir(parents=True, exist_ok=True)
                path = self._files[partial.channels] = self.folder / f"block-{len(self._files):06d}.bin"
                path.write_bytes(_MAGIC)
            body = partial.to_bytes()
            with path.open("ab") as fh:
                fh.write(len(body).to_bytes(8, "little") + body)

    def blocks(self) -> Iterator[list[ItemPartial]]:
        for path in self._files.values():
            yield unpack_partials(path.read_bytes())


def item_rows(series: SeriesPlan, item: WorkItem) -> tuple[int, int]:
    """The sample rows ``item`` reads: its chunks', and with the bundle its window's."""
    chunks = series.chunks[item.chunk_start : item.chunk_stop]
    a, b = (chunks[0].start, chunks[-1].stop) if chunks else (series.n_samples, 0)
    if item.window is not None and item.window_bins is not None:
        grid = series_grid(series)
        lo, hi = series_windows(series, item.window_bins).windows[item.window]
        a, b = min(a, grid.first_sample_from(lo)), max(b, grid.first_sample_from(hi))
    return (a, max(a, b))
