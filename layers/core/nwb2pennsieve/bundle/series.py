"""The work-item side of the bundle (a converted series on its sample grid: :mod:`~nwb2pennsieve.plan.grid`).

**Work items.** With the bundle on, a series' work items follow its bundle windows (whole level-0
shards, :func:`~nwb2pennsieve.plan.bundle_layout.align_windows`): the item of window ``w`` writes the chunk files of the
chunks whose first sample lies in the window and every bundle shard of the window; if the window
begins inside a chunk owned by the previous window, the item also reads those leading rows
(for the bundle only). :class:`BundleFeeder` is the writer's slab consumer that does it.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

import numpy as np

from ..output.storage import Store
from ..plan.bundle_layout import WindowPlan, align_windows, plan_levels
from ..plan.grid import series_grid
from ..plan.models import Plan, SeriesPlan, WorkItem
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


class WindowWriter(Protocol):
    """What a feeder drives: :class:`~.continuous.ItemWriter` (the older layout) or the TS-Zarr one."""

    channels: list[int]

    def feed(self, slab: np.ndarray) -> None: ...
    def abort(self) -> None: ...
    def finish(self) -> Any: ...


WriterFactory = Callable[[Store, WindowPlan, int, list[int], int], WindowWriter]


def _item_writer(store: Store, plan: WindowPlan, window: int, channels: list[int], zstd_level: int) -> WindowWriter:
    return ItemWriter(store, plan, window, channels, zstd_level=zstd_level)


class BundleFeeder:
    """The writer's slab consumer for one work item: feeds the item's window to a window writer
    (:class:`~.continuous.ItemWriter` unless ``make_writer`` says otherwise) per column group, NaN
    where the grid has no sample."""

    def __init__(
        self,
        store: Store,
        series: SeriesPlan,
        item: WorkItem,
        *,
        first_group: int,
        zstd_level: int = ZSTD_LEVEL,
        make_writer: WriterFactory = _item_writer,
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
        self._make_writer = make_writer
        self._writers: dict[int, WindowWriter] = {}
        self._next: dict[int, int] = {}

    def begin(self, column_groups: Sequence[tuple[int, int]]) -> tuple[int, int] | None:
        """One writer per column group; the rows of the window before the item's first chunk."""
        for c0, c1 in column_groups:
            channels = list(range(self.first_group + c0, self.first_group + c1))
            self._writers[c0] = self._make_writer(
                self.store, self.plan, self.item.window or 0, channels, self.zstd_level
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

    def finish(self) -> list[Any]:
        """Close the window (NaN to its end); the partial results for the reduce."""
        partials = []
        for c0, writer in self._writers.items():
            self._fill(c0, self.window[1])
            partial = writer.finish()
            if partial is not None:
                partials.append(partial)
        return partials


class Partial(Protocol):
    """A partial result of one window (either layout's): it names its channels and has a binary form."""

    channels: tuple[int, ...]

    def to_bytes(self) -> bytes: ...


def pack_partials(partials: Sequence[Partial]) -> bytes:
    """The partial results of one work item as one record object."""
    out = [_MAGIC]
    for p in partials:
        body = p.to_bytes()
        out.append(len(body).to_bytes(8, "little"))
        out.append(body)
    return b"".join(out)


def unpack_partials(data: bytes) -> list[Any]:
    """The partial results of :func:`pack_partials` (:class:`ItemPartial` or TS-Zarr's ``StatPartial``)."""
    from .tszarr.partials import MAGIC, StatPartial

    if not data.startswith(_MAGIC):
        raise ValueError("not a record of bundle partial results")
    at = len(_MAGIC)
    out: list[Any] = []
    while at < len(data):
        size = int.from_bytes(data[at : at + 8], "little")
        body = data[at + 8 : at + 8 + size]
        out.append(StatPartial.from_bytes(body) if body.startswith(MAGIC) else ItemPartial.from_bytes(body))
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

    def blocks(self) -> Iterator[list[Any]]:
        for path in self._files.values():
            yield unpack_partials(path.read_bytes())
