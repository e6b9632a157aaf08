"""A ``Units`` table as the TS-Zarr bundle's unit channel reads it: every unit's spike times, its
id (the label names), its mean waveform (the templates) and each spike's own waveform.

- **Templates**: ``waveform_mean``, ``(units, points)``; ``(units, points, electrodes)`` keeps each
  unit's electrode of largest peak-to-peak mean.
- **Waveforms**: the ``waveforms`` column, ragged twice in NWB: ``waveforms_index`` ends each
  spike's rows (one row per electrode), ``waveforms_index_index`` ends each unit's spikes. A spike
  keeps the row of its unit's template electrode (its first row when there is no 3-D mean). A unit
  whose waveform rows do not match its spikes has none (its spikes' rows are NaN).
- **Amplitudes** are scaled to µV from the dataset's ``unit`` (NWB's default for these columns is
  volts); a unit outside the volts family is kept as stored.
- **Waveform rate**: the ``sampling_rate`` attribute of ``waveforms``, else of ``waveform_mean``,
  else a ``sampling_rate`` column holding one positive value (DANDI 000009 has one); else the
  caller's (the first ElectricalSeries' rate).
"""

from __future__ import annotations

from dataclasses import dataclass

import h5py
import numpy as np

from ..errors import InvalidSeriesError
from .annotations import time_range
from .nwb import read_attr, text, unit_factor
from .units import best_electrodes, positive_attr, spike_times_us


@dataclass(frozen=True)
class UnitsSurvey:
    """A Units table's size and time range, read without its waveforms."""

    units: int
    spikes: int
    first_us: int | None
    last_us: int | None
    templates: bool
    waveforms: bool
    rate: float | None
    rate_from: str


@dataclass(frozen=True)
class UnitsData:
    """A Units table as read: per unit (row) its id, spike times (µs since the epoch), template and waveforms."""

    ids: list[str]
    spike_times_us: list[np.ndarray]  # int64, one array per unit
    templates: np.ndarray | None  # float32 (units, points), µV
    waveforms: list[np.ndarray | None] | None  # per unit float32 (spikes, points), µV; None: the unit has none


def _dataset(group: h5py.Group, name: str) -> h5py.Dataset | None:
    obj = group.get(name)
    return obj if isinstance(obj, h5py.Dataset) else None


def waveform_rate(group: h5py.Group) -> tuple[float | None, str]:
    """The waveforms' sample rate and where it comes from (None: the file gives none)."""
    for name in ("waveforms", "waveform_mean"):
        ds = _dataset(group, name)
        rate = positive_attr(ds, "sampling_rate") if ds is not None else None
        if rate is not None:
            return rate, f"{name}.sampling_rate"
    column = _dataset(group, "sampling_rate")
    if column is not None and column.ndim == 1 and column.shape[0] and column.dtype.kind in "iuf":
        values = np.unique(np.asarray(column[()], dtype=np.float64))
        if values.size == 1 and np.isfinite(values[0]) and values[0] > 0:
            return float(values[0]), "the sampling_rate column"
    return None, ""


def survey_units(path: str, group: h5py.Group, reference_us: int) -> UnitsSurvey:
    """Shapes and the time range (spike times read in blocks); raises :class:`InvalidSeriesError`."""
    times = _dataset(group, "spike_times")
    if times is None or times.ndim != 1:
        raise InvalidSeriesError("it has no spike_times")
    index = _dataset(group, "spike_times_index")
    units = int(index.shape[0]) if index is not None else 1
    span = time_range(times, reference_us, "spike times") if times.shape[0] else None
    rate, rate_from = waveform_rate(group)
    return UnitsSurvey(
        units=units,
        spikes=int(times.shape[0]),
        first_us=span[0] if span else None,
        last_us=span[1] if span else None,
        templates=_dataset(group, "waveform_mean") is not None,
        waveforms=_dataset(group, "waveforms") is not None,
        rate=rate,
        rate_from=rate_from,
    )


def _scale(ds: h5py.Dataset) -> float:
    """µV per stored unit of a waveform dataset (volts when it names none, NWB's default)."""
    factor = unit_factor(text(read_attr(ds, "unit") or "volts") or "volts")
    return 1.0 if factor is None else factor


def read_units(path: str, group: h5py.Group, reference_us: int) -> UnitsData:
    """The whole table; a damaged one is an :class:`InvalidSeriesError` naming it."""
    try:
        spikes = spike_times_us(path, group, reference_us)
        ids_ds = _dataset(group, "id")
        ids = [text(v) for v in ids_ds[()]] if ids_ds is not None else []
        if len(ids) != len(spikes):
            ids = [str(i) for i in range(len(spikes))]
        templates, best = _templates(group, len(spikes))
        waveforms = _waveforms(group, spikes, best)
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise InvalidSeriesError(f"it cannot be read ({exc})", series=path) from None
    return UnitsData(ids=ids, spike_times_us=spikes, templates=templates, waveforms=waveforms)


def _templates(group: h5py.Group, n_units: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    ds = _dataset(group, "waveform_mean")
    if ds is None or ds.ndim not in (2, 3) or ds.shape[0] != n_units:
        return None, None
    raw = np.asarray(ds[()], dtype=np.float64)
    best = best_electrodes(raw)
    if best is not None:
        raw = raw[np.arange(n_units), :, best]
    return (raw * _scale(ds)).astype(np.float32), best


def _waveforms(group: h5py.Group, spikes: list[np.ndarray], best: np.ndarray | None) -> list[np.ndarray | None] | None:
    """Each unit's spikes' waveforms (one row per spike), or None when the table has none."""
    ds = _dataset(group, "waveforms")
    if ds is None or ds.ndim != 2 or not ds.shape[0]:
        return None
    rows = np.asarray(ds[()], dtype=np.float64) * _scale(ds)
    per_spike = _index(group, "waveforms_index")  # spike -> end row
    per_unit = _index(group, "waveforms_index_index")  # unit -> end spike
    if per_spike is None:  # one row per spike, units in order
        per_spike = np.arange(1, rows.shape[0] + 1)
    if per_unit is None:
        per_unit = np.cumsum([s.shape[0] for s in spikes])
    out: list[np.ndarray | None] = []
    first_spike = 0
    for u, times in enumerate(spikes):
        last_spike = int(per_unit[u]) if u < per_unit.shape[0] else first_spike
        if last_spike - first_spike != times.shape[0]:
            out.append(None)
        else:
            ends = per_spike[first_spike:last_spike]
            starts = np.concatenate([[per_spike[first_spike - 1] if first_spike else 0], ends[:-1]])
            electrode = int(best[u]) if best is not None else 0
            pick = np.where(starts + electrode < ends, starts + electrode, starts)
            chosen = rows[np.clip(pick, 0, rows.shape[0] - 1)].astype(np.float32)
            chosen[starts >= ends] = np.nan  # a spike with no waveform row
            out.append(chosen)
        first_spike = last_spike
    return out


def _index(group: h5py.Group, name: str) -> np.ndarray | None:
    ds = _dataset(group, name)
    return np.asarray(ds[()], dtype=np.int64).reshape(-1) if ds is not None else None
