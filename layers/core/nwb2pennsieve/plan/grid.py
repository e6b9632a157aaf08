"""A converted series on the viewer bundle's sample grid (pure: no I/O).

**The grid.** Level 0 of a continuous channel has no time axis: bin ``i`` is at ``start_us + i *
period_us``. A series timed by ``starting_time`` and ``rate`` is one segment: sample ``k`` is bin
``k``. A series with explicit timestamps is cut into segments at its gaps (a step of more than 2
periods, as for the chunk files); each segment starts at its own bin, ``round((t0 - start_us) /
period_us)`` with ``t0`` its first sample's integer-µs time (the chunk files' time), and sample
``k`` of the segment goes to that bin plus ``k``. A segment never starts before the previous one
ends plus one bin, so a gap always shows as at least one NaN bin even when the rate (given, or
estimated from the timestamps by the planner) drifts against the timestamps. Bins between
segments are NaN ("no data"); an inner chunk that is all NaN is never stored.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

from .bundle_layout import WindowPlan, align_windows, plan_levels
from .models import Chunk, SeriesPlan


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
