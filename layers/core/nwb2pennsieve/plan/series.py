"""One series checked and timed: its data, unit, scaling, channel names and groups, segments.

Every check raises :class:`InvalidSeriesError` with the reason; the survey (:mod:`.survey`) names
the series and decides whether the file fails or the series is skipped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import h5py
import numpy as np

from ..errors import ElectrodesError, InvalidSeriesError
from ..source.contents import FoundSeries
from ..source.decoders import first_rows
from ..source.electrodes import electrodes_of
from ..source.nwb import child, missing_virtual_sources, read_attr, text, unit_factor
from .models import Segment
from .timing import check_rate, rate_segments, timestamp_chunks

DEFAULT_UNIT = "volts"
PLAUSIBLE_UV = (1e-3, 1e7)  # scaled values all below / all above these are implausible for a voltage
SANITY_ROWS = 4096
# Channel files are named with 5 digits (channel-{index:05d}), and listed by those prefixes.
MAX_CHANNELS = 100_000


@dataclass
class SeriesDraft:
    """A series checked and timed, before channels get their file-wide indices and names."""

    found: FoundSeries
    data: h5py.Dataset
    unit: str
    factor: float
    rate: float
    timing: str
    names: list[str]
    groups: list[str]
    scales: np.ndarray
    offset: float
    segments: list[Segment]
    starting_time: float | None
    chunk_times: list[tuple[int, int]] | None
    scaling_warning: str | None
    bundle_only: bool = False  # a TimeSeries for the TS-Zarr bundle (no chunk files)
    value_unit: str = "uV"  # the bundle's unit of the values


@dataclass(frozen=True)
class _Timing:
    rate: float
    timing: str
    segments: list[Segment]
    starting_time: float | None = None
    chunk_times: list[tuple[int, int]] | None = None


def draft_series(
    series: FoundSeries, reference_us: int, chunk_samples: int, warnings: list[str], *, strict: bool
) -> SeriesDraft:
    """Check ``series`` and time it (``strict``: broken electrode metadata fails it, else the
    channels get default names and ``warnings`` says so)."""
    group = series.group
    data = _checked_data(group)
    n = int(data.shape[0])
    n_columns = int(data.shape[1]) if data.ndim == 2 else 1
    unit = text(_data_attr(data, "unit", DEFAULT_UNIT)) or DEFAULT_UNIT
    factor = unit_factor(unit)
    if factor is None:
        raise InvalidSeriesError(f"its unit {unit!r} is not a voltage unit (volts, mV or uV)")
    scales, offset = _scaling(group, data, n_columns)
    name = series.path.rsplit("/", 1)[-1]
    names, groups = _channel_names(group, name, n_columns, data.ndim, warnings, series.path, strict=strict)
    timing = _timing(group, n, reference_us, chunk_samples)
    return SeriesDraft(
        found=series,
        data=data,
        unit=unit,
        factor=factor,
        rate=timing.rate,
        timing=timing.timing,
        names=names,
        groups=groups,
        scales=scales,
        offset=offset,
        segments=timing.segments,
        starting_time=timing.starting_time,
        chunk_times=timing.chunk_times,
        scaling_warning=_scaling_warning(series.path, data, n, scales, offset, factor),
    )


# TimeSeries types that are not signals on a time axis: interval marks (+1/-1) and indices into images.
NOT_SIGNALS = {"IntervalSeries": "its data marks interval starts and stops", "IndexSeries": "its data are indices"}


def draft_timeseries(series: FoundSeries, reference_us: int, chunk_samples: int) -> SeriesDraft:
    """Check a TimeSeries that is not an ElectricalSeries and time it, for the TS-Zarr bundle only.

    Numeric data of rank 1 or 2 (a rank-2 series is one channel per column), in its own unit: the
    volts family in µV (as for ElectricalSeries), any other unit as stored × ``conversion`` +
    ``offset`` (NWB's rule). A problem is an :class:`InvalidSeriesError` the survey reports as a
    note: these were never converted before, so none fails the file.
    """
    why = NOT_SIGNALS.get(series.core_type)
    if why:
        raise InvalidSeriesError(f"{why}, not a signal")
    group = series.group
    data = _checked_data(group)
    n = int(data.shape[0])
    n_columns = int(data.shape[1]) if data.ndim == 2 else 1
    unit = text(_data_attr(data, "unit", "")) or "n/a"
    factor = unit_factor(unit)
    scales, offset = _scaling(group, data, n_columns)
    name = series.path.rsplit("/", 1)[-1]
    names = [name] if data.ndim == 1 else [f"{name} {c}" for c in range(n_columns)]
    timing = _timing(group, n, reference_us, chunk_samples)
    return SeriesDraft(
        found=series,
        data=data,
        unit=unit,
        factor=factor if factor is not None else 1.0,
        rate=timing.rate,
        timing=timing.timing,
        names=names,
        groups=["default"] * n_columns,
        scales=scales,
        offset=offset,
        segments=timing.segments,
        starting_time=timing.starting_time,
        chunk_times=timing.chunk_times,
        scaling_warning=None,
        bundle_only=True,
        value_unit="uV" if factor is not None else unit,
    )


def _checked_data(group: h5py.Group) -> h5py.Dataset:
    """The series' data dataset: 1-D or 2-D numbers, with samples and channels, fully present."""
    data = child(group, "data", "data")
    if not isinstance(data, h5py.Dataset):
        raise InvalidSeriesError("it has no data dataset")
    if data.ndim not in (1, 2):
        raise InvalidSeriesError(f"its data has {data.ndim} dimensions; expected 1 or 2")
    if data.dtype.kind not in "iuf":
        raise InvalidSeriesError(f"its data type {data.dtype} is not an integer or float type")
    n_columns = int(data.shape[1]) if data.ndim == 2 else 1
    if int(data.shape[0]) == 0:
        raise InvalidSeriesError("it has zero samples")
    if n_columns == 0:
        raise InvalidSeriesError("its data has zero channels (columns)")
    if n_columns > MAX_CHANNELS:
        raise InvalidSeriesError(
            f"its data declares {n_columns:,} channels (columns), more than the {MAX_CHANNELS:,} a conversion can name"
        )
    _check_virtual(data, "data")
    return data


def _scaling(group: h5py.Group, data: h5py.Dataset, n_columns: int) -> tuple[np.ndarray, float]:
    """(conversion × channel_conversion per column, offset): the series' unit per stored unit."""
    conversion = _attr_float(data, "conversion", 1.0)
    offset = _attr_float(data, "offset", 0.0)
    channel_conversion = np.ones(n_columns)
    cc_ds = child(group, "channel_conversion", "channel_conversion")
    if cc_ds is not None:
        cc = np.asarray(cc_ds[()], dtype=np.float64).reshape(-1)
        if cc.shape[0] != n_columns:
            raise InvalidSeriesError(f"it has {cc.shape[0]} channel_conversion values for {n_columns} channels")
        if not np.all(np.isfinite(cc)):
            raise InvalidSeriesError("its channel_conversion has non-finite values")
        channel_conversion = cc
    return conversion * channel_conversion, offset


def _timing(group: h5py.Group, n: int, reference_us: int, chunk_samples: int) -> _Timing:
    """The series' rate and segments: from its timestamps, else from starting_time and rate."""
    timestamps = child(group, "timestamps", "timestamps")
    start = child(group, "starting_time", "starting_time")
    given_rate = None
    if isinstance(start, h5py.Dataset):
        rate = _attr(start, "rate", "starting_time's")
        if rate is None:
            raise InvalidSeriesError("its starting_time has no rate")
        given_rate = check_rate(_number(rate, "starting_time's rate"))
    if isinstance(timestamps, h5py.Dataset):
        _check_virtual(timestamps, "timestamps")
        rate, segments, chunk_times = timestamp_chunks(timestamps, n, given_rate, reference_us, chunk_samples)
        return _Timing(rate=rate, timing="timestamps", segments=segments, chunk_times=chunk_times)
    if isinstance(start, h5py.Dataset) and given_rate is not None:
        starting_time = float(start[()])
        segments = rate_segments(n, starting_time, given_rate, reference_us)
        return _Timing(rate=given_rate, timing="rate", segments=segments, starting_time=starting_time)
    raise InvalidSeriesError("it has neither timestamps nor starting_time and rate")


def _check_virtual(ds: h5py.Dataset, what: str) -> None:
    """A virtual dataset whose source is missing reads as its fill value without error: refuse it."""
    missing = missing_virtual_sources(ds)
    if missing:
        listed = ", ".join(repr(m) for m in missing)
        raise InvalidSeriesError(
            f"its {what} is a virtual dataset whose source file{'s' if len(missing) > 1 else ''} {listed} "
            f"{'are' if len(missing) > 1 else 'is'} missing (it would read as fill values)"
        )


def _attr(obj: h5py.HLObject, key: str, owner: str) -> object:
    """``read_attr``, its error naming where the attribute is (``its data's conversion attribute ...``)."""
    try:
        return read_attr(obj, key)
    except InvalidSeriesError as exc:
        raise InvalidSeriesError(exc.reason.replace("its ", f"its {owner} ", 1)) from None


def _data_attr(data: h5py.Dataset, key: str, default: object) -> object:
    """An attribute of the data; the NWB default only when it is absent, never when it is unreadable."""
    value = _attr(data, key, "data's")
    return default if value is None else value


def _number(raw: object, key: str) -> float:
    try:
        value = float(np.asarray(raw).reshape(-1)[0])
    except (TypeError, ValueError, IndexError):
        raise InvalidSeriesError(f"its {key} {raw!r} is not a number") from None
    if not math.isfinite(value):
        raise InvalidSeriesError(f"its {key} is {value}")
    return value


def _attr_float(data: h5py.Dataset, key: str, default: float) -> float:
    return _number(_data_attr(data, key, default), key)


def _channel_names(
    group: h5py.Group, series_name: str, n_columns: int, ndim: int, warnings: list[str], path: str, *, strict: bool
) -> tuple[list[str], list[str]]:
    """Names and groups of the series' channels before file-wide de-duplication.

    A name is the electrode's ``channel_name``, else its ``label``, else ``E{electrode id}``; 1-D
    data is one channel named after its electrode, or after the series when the electrodes region
    does not name exactly one electrode. A group is ``group_name``, else the referenced
    ElectrodeGroup's name, else ``default``. Electrode metadata that cannot be read fails the
    series when ``strict``; otherwise the default names and groups are used and a warning says so.
    """
    try:
        electrodes = electrodes_of(group)
    except ElectrodesError as exc:
        if strict:
            raise
        warnings.append(f"{path}: {exc.reason}; its channels get default names and groups")
        electrodes = None
    if ndim == 1:
        if electrodes is not None and len(electrodes.ids) == 1:
            return [electrodes.names[0] or f"E{electrodes.ids[0]}"], [electrodes.groups[0] or "default"]
        if electrodes is not None and len(electrodes.ids) > 1:
            warnings.append(
                f"{path}: 1-D data but its electrodes region names {len(electrodes.ids)} electrodes; "
                "the one channel is named after the series"
            )
        groups = {g for g in (electrodes.groups if electrodes else []) if g}
        return [series_name], [groups.pop() if len(groups) == 1 else "default"]
    if electrodes is None:
        return [f"{series_name} {c}" for c in range(n_columns)], ["default"] * n_columns
    if len(electrodes.ids) != n_columns:
        raise InvalidSeriesError(
            f"its data has {n_columns} columns but its electrodes region names {len(electrodes.ids)} electrodes"
        )
    names = [nm or f"E{eid}" for nm, eid in zip(electrodes.names, electrodes.ids, strict=True)]
    return names, [g or "default" for g in electrodes.groups]


def _scaling_warning(
    path: str, data: h5py.Dataset, n: int, scales: np.ndarray, offset: float, factor: float
) -> str | None:
    """Warn when the first rows, scaled, are all implausibly small or large for a voltage in µV.

    Real acquisition software (e.g. Open Ephys) has written the per-bit gain into both
    ``conversion`` and ``channel_conversion``; we follow the NWB rule and say so.
    """
    rows = min(SANITY_ROWS, n)
    raw = np.asarray(first_rows(data, rows), dtype=np.float64).reshape(rows, -1)
    values = np.abs((raw * scales[None, :] + offset) * factor)
    values = values[values > 0]
    if values.size == 0:
        return None
    low, high = PLAUSIBLE_UV
    if values.max() < low or values.min() > high:
        return (
            f"{path}: scaled values look implausible for a voltage (|µV| from {values.min():.3g} to "
            f"{values.max():.3g} in the first {rows} samples); check conversion and channel_conversion"
        )
    return None
