"""Work items: how a series is cut into blocks of channels × runs of chunks, in one place for the
plan (the cloud's Distributed Map runs its items) and for the local pool's re-cut.

Without the viewer bundle an item is a channel block × a run of chunks inside one segment
(:func:`chunk_work_items`); with it, a channel block × one of the bundle's windows
(:func:`window_work_items`), so no two items ever write one shard (docs/bundle.md).
"""

from __future__ import annotations

import numpy as np

from ..options import ConversionOptions
from .bundle_layout import align_windows, plan_levels, window_length
from .grid import series_grid, series_windows, window_chunks
from .models import Plan, SeriesPlan, WorkItem

# A writer keeps one row of the item's HDF5 chunks in the chunk cache (so a chunk cut by a chunk
# boundary is decompressed once); channel blocks are narrowed so that row stays under this.
CHUNK_ROW_BUDGET = 128 * 1024 * 1024
# Local load balancing: a plan's items are sized for a Lambda's memory, so a small file may be one
# or a few uneven items. The pool re-cuts the plan with a smaller budget, about ITEMS_PER_WORKER
# items per worker (never below MIN_ITEM_BYTES), by the same rules; the bytes written are the same.
ITEMS_PER_WORKER = 4
MIN_ITEM_BYTES = 32 * 1024 * 1024


def series_work_items(series: SeriesPlan, options: ConversionOptions) -> list[WorkItem]:
    """The plan's work items of ``series``: on the bundle's windows when the options write it."""
    if options.writes_bundle:
        return window_work_items(series, options.chunk_samples, options.max_item_mb)
    return chunk_work_items(series, options.chunk_samples, options.max_item_mb)


