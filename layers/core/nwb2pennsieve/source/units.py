"""Reading every NWB ``Units`` table with h5py (``/units`` and each processing module's), for unit channels.

A table's ragged ``spike_times`` (seconds after ``timestamps_reference_time``) are split per unit by
``spike_times_index``; each time becomes integer µs since the epoch by the chunk files' rule
(reference µs + the time rounded to whole µs, half to even). ``waveform_mean`` is ``(units,
points)``, or ``(units, points, electrodes)``, of which each unit keeps the electrode with the
largest peak-to-peak mean (the format has one waveform per event). Its ``sampling_rate``
attribute, when present, is the waveforms' rate.
"""

from __future__ import annotations

from dataclasses import dataclass

import h5py
import numpy as np

from ..errors import InvalidSeriesError
from .nwb import neurodata_type, read_attr

UNITS_TYPE = "Units"
MAX_SECONDS = 9.2e12  # times beyond this many seconds do not fit int64 µs


@dataclass(frozen=True)
class UnitsTable:
    """One ``Units`` table: per unit (row), its spike times in absolute µs, and its mean waveform."""

    name: str
    spike_times_us: list[np.ndarray]  # int64, one array per unit
    waveform_means: np.ndarray | None  # float32 (units, points), or None


@dataclass(frozen=True)
class FoundUnits:
    path: str
    table: UnitsTable
    waveform_rate: float | None


def _is_units(obj: object, path: str) -> bool:
    if not isinstance(obj, h5py.Group):
        return False
    try:
        return neurodata_type(obj) == UNITS_TYPE
    except InvalidSeriesError as exc:  # an unreadable type is not "not a Units table"
        exc.series = path
        raise


def units_paths(h5: h5py.File) -> list[str]:
    """``/units`` (when it is a Units table), then every Units table directly inside a processing module."""
    paths = []
    if "units" in h5 and _is_units(h5["units"], "/units"):
        paths.append("/units")
    processing = h5.get("processing")
    if isinstance(processing, h5py.Group):
        for module in sorted(processing):
            group = processing[module]
            if isinstance(group, h5py.Group):
                paths.extend(
                    f"/processing/{module}/{name}"
                    for name in sorted(group)
                    if _is_units(group[name], f"/processing/{module}/{name}")
                )
    return paths


def read_units(h5: h5py.File, reference_us: int) -> list[FoundUnits]:
    """Every Units table with spike times; a damaged table is an :class:`InvalidSeriesError` naming it."""
    out = []
    for path in units_paths(h5):
        group = h5[path]
        if "spike_times" not in group:
            continue
        try:
            out.append(_read_table(path, group, reference_us))
        except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
            raise InvalidSeriesError(f"its spike times cannot be read ({exc})", series=path) from None
    return out


def spike_times_us(path: str, group: h5py.Group, reference_us: int) -> list[np.ndarray]:
    """Each unit's spike times (a row of the ragged ``spike_times``) as int64 µs since the epoch."""
    times = np.asarray(group["spike_times"][()], dtype=np.float64).reshape(-1)
    if "spike_times_index" in group:
        ends = np.asarray(group["spike_times_index"][()], dtype=np.int64).reshape(-1)
    else:
        ends = np.array([times.shape[0]], dtype=np.int64)
    if ends.size and (np.any(np.diff(ends) < 0) or ends[-1] > times.shape[0] or ends[0] < 0):
        raise InvalidSeriesError("its spike_times_index is not ascending within spike_times", series=path)
    if not np.all(np.isfinite(times)):
        raise InvalidSeriesError("its spike_times hold a non-finite time", series=path)
    if times.size and float(np.max(np.abs(times))) > MAX_SECONDS:
        raise InvalidSeriesError("its spike_times go beyond what int64 µs can hold", series=path)
    us = reference_us + np.rint(times * 1e6).astype(np.int64)
    starts = np.concatenate([[0], ends[:-1]]) if ends.size else ends
    return [us[a:b] for a, b in zip(starts.tolist(), ends.tolist(), strict=True)]


def best_electrodes(means: np.ndarray) -> np.ndarray | None:
    """For ``(units, points, electrodes)`` means, each unit's electrode of largest peak-to-peak."""
    if means.ndim != 3:
        return None
    return np.argmax(np.nanmax(means, axis=1) - np.nanmin(means, axis=1), axis=1)


def _read_table(path: str, group: h5py.Group, reference_us: int) -> FoundUnits:
    spikes = spike_times_us(path, group, reference_us)
    means = None
    rate = None
    if "waveform_mean" in group:
        ds = group["waveform_mean"]
        raw = np.asarray(ds[()], dtype=np.float32)
        best = best_electrodes(raw)
        if best is not None:
            raw = raw[np.arange(raw.shape[0]), :, best]
        means = raw.reshape(raw.shape[0], -1) if raw.shape[0] == len(spikes) else None
        rate = positive_attr(ds, "sampling_rate")
    name = path.rsplit("/", 1)[-1] if path == "/units" else path.removeprefix("/processing/")
    return FoundUnits(
        path=path, table=UnitsTable(name=name, spike_times_us=spikes, waveform_means=means), waveform_rate=rate
    )


def positive_attr(ds: h5py.Dataset, key: str) -> float | None:
    """A positive finite number attribute of ``ds`` (None when absent or not one; unreadable:
    :class:`InvalidSeriesError`)."""
    given = read_attr(ds, key)
    if given is None:
        return None
    try:
        value = float(np.asarray(given).reshape(-1)[0])
    except (TypeError, ValueError, IndexError):
        return None
    return value if np.isfinite(value) and value > 0 else None
