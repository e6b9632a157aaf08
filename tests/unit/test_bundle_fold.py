"""The min/max fold against a plain Python loop, NaN propagation, and folding split across items."""

from __future__ import annotations

import itertools
import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from nwb2pennsieve.bundle import fold_pairs, fold_samples, pyramid


def loop_fold(values: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Level k+1 from level k, one block of up to 4 (min, max) pairs at a time; any NaN -> NaN."""
    out = []
    for i in range(0, len(values), 4):
        block = values[i : i + 4]
        lows = [lo for lo, _ in block]
        highs = [hi for _, hi in block]
        lo = math.nan if any(math.isnan(v) for v in lows) else min(lows)
        hi = math.nan if any(math.isnan(v) for v in highs) else max(highs)
        out.append((lo, hi))
    return out


def loop_pyramid(samples: list[float], levels: int) -> list[list[tuple[float, float]]]:
    current = [(v, v) for v in samples]
    out = []
    for _ in range(1, levels):
        current = loop_fold(current)
        out.append(current)
    return out


floats = st.floats(-1e6, 1e6, width=32) | st.just(math.nan)


@settings(max_examples=200, deadline=None)
@given(samples=st.lists(floats, min_size=1, max_size=300))
def test_fold_equals_a_plain_loop(samples: list[float]) -> None:
    ours = pyramid(np.array(samples, dtype=np.float32), 5)
    for level, expected in enumerate(loop_pyramid(samples, 5), start=1):
        np.testing.assert_array_equal(ours[level], np.array(expected, dtype=np.float32).reshape(-1, 2))


def test_nan_propagates_and_a_trailing_block_is_a_bin() -> None:
    x = np.array([1, 2, np.nan, 4, 5, 6, 7, 8, -9], dtype=np.float32)
    level1 = fold_samples(x)
    assert level1.shape == (3, 2)
    assert np.isnan(level1[0]).all()
    np.testing.assert_array_equal(level1[1:], [[5, 8], [-9, -9]])
    level2 = fold_pairs(level1)
    assert level2.shape == (1, 2) and np.isnan(level2).all()


def test_channels_side_by_side_fold_like_each_alone() -> None:
    rng = np.random.default_rng(1)
    block = rng.normal(size=(1001, 3)).astype(np.float32)
    together = fold_pairs(fold_samples(block))
    for c in range(3):
        np.testing.assert_array_equal(together[:, c], fold_pairs(fold_samples(block[:, c])))


@settings(max_examples=100, deadline=None)
@given(
    data=hnp.arrays(np.float32, st.integers(1, 5000), elements=st.floats(-100, 100, width=32)),
    cuts=st.lists(st.integers(1, 40), max_size=6),
)
def test_folding_windows_then_joining_equals_one_pass(data: np.ndarray, cuts: list[int]) -> None:
    """Windows of whole level-2 blocks (16 samples) folded apart, then joined and folded on: the same."""
    bounds = sorted({min(len(data), 16 * sum(cuts[: i + 1])) for i in range(len(cuts))} | {0, len(data)})
    parts = [fold_pairs(fold_samples(data[a:b])) for a, b in itertools.pairwise(bounds)]
    joined = np.concatenate(parts)
    one_pass = pyramid(data, 5)
    np.testing.assert_array_equal(joined, one_pass[2])
    np.testing.assert_array_equal(fold_pairs(fold_pairs(joined)), one_pass[4])


def test_channel_major_slabs_fold_like_row_major_ones() -> None:
    """The writer feeds (rows, channels) views of channel-major data: same values either way."""
    rng = np.random.default_rng(2)
    channel_major = rng.normal(size=(5, 1003)).astype(np.float32)
    channel_major[1, 17] = np.nan
    rows = channel_major.T
    assert not rows.flags.c_contiguous
    np.testing.assert_array_equal(fold_samples(rows), fold_samples(np.ascontiguousarray(rows)))
    level1 = fold_samples(rows)
    np.testing.assert_array_equal(fold_pairs(level1), fold_pairs(np.ascontiguousarray(level1)))