def count_work_items(series: SeriesPlan, options: ConversionOptions) -> int:
    """How many items :func:`series_work_items` makes, without making them."""
    chunk_samples, max_item_mb = options.chunk_samples, options.max_item_mb
    if options.writes_bundle:
        length, width = _window_layout(series, chunk_samples, max_item_mb, min_width=1)
        return -(-series_grid(series).n_bins // length) * -(-series.n_columns // width)
    width, per_item = _chunk_layout(series, chunk_samples, max_item_mb)
    blocks = -(-series.n_columns // width)
    return sum(-(-len(r) // per_item) for r in _segment_chunk_ranges(series)) * blocks


def recut_items(plan: Plan, n_workers: int) -> list[WorkItem]:
    """The plan's work, cut into items of about 1 / (ITEMS_PER_WORKER × n_workers) of it, biggest
    first (the local pool's load balancing)."""
    total = sum(i.output_bytes for i in plan.work_items)
    budget_mb = max(MIN_ITEM_BYTES, total // max(1, ITEMS_PER_WORKER * n_workers)) / 2**20
    chunk_samples, max_item_mb = plan.chunk_samples, plan.options.max_item_mb
    if plan.writes_bundle:
        # The re-cut items keep to the bundle's shard windows; a local store streams the shards to
        # files, so compressed data is cut in whole HDF5 chunks (see _window_layout).
        budget_mb = min(budget_mb, max_item_mb)
        items = [
            i
            for s in plan.bundle_series()
            for i in window_work_items(s, chunk_samples, budget_mb, min_width=_whole_chunk_width(s))
        ]
    elif budget_mb >= max_item_mb:
        items = list(plan.work_items)
    else:
        items = [i for s in plan.series for i in chunk_work_items(s, chunk_samples, budget_mb)]
    # biggest first, so the last items to finish are small ones (stable: equal sizes keep plan order)
    items.sort(key=lambda i: -i.output_bytes)
    return items


def chunk_work_items(series: SeriesPlan, chunk_samples: int, max_item_mb: float) -> list[WorkItem]:
    """Cut the series into work items: channel blocks × runs of chunks inside one segment.

    A channel block is as wide as the budget allows for one chunk of each channel, and a multiple
    of the HDF5 chunk width when the data is chunked, so no stored chunk is read by two items of
    the same time window. A run of chunks is as long as the budget allows.
    """
    width, per_item = _chunk_layout(series, chunk_samples, max_item_mb)
    chunks = series.chunks
    items: list[WorkItem] = []
    for chunk_ids in _segment_chunk_ranges(series):
        for run_start in range(chunk_ids.start, chunk_ids.stop, per_item):
            first, last = run_start, min(run_start + per_item, chunk_ids.stop)
            samples = chunks[last - 1].stop - chunks[first].start
            items += _channel_blocks(series, width, f"{first:07d}", first, last, samples)
    return items


def window_work_items(
    series: SeriesPlan, chunk_samples: int, max_item_mb: float, *, min_width: int = 1
) -> list[WorkItem]:
    """Work items on the viewer bundle's windows: whole level-0 shards of the series' grid, so no
    two items ever write one shard (docs/bundle.md). An item owns the chunk files of the chunks
    whose first sample lies in its window. Channel blocks are at least ``min_width`` wide (or the
    whole series) when the budget would cut them narrower.
    """
    length, width = _window_layout(series, chunk_samples, max_item_mb, min_width=min_width)
    grid = series_grid(series)
    windows = align_windows(grid.n_bins, length, plan_levels(grid.n_bins, series.rate))
    items: list[WorkItem] = []
    for w, window in enumerate(windows.windows):
        first, last = window_chunks(series, grid, window)
        samples = sum(c.samples for c in series.chunks[first:last])
        label = f"w{w:06d}"
        items += _channel_blocks(series, width, label, first, last, samples, window=w, window_bins=windows.length)
    return items


def _chunk_layout(series: SeriesPlan, chunk_samples: int, max_item_mb: float) -> tuple[int, int]:
    """(channel block width, chunks per item) of the series' work items."""
    n_columns = series.n_columns
    budget = max_item_mb * 1024 * 1024
    chunk_bytes = chunk_samples * 8
    max_width = max(1, int(budget // chunk_bytes))
    width = min(n_columns, max_width)
    if series.hdf5_chunks and len(series.hdf5_chunks) == 2:
        rows, stored = series.hdf5_chunks
        itemsize = np.dtype(series.dtype).itemsize
        # e.g. data chunked as (all samples, 1 channel): a row of chunks is the whole item's data
        by_cache = max(1, CHUNK_ROW_BUDGET // (rows * stored * itemsize)) * stored
        max_width = min(max_width, by_cache)
        width = min(n_columns, max_width)
        if width < n_columns and max_width >= stored:
            width = (max_width // stored) * stored
    per_item = max(1, int(budget // (width * chunk_bytes)))
    return width, per_item


def _window_layout(series: SeriesPlan, chunk_samples: int, max_item_mb: float, *, min_width: int) -> tuple[int, int]:
    """(window length in grid bins, channel block width) of the series' bundle work items.

    A window proposes as many bins as the chunk runs of :func:`chunk_work_items` have samples; a
    channel block is narrowed until a window of float64 (an upper bound of the bundle shards it
    holds, compressed, until they are complete: an S3 store keeps a shard in memory until it is
    put) fits the budget, but not below ``min_width``. The local pool's store writes shards to
    files as they are made, so there the budget balances load and bounds no memory, and compressed
    data is never cut narrower than one HDF5 chunk (:func:`_whole_chunk_width`): a window cannot
    be shorter than a level-0 shard, and a narrower block decompresses the same chunks again (47-
    and 8-channel blocks of 64-channel gzip chunks: 10.1 s of CPU on the 10 s Neuropixels bundle,
    whole chunks 7.9 s).
    """
    width, per_item = _chunk_layout(series, chunk_samples, max_item_mb)
    budget = max_item_mb * 1024 * 1024
    stored = _stored_width(series)
    n_bins = series_grid(series).n_bins
    length = window_length(n_bins, per_item * chunk_samples, plan_levels(n_bins, series.rate))
    per_channel = length * 8
    if width * per_channel > budget:
        fit = max(1, int(budget // per_channel))
        width = (fit // stored) * stored if fit >= stored else min(series.n_columns, max(fit, min_width))
    return length, width


def _stored_width(series: SeriesPlan) -> int:
    """Columns of one HDF5 chunk (1 for contiguous or 1-D data)."""
    return series.hdf5_chunks[1] if series.hdf5_chunks and len(series.hdf5_chunks) == 2 else 1


def _whole_chunk_width(series: SeriesPlan) -> int:
    """The narrowest channel block that decompresses each stored chunk once: one HDF5 chunk's
    columns for compressed data, else 1."""
    return _stored_width(series) if series.compression else 1


def _segment_chunk_ranges(series: SeriesPlan) -> list[range]:
    """Indices of each segment's chunks (a segment's chunks are consecutive)."""
    ranges = []
    first = 0
    for seg in series.segments:
        count = -(-(seg.stop - seg.start) // series.chunk_samples)
        ranges.append(range(first, first + count))
        first += count
    return ranges


def _channel_blocks(
    series: SeriesPlan, width: int, label: str, first: int, last: int, samples: int, **window: int
) -> list[WorkItem]:
    """The work items of one run of chunks (``first``..``last``): one per block of ``width`` channels."""
    return [
        WorkItem(
            id=f"{'A' if series.bundle_only else ''}{series.index:03d}-{label}-{c0:05d}",
            series=series.index,
            aux=series.bundle_only,
            column_start=c0,
            column_stop=min(series.n_columns, c0 + width),
            chunk_start=first,
            chunk_stop=last,
            samples=samples,
            output_bytes=samples * (min(series.n_columns, c0 + width) - c0) * 8,
            **window,
        )
        for c0 in range(0, series.n_columns, width)
    ]


def item_rows(series: SeriesPlan, item: WorkItem) -> tuple[int, int]:
    """The sample rows ``item`` reads: its chunks', and with the bundle its window's."""
    chunks = series.chunks[item.chunk_start : item.chunk_stop]
    a, b = (chunks[0].start, chunks[-1].stop) if chunks else (series.n_samples, 0)
    if item.window is not None and item.window_bins is not None:
        grid = series_grid(series)
        lo, hi = series_windows(series, item.window_bins).windows[item.window]
        a, b = min(a, grid.first_sample_from(lo)), max(b, grid.first_sample_from(hi))
    return (a, max(a, b))
