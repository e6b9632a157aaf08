"""Annotations in an NWB file, read with h5py: ``TimeIntervals`` tables and ``AnnotationSeries``.

A TimeIntervals table (``/intervals/trials``, ``epochs``, ``invalid_times``, a converter's comment
table, any table extending it) gives one annotation per row: its ``start_time``, its duration
(``stop_time`` − ``start_time``, never below 0), a label from its label-like text column and a
JSON body of the row's scalar columns. The label column is the first of
:data:`LABEL_COLUMNS` the table has (``tags``, a ragged list of strings, joined with ", "); the
body holds every column that is one value per row (numbers, booleans, text; the label included),
by name, in the table's column order; columns of lists, references or 2-D values are left out.
An AnnotationSeries gives one point per text, at its timestamp.

Times are µs since the epoch by the chunk files' rule: the reference µs plus the time rounded to
whole µs, half to even.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np

from ..errors import InvalidSeriesError
from .nwb import neurodata_type, read_attr, text

LABEL_COLUMNS = ("label", "annotation", "comment", "text", "note", "tags")
START, STOP = "start_time", "stop_time"
MAX_SECONDS = 9.2e12  # times beyond this many seconds do not fit int64 µs
BLOCK = 1 << 22  # values read at a time when a table is surveyed


@dataclass(frozen=True)
class TableLayout:
    """Which columns of a table become what."""

    rows: int
    label_column: str | None
    body_columns: list[str]


@dataclass(frozen=True)
class Annotations:
    """An annotation source as read, sorted by start (ties keep file order).

    ``stops_us`` is None for points; ``labels`` and ``bodies`` per row (None when the source has none).
    """

    starts_us: np.ndarray  # int64
    stops_us: np.ndarray | None  # int64, >= starts_us
    labels: list[str] | None
    bodies: list[dict[str, Any]] | None
    dropped: int = 0  # rows without a finite start time


def _column(group: h5py.Group, name: str) -> h5py.Dataset | None:
    obj = group.get(name)
    return obj if isinstance(obj, h5py.Dataset) else None


def _colnames(group: h5py.Group) -> list[str]:
    raw = read_attr(group, "colnames")
    names = [text(n) for n in np.asarray(raw).reshape(-1)] if raw is not None else []
    return [n for n in names if n]


def _is_scalar(group: h5py.Group, name: str) -> bool:
    """One number, boolean or text per row: not ragged, not a reference, not 2-D."""
    ds = _column(group, name)
    if ds is None or ds.ndim != 1 or f"{name}_index" in group:
        return False
    if neurodata_type(ds) not in ("VectorData", ""):
        return False
    kind = ds.dtype.kind
    if kind in "iufb":
        return True
    return kind in "SU" or h5py.check_string_dtype(ds.dtype) is not None


def table_layout(group: h5py.Group) -> TableLayout:
    """The label column and the body columns of a TimeIntervals table; a table without start or
    stop times raises :class:`InvalidSeriesError` (the survey turns it into a note)."""
    for needed in (START, STOP):
        ds = _column(group, needed)
        if ds is None or ds.ndim != 1 or ds.dtype.kind not in "iuf":
            raise InvalidSeriesError(f"it has no {needed} column of numbers")
    rows = int(group[START].shape[0])
    if int(group[STOP].shape[0]) != rows:
        raise InvalidSeriesError(f"its start_time has {rows} rows but its stop_time {group[STOP].shape[0]}")
    names = _colnames(group)
    label = None
    for candidate in LABEL_COLUMNS:
        if candidate in names and (_is_scalar(group, candidate) or _is_ragged_text(group, candidate)):
            label = candidate
            break
    body = [n for n in names if n not in (START, STOP) and (n == label or _is_scalar(group, n))]
    return TableLayout(rows=rows, label_column=label, body_columns=body)


def _is_ragged_text(group: h5py.Group, name: str) -> bool:
    ds, index = _column(group, name), _column(group, f"{name}_index")
    return bool(ds is not None and index is not None and ds.ndim == 1 and h5py.check_string_dtype(ds.dtype))


def times_us(seconds: np.ndarray, reference_us: int, what: str) -> np.ndarray:
    """Finite seconds after the reference as int64 µs since the epoch (half to even)."""
    if seconds.size and float(np.max(np.abs(seconds))) > MAX_SECONDS:
        raise InvalidSeriesError(f"its {what} go beyond what int64 µs can hold")
    return reference_us + np.rint(seconds * 1e6).astype(np.int64)


def time_range(ds: h5py.Dataset, reference_us: int, what: str) -> tuple[int, int] | None:
    """(first, last) finite time of a 1-D dataset of seconds, read in blocks; None when it has none."""
    low, high = math.inf, -math.inf
    for a in range(0, int(ds.shape[0]), BLOCK):
        part = np.asarray(ds[a : a + BLOCK], dtype=np.float64)
        part = part[np.isfinite(part)]
        if part.size:
            low, high = min(low, float(part.min())), max(high, float(part.max()))
    if low > high:
        return None
    first, last = times_us(np.array([low, high]), reference_us, what)
    return int(first), int(last)


def read_intervals(group: h5py.Group, reference_us: int) -> Annotations:
    """Every row of a TimeIntervals table with a finite start, sorted by start."""
    layout = table_layout(group)
    starts = np.asarray(group[START][()], dtype=np.float64)
    stops = np.asarray(group[STOP][()], dtype=np.float64)
    keep = np.flatnonzero(np.isfinite(starts))
    starts_us = times_us(starts[keep], reference_us, "start times")
    finite = np.isfinite(stops[keep])
    stops_us = np.where(finite, times_us(np.where(finite, stops[keep], 0.0), reference_us, "stop times"), starts_us)
    stops_us = np.maximum(stops_us, starts_us)
    columns = {name: _values(group, name) for name in layout.body_columns}
    order = np.argsort(starts_us, kind="stable")
    rows = keep[order].tolist()
    labels = [_label(columns[layout.label_column][r]) for r in rows] if layout.label_column else None
    bodies = [{name: values[r] for name, values in columns.items()} for r in rows] if columns else None
    return Annotations(
        starts_us=starts_us[order],
        stops_us=stops_us[order],
        labels=labels,
        bodies=bodies,
        dropped=layout.rows - keep.size,
    )


def _label(value: Any) -> str:
    return "" if value is None else str(value)


def _values(group: h5py.Group, name: str) -> list[Any]:
    """A column as JSON values, one per row (a ragged text column joined with ", ")."""
    ds = group[name]
    index = _column(group, f"{name}_index")
    if index is not None:
        flat = [text(v) for v in ds[()]]
        ends = np.asarray(index[()], dtype=np.int64).tolist()
        starts = [0, *ends[:-1]]
        return [", ".join(flat[a:b]) for a, b in zip(starts, ends, strict=True)]
    return [_json_value(v) for v in ds[()]]


def _json_value(value: Any) -> Any:
    """One cell as a JSON value: a finite number, a boolean, text; NaN and infinities as null."""
    if isinstance(value, bytes | np.bytes_ | str | np.str_):
        return text(value)
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, np.integer | int):
        return int(value)
    number = float(value)
    return number if math.isfinite(number) else None


def annotation_times(group: h5py.Group) -> tuple[np.ndarray, int]:
    """An AnnotationSeries' times in seconds (timestamps, or starting_time + k / rate) and its rows."""
    data = _column(group, "data")
    if data is None or data.ndim != 1:
        raise InvalidSeriesError("it has no 1-D data of texts")
    rows = int(data.shape[0])
    stamps = _column(group, "timestamps")
    if stamps is not None:
        seconds = np.asarray(stamps[()], dtype=np.float64).reshape(-1)
        if seconds.shape[0] != rows:
            raise InvalidSeriesError(f"it has {seconds.shape[0]} timestamps for {rows} texts")
        return seconds, rows
    start = _column(group, "starting_time")
    rate = read_attr(start, "rate") if start is not None else None
    if start is None or rate is None or not float(rate) > 0:
        raise InvalidSeriesError("it has neither timestamps nor starting_time and rate")
    return float(start[()]) + np.arange(rows, dtype=np.float64) / float(rate), rows


def read_annotation_series(group: h5py.Group, reference_us: int) -> Annotations:
    """Every text of an AnnotationSeries with a finite time, sorted by time: points whose label is
    the text and whose body is ``{"text": ...}``."""
    seconds, _ = annotation_times(group)
    texts = [text(v) for v in group["data"][()]]
    keep = np.flatnonzero(np.isfinite(seconds))
    starts_us = times_us(seconds[keep], reference_us, "timestamps")
    order = np.argsort(starts_us, kind="stable")
    rows = keep[order].tolist()
    return Annotations(
        starts_us=starts_us[order],
        stops_us=None,
        labels=[texts[r] for r in rows],
        bodies=[{"text": texts[r]} for r in rows],
        dropped=len(texts) - keep.size,
    )
