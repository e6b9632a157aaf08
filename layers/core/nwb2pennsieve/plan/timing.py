"""Sample times, segments and chunks.

Times are integer microseconds since the Unix epoch (UTC). They are computed exactly: the
timestamps reference time (NWB: ``timestamps_reference_time``, which defaults to the session
start) is an exact integer (from its ISO text), and each sample's time relative to it,
in seconds, is rounded to the nearest µs (half to even) before being added. The reference
processor adds float epoch seconds and truncates, which is off by up to ~1 µs; file names and
channel metadata both use the exact rule, so they always agree.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise

import h5py
import numpy as np

from ..errors import InvalidSeriesError
from .models import Segment

TIMESTAMP_BLOCK = 1 << 22  # timestamps are streamed in blocks of 4 Mi samples (32 MiB)
GAP_PERIODS = 2.0  # a step of more than 2 sample periods is a gap
RATE_TOLERANCE = 0.02  # a rate beside timestamps must agree with them within 2 %
RATE_DIGITS = 10  # rates estimated from timestamps are rounded to 10 significant digits
# Sample times must fit int64 µs (file names, metadata); beyond this they would wrap.
MAX_ABS_US = 9.2e18


def _round_us(seconds: np.ndarray | float) -> np.ndarray:
    """Seconds to whole µs (half to even), still as float64 (range-checked before int64)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return np.rint(np.asarray(seconds, dtype=np.float64) * 1e6)


def cut_chunks(segments: list[Segment], chunk_samples: int) -> list[tuple[int, int, int]]:
    """(segment index, start, stop) of every chunk: each segment cut every ``chunk_samples``."""
    out = []
    for s, seg in enumerate(segments):
        for start in range(seg.start, seg.stop, chunk_samples):
            out.append((s, start, min(start + chunk_samples, seg.stop)))
    return out


def _chunk_times(
    segments: list[Segment], chunk_samples: int, reference_us: int, times_of: Callable[[np.ndarray], np.ndarray]
) -> list[tuple[int, int]]:
    """(start_us, end_us) of every chunk; ``times_of`` gives sample times in µs after the reference, rounded."""
    cuts = cut_chunks(segments, chunk_samples)
    firsts = np.array([c[1] for c in cuts], dtype=np.int64)
    lasts = np.array([c[2] - 1 for c in cuts], dtype=np.int64)
    starts = times_of(firsts)
    ends = times_of(lasts)
    _check_range(firsts, starts, reference_us)
    _check_range(lasts, ends, reference_us)
    return [(reference_us + int(t0), reference_us + int(t1)) for t0, t1 in zip(starts, ends, strict=True)]


def _check_range(samples: np.ndarray, times_us: np.ndarray, reference_us: int) -> None:
    """Fail when a time (µs after the reference) is not finite or beyond int64 µs since the epoch."""
    with np.errstate(invalid="ignore", over="ignore"):
        absolute = times_us + float(reference_us)
        bad = ~(np.isfinite(times_us) & (np.abs(times_us) <= MAX_ABS_US) & (np.abs(absolute) <= MAX_ABS_US))
    if bad.any():
        i = int(np.argmax(bad))
        raise InvalidSeriesError(
            f"its time at sample {int(samples[i])} ({float(times_us[i]) / 1e6:g} s after the timestamps reference "
            "time) is beyond what int64 microseconds since 1970 can hold; the file's times are damaged"
        )


def check_rate(rate: float) -> float:
    if not np.isfinite(rate) or rate <= 0:
        raise InvalidSeriesError(f"its sampling rate is {rate} Hz; it must be a positive number")
    return float(rate)


