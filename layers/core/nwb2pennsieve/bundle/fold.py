"""The min/max fold: level k+1 from level k, exact, in blocks of 4 along time (axis 0).

Plain ``min``/``max`` (not NaN-aware), so a NaN ("no data") in a block makes that bin NaN. A
trailing partial block of 1-3 bins is still a bin. Works on one channel or many side by side:
level 0 is ``(n,)`` or ``(n, channels)``; a folded level is ``(bins, 2)`` or ``(bins, channels, 2)``,
the last axis holding (min, max). All float32, vectorised.
"""

from __future__ import annotations

import numpy as np

from ..plan.bundle_layout import FOLD


def padded(x: np.ndarray) -> np.ndarray:
    """``x`` with a trailing partial block of 4 rows completed by repeating its own last row.

    Repeating a row of the block does not change its min or max, and a NaN still propagates.
    """
    pad = -x.shape[0] % FOLD
    return np.concatenate([x, np.repeat(x[-1:], pad, axis=0)], axis=0) if pad else x


def _blocks(x: np.ndarray) -> np.ndarray:
    """``x`` reshaped to (blocks, 4, ...), a trailing partial block :func:`padded`."""
    x = padded(x)
    return x.reshape((x.shape[0] // FOLD, FOLD, *x.shape[1:]))


def _reduce4(ufunc: np.ufunc, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``ufunc`` (``np.minimum`` or ``np.maximum``) over axis 1 (4 long) of ``b``, as three
    element-wise passes (into ``out`` when given).

    Same values as ``b.min(axis=1)`` / ``b.max(axis=1)`` (NaN propagates either way), and fast
    whatever the memory order: the writer's slabs are channel-major, where a reduction over a
    short middle axis is slow.
    """
    out = ufunc(b[:, 0], b[:, 1], out=out)
    ufunc(out, b[:, 2], out=out)
    return ufunc(out, b[:, 3], out=out)


def _min4(b: np.ndarray) -> np.ndarray:
    return _reduce4(np.minimum, b)


def _max4(b: np.ndarray) -> np.ndarray:
    return _reduce4(np.maximum, b)


def fold4(ufunc: np.ufunc, x: np.ndarray, out: np.ndarray) -> None:
    """``out`` ← ``ufunc`` (``np.minimum`` or ``np.maximum``) over each block of 4 rows of ``x``
    (``4 × len(out)`` rows), written in place (:func:`_reduce4`).

    On row-major ``(bins, channels)`` data every pass runs over contiguous rows of channels: the
    item writer folds its levels this way, min and max kept apart (a level ``k >= 1`` is a pair
    of such arrays), so no pass strides and no (min, max) pairs are stacked.
    """
    _reduce4(ufunc, x.reshape(out.shape[0], FOLD, *x.shape[1:]), out)


def fold_samples(samples: np.ndarray) -> np.ndarray:
    """Level 1 from level 0: (min, max) of each block of 4 samples; shape (ceil(n/4), ..., 2)."""
    x = np.asarray(samples, dtype=np.float32)
    if x.shape[0] == 0:
        return np.empty((0, *x.shape[1:], 2), dtype=np.float32)
    b = _blocks(x)
    return np.stack([_min4(b), _max4(b)], axis=-1)


def fold_pairs(pairs: np.ndarray) -> np.ndarray:
    """Level k+1 from level k >= 1: min of the 4 mins, max of the 4 maxes."""
    x = np.asarray(pairs, dtype=np.float32)
    if x.shape[0] == 0:
        return x.copy()
    b = _blocks(x)
    return np.stack([_min4(b[..., 0]), _max4(b[..., 1])], axis=-1)


def fold_level(data: np.ndarray, level: int) -> np.ndarray:
    """Fold ``data``, which holds bins of ``level``, into bins of ``level + 1``."""
    return fold_samples(data) if level == 0 else fold_pairs(data)


def pyramid(samples: np.ndarray, levels: int) -> list[np.ndarray]:
    """Levels 0..levels-1 of ``samples`` (level 0 is ``samples`` as float32)."""
    out = [np.asarray(samples, dtype=np.float32)]
    for k in range(1, levels):
        out.append(fold_level(out[-1], k - 1))
    return out
