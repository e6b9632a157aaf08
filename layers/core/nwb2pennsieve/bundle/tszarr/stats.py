"""The TS-Zarr fold: level k+1 from level k, in blocks of 4 bins along time, for many channels side by side.

A bin of level k holds four statistics of the level-0 samples it covers (its *support*: 4**k
samples, fewer only for the series' last bin): min, max, the float64 sum and the count of finite
samples. Everything propagates NaN: one NaN sample makes its bins' min, max, sum (so mean) NaN,
the format's rule (a NaN-aware mean would mix time supports across channels). Written, a level's
``env`` is (min, max), its ``mean`` the sum over the support (float32: one rounding of a float64
sum, exact for a sum of 4 float32 unless their exponents differ by more than 29 bits), its
``valid`` the count.

**Lazy counts.** ``valid`` None means "every sample of every bin is finite" (count = support). A
channel with no non-finite sample then costs one ``isfinite`` pass over the level-1 sums, never
a count array; counts are made only for pieces that hold a non-finite value.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...plan.bundle_layout import FOLD
from ..fold import fold4

COUNT = np.uint16  # valid counts: at most 4**7 = 16,384 samples a bin


@dataclass(frozen=True)
class Bins:
    """Bins ``[start, start + n)`` of one level, ``(n, channels)`` each.

    At level 0 ``lo`` is ``hi`` is ``sums`` (the samples, float32) and ``valid`` is None (unknown).
    """

    start: int
    lo: np.ndarray  # float32
    hi: np.ndarray  # float32
    sums: np.ndarray  # float64 (float32 samples at level 0)
    valid: np.ndarray | None  # uint16, or None: every sample finite

    def __len__(self) -> int:
        return int(self.lo.shape[0])

    def take(self, a: int, b: int) -> Bins:
        """Rows ``[a, b)`` (views)."""
        valid = None if self.valid is None else self.valid[a:b]
        level0 = self.lo is self.sums
        lo = self.lo[a:b]
        return Bins(self.start + a, lo, lo if level0 else self.hi[a:b], lo if level0 else self.sums[a:b], valid)

    def copy(self) -> Bins:
        """A copy (a slab may be its producer's reused buffer)."""
        if self.lo is self.sums:
            kept = self.lo.copy()
            return Bins(self.start, kept, kept, kept, None)
        valid = None if self.valid is None else self.valid.copy()
        return Bins(self.start, self.lo.copy(), self.hi.copy(), self.sums.copy(), valid)


def supports(level: int, start: int, n: int, n_bins0: int) -> np.ndarray:
    """The support (level-0 samples) of bins ``[start, start + n)`` of ``level``: 4**level, less for the last."""
    size = FOLD**level
    first = np.arange(start, start + n, dtype=np.int64) * size
    return np.minimum(size, n_bins0 - first).astype(COUNT)


def full_counts(bins: Bins, level: int, n_bins0: int) -> np.ndarray:
    """``bins.valid``, made: the support of each bin when it is None."""
    if bins.valid is not None:
        return bins.valid
    column = supports(level, bins.start, len(bins), n_bins0)[:, None]
    return np.broadcast_to(column, bins.lo.shape).astype(COUNT)


def concat(parts: list[Bins], level: int, n_bins0: int) -> Bins:
    """Consecutive pieces of one level as one."""
    if len(parts) == 1:
        return parts[0]
    lo = np.concatenate([p.lo for p in parts])
    if parts[0].lo is parts[0].sums:
        return Bins(parts[0].start, lo, lo, lo, None)
    valid = None
    if any(p.valid is not None for p in parts):
        valid = np.concatenate([full_counts(p, level, n_bins0) for p in parts])
    return Bins(
        parts[0].start,
        lo,
        np.concatenate([p.hi for p in parts]),
        np.concatenate([p.sums for p in parts]),
        valid,
    )


def fold(bins: Bins, level: int, n_bins0: int, *, counts: bool) -> Bins:
    """Level ``level + 1`` from ``4 m`` whole bins of ``level`` (``counts``: keep valid counts)."""
    m = len(bins) // FOLD
    width = bins.lo.shape[1:]
    lo = np.empty((m, *width), dtype=np.float32)
    hi = np.empty((m, *width), dtype=np.float32)
    fold4(np.minimum, bins.lo, lo)
    fold4(np.maximum, bins.hi, hi)
    blocks = bins.sums.reshape(m, FOLD, *width)
    sums = np.add(blocks[:, 0], blocks[:, 1], dtype=np.float64)
    np.add(sums, blocks[:, 2], out=sums)
    np.add(sums, blocks[:, 3], out=sums)
    valid = None
    if counts:
        if level == 0:
            if not np.isfinite(sums).all():  # a non-finite sample somewhere: count them
                finite = np.isfinite(bins.sums).reshape(m, FOLD, *width)
                valid = finite.sum(axis=1, dtype=COUNT)
        elif bins.valid is not None:
            valid = bins.valid.reshape(m, FOLD, *width).sum(axis=1, dtype=COUNT)
    return Bins(bins.start // FOLD, lo, hi, sums, valid)


def fold_tail(bins: Bins, level: int, n_bins0: int, *, counts: bool) -> Bins:
    """The series' last bin of ``level + 1`` from its 1-3 trailing bins of ``level``."""
    lo = bins.lo.min(axis=0, keepdims=True)
    hi = bins.hi.max(axis=0, keepdims=True)
    sums = bins.sums.astype(np.float64).sum(axis=0, keepdims=True)
    valid = None
    if counts:
        if level == 0:
            finite = np.isfinite(bins.sums)
            valid = None if finite.all() else finite.sum(axis=0, keepdims=True, dtype=COUNT)
        elif bins.valid is not None:
            valid = full_counts(bins, level, n_bins0).sum(axis=0, keepdims=True, dtype=COUNT)
    return Bins(bins.start // FOLD, lo, hi, sums, valid)


def means(bins: Bins, level: int, n_bins0: int) -> np.ndarray:
    """The bins' means, float32: each sum over its support (a power of 4, so exact but the last bin)."""
    size = FOLD**level
    out = np.empty(bins.sums.shape, dtype=np.float32)
    if (bins.start + len(bins)) * size <= n_bins0:  # the float64 product rounded once, as it is stored
        return np.multiply(bins.sums, 1.0 / size, out=out, casting="unsafe")
    np.divide(bins.sums, supports(level, bins.start, len(bins), n_bins0)[:, None], out=out, casting="unsafe")
    return out