def rate_segments(n: int, starting_time: float, rate: float, reference_us: int) -> list[Segment]:
    """One segment: sample k is at ``starting_time + k / rate`` seconds after the reference time.

    Chunk times are computed when needed (:meth:`~nwb2pennsieve.plan.models.SeriesPlan.sample_us`), so
    this takes the same time for 10 samples as for 10^12; times grow with k, so checking the first
    and the last sample checks them all.
    """
    if not np.isfinite(starting_time):
        raise InvalidSeriesError(f"its starting_time is {starting_time}")
    ends = np.array([0, n - 1], dtype=np.int64)
    with np.errstate(over="ignore", invalid="ignore"):
        times = np.rint(starting_time * 1e6 + (ends.astype(np.float64) * 1e6) / rate)
    _check_range(ends, times, reference_us)
    return [Segment(start=0, stop=n)]


def timestamp_chunks(
    timestamps: h5py.Dataset, n: int, given_rate: float | None, reference_us: int, chunk_samples: int
) -> tuple[float, list[Segment], list[tuple[int, int]]]:
    """Validate explicit timestamps, find the gaps, and time every chunk: (rate, segments, chunk times).

    Timestamps are streamed in blocks, so memory does not grow with the series' length. The rate
    is ``given_rate`` when the file gives one (checked against the timestamps), else estimated
    over the longest gap-free segment, first to last sample in float64, rounded to 10 significant
    digits. (The median step is used only to find the gaps: with float32 timestamps each step is
    rounded to the float32 spacing, which can put the median tens of ppm or more off.)
    """
    if timestamps.ndim != 1 or timestamps.shape[0] != n:
        raise InvalidSeriesError(f"it has {timestamps.shape[0] if timestamps.ndim else 0} timestamps for {n} samples")
    first_block = _read(timestamps, 0, min(n, TIMESTAMP_BLOCK))
    rate = given_rate if given_rate is not None else _rough_rate(first_block)
    gap_starts = _gap_starts(timestamps, n, first_block, GAP_PERIODS / rate if rate > 0 else np.inf)
    if rate <= 0:
        raise InvalidSeriesError("its timestamps give no sampling rate")

    bounds = [0, *gap_starts, n]
    segments = [Segment(start=a, stop=b) for a, b in pairwise(bounds)]
    estimated = _span_rate(timestamps, segments, first_block)
    if estimated is not None:
        if given_rate is not None and abs(1.0 - given_rate / estimated) >= RATE_TOLERANCE:
            raise InvalidSeriesError(f"its rate {given_rate:g} Hz disagrees with its timestamps ({estimated:g} Hz)")
        if given_rate is None:
            rate = estimated

    def times_of(k: np.ndarray) -> np.ndarray:
        return _round_us(_gather(timestamps, k, first_block))

    return rate, segments, _chunk_times(segments, chunk_samples, reference_us, times_of)


def _rough_rate(first_block: np.ndarray) -> float:
    """1 / the median step of the first block: only to find the gaps (0 when a step is <= 0, which
    the ordering check reports)."""
    steps = np.diff(first_block)
    if steps.size == 0:
        raise InvalidSeriesError("it has a single sample with timestamps and no rate, so no sampling rate")
    median = float(np.median(steps))
    return 1.0 / median if median > 0 else 0.0


def _gap_starts(timestamps: h5py.Dataset, n: int, first_block: np.ndarray, gap_step: float) -> list[int]:
    """The first sample after every step longer than ``gap_step``, streaming the timestamps in
    blocks; a timestamp that is not finite, repeats or goes backwards fails the series."""
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
    return gap_starts


def _span_rate(timestamps: h5py.Dataset, segments: list[Segment], first_block: np.ndarray) -> float | None:
    """(samples - 1) / duration of the longest segment, rounded to 10 digits; None if no segment has 2 samples.

    Each timestamp's own rounding (float32: up to half its spacing) is spread over the whole
    segment instead of one step, so the estimate is as good as the segment is long.
    """
    longest = max(segments, key=lambda g: g.stop - g.start)
    if longest.stop - longest.start < 2:
        return None
    first, last = _gather(timestamps, np.array([longest.start, longest.stop - 1]), first_block)
    duration = float(last) - float(first)
    if not (duration > 0 and np.isfinite(duration)):
        return None
    return float(f"{(longest.stop - longest.start - 1) / duration:.{RATE_DIGITS}g}")


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
