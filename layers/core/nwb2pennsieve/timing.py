"""Sample times, segments and chunks.

Times are integer microseconds since the Unix epoch (UTC). They are computed exactly: the
session start is an exact integer (from its ISO text), and each sample's time relative to it,
in seconds, is rounded to the nearest µs (half to even) before being added. The reference
processor adds float epoch seconds and truncates, which is off by up to ~1 µs; file names and
channel metadata both use the exact rule, so they always agree.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise

import h5py
import numpy as np

from .errors import InvalidSeriesError
from .models import Chunk, Segment

TIMESTAMP_BLOCK = 1 << 22  # timestamps are streamed in blocks of 4 Mi samples (32 MiB)
GAP_PERIODS = 2.0  # a step of more than 2 sample periods is a gap
RATE_TOLERANCE = 0.02  # a rate beside timestamps must agree with them within 2 %
RATE_DIGITS = 10  # rates estimated from timestamps are rounded to 10 significant digits


def _round_us(seconds: np.ndarray | float) -> np.ndarray:
    return np.rint(np.asarray(seconds, dtype=np.float64) * 1e6).astype(np.int64)


def cut_chunks(segments: list[Segment], chunk_samples: int) -> list[tuple[int, int, int]]:
    """(segment index, start, stop) of every chunk: each segment cut every ``chunk_samples``."""
    out = []
    for s, seg in enumerate(segments):
        for start in range(seg.start, seg.stop, chunk_samples):
            out.append((s, start, min(start + chunk_samples, seg.stop)))
    return out


def _chunks(
    segments: list[Segment], chunk_samples: int, session_us: int, times_of: Callable[[np.ndarray], np.ndarray]
) -> list[Chunk]:
    cuts = cut_chunks(segments, chunk_samples)
    firsts = np.array([c[1] for c in cuts], dtype=np.int64)
    lasts = np.array([c[2] - 1 for c in cuts], dtype=np.int64)
    starts = times_of(firsts)
    ends = times_of(lasts)
    return [
        Chunk(segment=s, start=a, stop=b, start_us=session_us + int(t0), end_us=session_us + int(t1))
        for (s, a, b), t0, t1 in zip(cuts, starts, ends, strict=True)
    ]


def check_rate(rate: float) -> float:
    if not np.isfinite(rate) or rate <= 0:
        raise InvalidSeriesError(f"its sampling rate is {rate} Hz; it must be a positive number")
    return float(rate)


def rate_chunks(
    n: int, starting_time: float, rate: float, session_us: int, chunk_samples: int
) -> tuple[list[Segment], list[Chunk]]:
    """One segment: sample k is at ``starting_time + k / rate`` seconds after the session start."""
    if not np.isfinite(starting_time):
        raise InvalidSeriesError(f"its starting_time is {starting_time}")
    segments = [Segment(start=0, stop=n)]

    def times_of(k: np.ndarray) -> np.ndarray:
        return np.rint(starting_time * 1e6 + (k.astype(np.float64) * 1e6) / rate).astype(np.int64)

    return segments, _chunks(segments, chunk_samples, session_us, times_of)


def timestamp_chunks(
    timestamps: h5py.Dataset, n: int, given_rate: float | None, session_us: int, chunk_samples: int
) -> tuple[float, list[Segment], list[Chunk]]:
    """Validate explicit timestamps, find the gaps, and time every chunk.

    Timestamps are streamed in blocks, so memory does not grow with the series' length. The rate
    is ``given_rate`` when the file gives one (checked against the timestamps), else 1 / the median
    step of the first block, rounded to 10 significant digits.
    """
    if timestamps.ndim != 1 or timestamps.shape[0] != n:
        raise InvalidSeriesError(f"it has {timestamps.shape[0] if timestamps.ndim else 0} timestamps for {n} samples")
    first_block = _read(timestamps, 0, min(n, TIMESTAMP_BLOCK))
    steps = np.diff(first_block)
    if steps.size == 0:
        if given_rate is None:
            raise InvalidSeriesError("it has a single sample with timestamps and no rate, so no sampling rate")
        rate = given_rate
    else:
        median = float(np.median(steps))
        if median > 0:
            estimated = float(f"{1.0 / median:.{RATE_DIGITS}g}")
            if given_rate is not None and abs(1.0 - given_rate / estimated) >= RATE_TOLERANCE:
                raise InvalidSeriesError(f"its rate {given_rate:g} Hz disagrees with its timestamps ({estimated:g} Hz)")
            rate = given_rate if given_rate is not None else estimated
        else:
            rate = given_rate or 0.0  # the ordering check below reports the real problem
    gap_step = GAP_PERIODS / rate if rate > 0 else np.inf

    gap_starts: list[int] = []
    previous: float | None = None
    for b0 in range(0, n, TIMESTAMP_BLOCK):
        block = first_block if b0 == 0 else _read(timestamps, b0, min(n, b0 + TIMESTAMP_BLOCK))
        bad = ~np.isfinite(block)
        if bad.any():
            i = int(np.argmax(bad))
            raise InvalidSeriesError(f"timestamp {b0 + i} is {float(block[i])}")
        joined = block if previous is None else np.concatenate(([previous], block))
        first_index = b0 + 1 if previous is None else b0  # sample index of steps[0]
        steps = np.diff(joined)
        nonpositive = steps <= 0
        if nonpositive.any():
            i = int(np.argmax(nonpositive))
            k = first_index + i
            what = "repeat" if steps[i] == 0 else "go backwards"
            raise InvalidSeriesError(
                f"its timestamps {what} at sample {k} ({float(joined[i])!r} s, then {float(joined[i + 1])!r} s)"
            )
        gap_starts.extend((np.flatnonzero(steps > gap_step) + first_index).tolist())
        previous = float(block[-1])
    if rate <= 0:
        raise InvalidSeriesError("its timestamps give no sampling rate")

    bounds = [0, *gap_starts, n]
    segments = [Segment(start=a, stop=b) for a, b in pairwise(bounds)]

    def times_of(k: np.ndarray) -> np.ndarray:
        return _round_us(_gather(timestamps, k, first_block))

    return rate, segments, _chunks(segments, chunk_samples, session_us, times_of)


def _read(ds: h5py.Dataset, start: int, stop: int) -> np.ndarray:
    return np.asarray(ds[start:stop], dtype=np.float64)


def _gather(ds: h5py.Dataset, indices: np.ndarray, first_block: np.ndarray) -> np.ndarray:
    """ds[indices] for sorted-or-not indices, a block at a time (values in the first block are reused)."""
    out = np.empty(indices.shape, dtype=np.float64)
    in_first = indices < first_block.shape[0]
    out[in_first] = first_block[indices[in_first]]
    rest = np.flatnonzero(~in_first)
    if rest.size:
        blocks = indices[rest] // TIMESTAMP_BLOCK
        for b in np.unique(blocks):
            sel = rest[blocks == b]
            b0 = int(b) * TIMESTAMP_BLOCK
            block = _read(ds, b0, min(ds.shape[0], b0 + TIMESTAMP_BLOCK))
            out[sel] = block[indices[sel] - b0]
    return out
