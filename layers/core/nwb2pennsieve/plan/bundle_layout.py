"""Pure planning for the viewer bundle: pyramid levels, inner chunks, shards, work-item windows.

No I/O here. Level 0 of a continuous channel is its samples on the sample grid (one bin per
sample period, NaN where there is no data); level k+1 holds one (min, max) bin per 4 bins of
level k. Every shape below follows from the grid length alone, so a plan computed in the Plan
step, in a work item and in the reduce step is the same plan.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

FOLD = 4  # bins of level k folded into one bin of level k+1
MAX_LEVELS = 8  # levels 0..7
MIN_BINS = 1024  # a coarser level is kept only while it holds at least this many whole bins
INNER_CHUNK_BINS = 8192  # the largest inner chunk along time (the smallest unit a reader fetches)
TARGET_SHARD_BYTES = 16 * 1024 * 1024  # one shard object holds whole inner chunks up to about this
FLOAT32_BYTES = 4


def level_count(n_bins0: int, *, max_levels: int = MAX_LEVELS, min_bins: int = MIN_BINS) -> int:
    """How many levels a channel of ``n_bins0`` level-0 bins has (at least 1, at most ``max_levels``).

    Level k >= 1 is kept while ``n_bins0 // 4**k`` (its whole bins; a trailing partial bin does not
    count) is at least ``min_bins``: the rule Pennsieve's own producer uses.
    """
    count = 1
    while count < max_levels and n_bins0 // FOLD**count >= min_bins:
        count += 1
    return count


def level_bins(n_bins0: int, level: int) -> int:
    """Bins of ``level``: ceil(n / 4**level) (a trailing partial block is still a bin)."""
    return -(-n_bins0 // FOLD**level)


@dataclass(frozen=True)
class LevelLayout:
    """One level array of a continuous channel: its shape, inner chunk, shard and period."""

    level: int
    bins: int  # length along time
    chunk_bins: int  # inner chunk length along time
    shard_bins: int  # shard length along time (a whole number of inner chunks)
    period_us: float  # µs one bin spans

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.bins,) if self.level == 0 else (self.bins, 2)

    @property
    def bin_bytes(self) -> int:
        return FLOAT32_BYTES if self.level == 0 else 2 * FLOAT32_BYTES

    @property
    def shard_span(self) -> int:
        """Level-0 bins one shard of this level covers."""
        return self.shard_bins * FOLD**self.level

    @property
    def shard_count(self) -> int:
        return -(-self.bins // self.shard_bins)


def chunk_and_shard_bins(
    bins: int, row_bytes: int, *, inner_chunk_bins: int = INNER_CHUNK_BINS, target_shard_bytes: int = TARGET_SHARD_BYTES
) -> tuple[int, int]:
    """(inner chunk length, shard length) along time for an array of ``bins`` rows of ``row_bytes``.

    The inner chunk is ``inner_chunk_bins`` or the whole array when shorter (at least 1); the shard
    is as many whole inner chunks as fit in ``target_shard_bytes`` (at least one, at most the
    array's chunk count). The same rule as Pennsieve's producer, so shapes agree with its bundles.
    """
    chunk = max(1, min(bins, inner_chunk_bins))
    per_shard = max(1, target_shard_bytes // (chunk * row_bytes))
    chunks_in_array = max(1, -(-bins // chunk))
    return chunk, chunk * min(per_shard, chunks_in_array)


def aligned_shard_bins(level0: LevelLayout, level: int, chunk_bins: int) -> int | None:
    """The shard length of ``level`` that spans exactly one level-0 shard, when there is one.

    Only when level 0 has several shards (else one window holds everything) and ``4**level``
    level-0 bins divide its shard into a whole number of this level's inner chunks: then every
    item window (whole level-0 shards) holds whole shards of this level, and the item writes it.
    """
    if level0.shard_count < 2 or level0.shard_bins % FOLD**level:
        return None
    bins = level0.shard_bins // FOLD**level
    return bins if bins >= chunk_bins and bins % chunk_bins == 0 else None


def plan_levels(
    n_bins0: int,
    rate_hz: float,
    *,
    max_levels: int | None = None,
    min_bins: int | None = None,
    inner_chunk_bins: int | None = None,
    target_shard_bytes: int | None = None,
) -> list[LevelLayout]:
    """The level arrays of a continuous channel of ``n_bins0`` grid bins sampled at ``rate_hz``.

    Level 0's shards, and those of any level too short to be cut, follow
    :func:`chunk_and_shard_bins` (Pennsieve's producer's rule, ~16 MiB). When level 0 has several
    shards, a finer level whose shard can span exactly one level-0 shard in whole inner chunks
    gets that shard (:func:`aligned_shard_bins`: 8, 2, 0.5 and 0.125 MiB for levels 1-4 at the
    default sizes), so the work items write it; only the coarser levels go to the reduce, from
    partial results 1/512 the size of the level-0 data (docs/bundle.md).

    Unset sizes are the module's constants, read at call time (tests shrink them to get many
    shards and windows from a small file).
    """
    max_levels = MAX_LEVELS if max_levels is None else max_levels
    min_bins = MIN_BINS if min_bins is None else min_bins
    inner_chunk_bins = INNER_CHUNK_BINS if inner_chunk_bins is None else inner_chunk_bins
    target_shard_bytes = TARGET_SHARD_BYTES if target_shard_bytes is None else target_shard_bytes
    period0 = 1e6 / rate_hz
    out: list[LevelLayout] = []
    for k in range(level_count(n_bins0, max_levels=max_levels, min_bins=min_bins)):
        bins = level_bins(n_bins0, k)
        chunk, shard = chunk_and_shard_bins(
            bins,
            FLOAT32_BYTES if k == 0 else 2 * FLOAT32_BYTES,
            inner_chunk_bins=inner_chunk_bins,
            target_shard_bytes=target_shard_bytes,
        )
        if k:
            shard = aligned_shard_bins(out[0], k, chunk) or shard
        out.append(LevelLayout(level=k, bins=bins, chunk_bins=chunk, shard_bins=shard, period_us=period0 * FOLD**k))
    return out


@dataclass(frozen=True)
class WindowPlan:
    """How a series' level-0 grid is cut into work-item windows for the bundle.

    ``windows`` are half-open level-0 ranges, in order, covering ``[0, n_bins0)``; each starts on a
    level-0 shard boundary, so no two items ever write the same shard. Levels ``< reduce_from``
    are written by the items themselves (each of their shards lies inside one window); levels
    ``>= reduce_from`` are assembled by the reduce step from the items' level-``reduce_from`` bins.
    ``reduce_from == len(levels)`` means there is nothing to reduce.
    """

    levels: list[LevelLayout]
    windows: list[tuple[int, int]]
    reduce_from: int
    length: int = 0  # the window length (the last window may be shorter): align_windows(n, length) is this plan

    @property
    def item_levels(self) -> list[LevelLayout]:
        return self.levels[: self.reduce_from]

    @property
    def reduce_levels(self) -> list[LevelLayout]:
        return self.levels[self.reduce_from :]


def _level_fits(layout: LevelLayout, windows: list[tuple[int, int]]) -> bool:
    """Every shard of ``layout`` lies inside one window: each inner window boundary is a shard boundary."""
    return all(b % layout.shard_span == 0 for _, b in windows[:-1])


def window_length(n_bins0: int, proposed_bins: int, levels: list[LevelLayout]) -> int:
    """The length of :func:`align_windows`' windows (without listing them: the planner counts them first)."""
    if n_bins0 <= 0:
        return 1
    # A window is whole level-0 shards and whole bins of the coarsest level, so every bin an item
    # folds is complete (only the series' last bin of each level may be partial).
    unit = math.lcm(levels[0].shard_span, FOLD ** (len(levels) - 1))
    return max(1, round(max(proposed_bins, 1) / unit)) * unit


def align_windows(n_bins0: int, proposed_bins: int, levels: list[LevelLayout]) -> WindowPlan:
    """Cut ``[0, n_bins0)`` into item windows of about ``proposed_bins``, aligned to level-0 shards.

    The window length is ``proposed_bins`` rounded to a whole number of level-0 shard spans (at
    least one; also a whole number of coarsest-level bins). A level is written by the items when
    each of its shards falls inside one window; the first level for which that fails, and every
    level above it, goes to the reduce step.
    """
    if n_bins0 <= 0:
        return WindowPlan(levels=levels, windows=[(0, 0)], reduce_from=len(levels), length=1)
    length = window_length(n_bins0, proposed_bins, levels)
    windows = [(a, min(a + length, n_bins0)) for a in range(0, n_bins0, length)]
    reduce_from = len(levels)
    for layout in levels:
        if not _level_fits(layout, windows):
            reduce_from = layout.level
            break
    return WindowPlan(levels=levels, windows=windows, reduce_from=reduce_from, length=length)
