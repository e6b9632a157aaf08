"""Planning: from an open NWB file to a :class:`Plan` (series, channels, segments, chunks, work items).

Planning reads only metadata, the timestamps (when a series has explicit ones) and one small
slab per series for the scaling sanity check, so it is cheap even over S3.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import h5py
import numpy as np

from .bundle.layout import align_windows, plan_levels
from .bundle.series import series_grid, window_chunks
from .config import (
    DEFAULT_BUNDLE_ZSTD_LEVEL,
    DEFAULT_CHUNK_SIZE_MB,
    DEFAULT_MAX_ITEM_MB,
    DEFAULT_OUTPUT_FORMATS,
    output_formats,
)
from .errors import ElectrodesError, InvalidFileError, InvalidSeriesError, NothingToConvertError, Nwb2PennsieveError
from .models import SAMPLES_PER_MIB, ChannelPlan, Plan, SeriesPlan, SkippedSeries, WorkItem
from .nwb import (
    SPIKE_EVENT_SERIES,
    FoundSeries,
    child,
    damage_reason,
    electrodes_of,
    find_electrical_series,
    missing_virtual_sources,
    session_start,
    text,
    timestamps_reference,
    unit_factor,
)
from .timing import check_rate, rate_chunks, timestamp_chunks

DEFAULT_UNIT = "volts"
PLAUSIBLE_UV = (1e-3, 1e7)  # scaled values all below / all above these are implausible for a voltage
SANITY_ROWS = 4096
# A writer keeps one row of the item's HDF5 chunks in the chunk cache (so a chunk cut by a chunk
# boundary is decompressed once); channel blocks are narrowed so that row stays under this.
CHUNK_ROW_BUDGET = 128 * 1024 * 1024
# NWB puts metadata (devices, electrodes, subject) under /general and no TimeSeries.
METADATA_GROUP = "/general/"


@dataclass
class _Draft:
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
    segments: list
    chunks: list
    scaling_warning: str | None


def build_plan(
    h5: h5py.File,
    *,
    source: str,
    chunk_size_mb: float = DEFAULT_CHUNK_SIZE_MB,
    max_item_mb: float = DEFAULT_MAX_ITEM_MB,
    skip_invalid_series: bool = False,
    output_formats: str = DEFAULT_OUTPUT_FORMATS,
    bundle_zstd_level: int = DEFAULT_BUNDLE_ZSTD_LEVEL,
) -> Plan:
    """Plan the conversion of every continuous ElectricalSeries of ``h5``.

    Strict by default: any invalid series fails the whole file with every problem listed
    (:class:`InvalidFileError`). With ``skip_invalid_series`` the rest is planned and the skipped
    series are listed in ``plan.skipped``. A file with nothing to convert raises
    :class:`NothingToConvertError`, saying what the file holds instead.
    """
    try:
        plan = _build_plan(h5, source, chunk_size_mb, max_item_mb, skip_invalid_series, output_formats)
    except Nwb2PennsieveError as exc:
        raise exc.with_file(source) from None
    return plan.model_copy(update={"bundle_zstd_level": bundle_zstd_level})


def _build_plan(
    h5: h5py.File, source: str, chunk_size_mb: float, max_item_mb: float, skip_invalid_series: bool, formats: str
) -> Plan:
    if not (chunk_size_mb > 0 and math.isfinite(chunk_size_mb)):
        raise InvalidSeriesError(f"chunk size must be a positive number of MiB, not {chunk_size_mb}")
    chunk_samples = max(1, round(chunk_size_mb * SAMPLES_PER_MIB))
    max_item_mb = max(float(max_item_mb), chunk_size_mb)
    start_text, session_us, naive = session_start(h5)
    warnings: list[str] = []
    if naive:
        warnings.append(f"session_start_time {start_text!r} has no time zone; taken as UTC")
    # NWB: every time in the file is relative to timestamps_reference_time (default: the session start).
    reference = timestamps_reference(h5)
    reference_us = session_us
    if reference is not None:
        reference_us = reference[1]
        if reference[2]:
            warnings.append(f"timestamps_reference_time {reference[0]!r} has no time zone; taken as UTC")

    contents = find_electrical_series(h5)
    found = contents.series
    skipped: list[SkippedSeries] = []
    problems: list[InvalidSeriesError] = []
    for u in contents.unreadable:
        if u.path.startswith(METADATA_GROUP):  # the schema puts no series there: say so, but go on
            warnings.append(f"{u.path} cannot be read ({u.reason}); it is metadata, not a series")
        else:
            problems.append(
                InvalidSeriesError(
                    f"cannot be read, so it may be a series that would be lost: {u.reason}", series=u.path
                )
            )
    drafts: list[_Draft] = []
    for series in found:
        # The series' error boundary: every read of it while planning happens in here.
        try:
            reason = _not_continuous(series)
            if reason:
                skipped.append(SkippedSeries(path=series.path, reason=reason))
                continue
            drafts.append(_draft(series, reference_us, chunk_samples, warnings, strict=not skip_invalid_series))
        except InvalidSeriesError as exc:
            exc.series = series.path
            problems.append(exc)
        except (OSError, ValueError, TypeError, KeyError, RuntimeError) as exc:  # h5py errors on damaged data
            problems.append(InvalidSeriesError(f"cannot be read: {damage_reason(exc)}", series=series.path))
    problems.sort(key=lambda p: p.series or "")
    if problems and not skip_invalid_series:
        raise InvalidFileError(source, problems)
    for p in problems:
        skipped.append(SkippedSeries(path=p.series or "", reason=p.reason))
        warnings.append(f"skipped {p.series}: {p.reason}")
    if not drafts:
        raise NothingToConvertError(_nothing_reason(found, skipped, contents.other_types))

    series_plans = _assign_channels(drafts)
    warnings.extend(d.scaling_warning for d in drafts if d.scaling_warning)
    bundle = "bundle" in output_formats(formats)
    items = [item for s in series_plans for item in work_items(s, chunk_samples, max_item_mb, bundle=bundle)]
    return Plan(
        source=source,
        session_start=start_text,
        session_start_us=session_us,
        timestamps_reference_time=reference[0] if reference else None,
        timestamps_reference_us=reference_us if reference else None,
        chunk_size_mb=chunk_size_mb,
        chunk_samples=chunk_samples,
        max_item_mb=max_item_mb,
        output_formats=formats,
        series=series_plans,
        work_items=items,
        skipped=skipped,
        warnings=warnings,
    )


def _not_continuous(series: FoundSeries) -> str | None:
    data = child(series.group, "data", "data")
    if series.neurodata_type == SPIKE_EVENT_SERIES:
        return "a SpikeEventSeries holds spike snippets, not continuous data"
    if isinstance(data, h5py.Dataset) and data.ndim == 3:
        return f"its data is 3-D {data.shape} (spike snippets), not continuous data"
    return None


def _nothing_reason(found: list[FoundSeries], skipped: list[SkippedSeries], other_types: list[str]) -> str:
    if found or skipped:
        listed = "; ".join(f"{s.path}: {s.reason}" for s in skipped)
        return f"no continuous ElectricalSeries to convert (skipped: {listed})"
    holds = ", ".join(other_types) if other_types else "no neurodata objects"
    return f"no ElectricalSeries to convert (the file holds: {holds})"


def _draft(series: FoundSeries, reference_us: int, chunk_samples: int, warnings: list[str], *, strict: bool) -> _Draft:
    group = series.group
    name = series.path.rsplit("/", 1)[-1]
    data = child(group, "data", "data")
    if not isinstance(data, h5py.Dataset):
        raise InvalidSeriesError("it has no data dataset")
    if data.ndim not in (1, 2):
        raise InvalidSeriesError(f"its data has {data.ndim} dimensions; expected 1 or 2")
    if data.dtype.kind not in "iuf":
        raise InvalidSeriesError(f"its data type {data.dtype} is not an integer or float type")
    n = int(data.shape[0])
    n_columns = int(data.shape[1]) if data.ndim == 2 else 1
    if n == 0:
        raise InvalidSeriesError("it has zero samples")
    if n_columns == 0:
        raise InvalidSeriesError("its data has zero channels (columns)")
    _check_virtual(data, "data")

    unit = text(data.attrs.get("unit", DEFAULT_UNIT)) or DEFAULT_UNIT
    factor = unit_factor(unit)
    if factor is None:
        raise InvalidSeriesError(f"its unit {unit!r} is not a voltage unit (volts, mV or uV)")
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

    names, groups = _channel_names(group, name, n_columns, data.ndim, warnings, series.path, strict=strict)

    timestamps = child(group, "timestamps", "timestamps")
    has_ts = isinstance(timestamps, h5py.Dataset)
    start = child(group, "starting_time", "starting_time")
    given_rate = None
    if isinstance(start, h5py.Dataset):
        if "rate" not in start.attrs:
            raise InvalidSeriesError("its starting_time has no rate")
        given_rate = check_rate(float(start.attrs["rate"]))
    if has_ts:
        _check_virtual(timestamps, "timestamps")
        rate, segments, chunks = timestamp_chunks(timestamps, n, given_rate, reference_us, chunk_samples)
        timing = "timestamps"
    elif isinstance(start, h5py.Dataset) and given_rate is not None:
        segments, chunks = rate_chunks(n, float(start[()]), given_rate, reference_us, chunk_samples)
        rate, timing = given_rate, "rate"
    else:
        raise InvalidSeriesError("it has neither timestamps nor starting_time and rate")

    scales = conversion * channel_conversion
    return _Draft(
        found=series,
        data=data,
        unit=unit,
        factor=factor,
        rate=rate,
        timing=timing,
        names=names,
        groups=groups,
        scales=scales,
        offset=offset,
        segments=segments,
        chunks=chunks,
        scaling_warning=_scaling_warning(series.path, data, n, scales, offset, factor),
    )


def _check_virtual(ds: h5py.Dataset, what: str) -> None:
    """A virtual dataset whose source is missing reads as its fill value without error: refuse it."""
    missing = missing_virtual_sources(ds)
    if missing:
        listed = ", ".join(repr(m) for m in missing)
        raise InvalidSeriesError(
            f"its {what} is a virtual dataset whose source file{'s' if len(missing) > 1 else ''} {listed} "
            f"{'are' if len(missing) > 1 else 'is'} missing (it would read as fill values)"
        )


def _attr_float(data: h5py.Dataset, key: str, default: float) -> float:
    raw = data.attrs.get(key, default)
    try:
        value = float(np.asarray(raw).reshape(-1)[0])
    except (TypeError, ValueError, IndexError):
        raise InvalidSeriesError(f"its {key} {raw!r} is not a number") from None
    if not math.isfinite(value):
        raise InvalidSeriesError(f"its {key} is {value}")
    return value


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


def _assign_channels(drafts: list[_Draft]) -> list[SeriesPlan]:
    """File-wide channel indices (series in path order, then columns) and file-wide unique names.

    A name already taken by an earlier series is qualified as ``{name} ({series name})``; a name
    repeated inside one series gets `` #2``, `` #3`` ... on its later occurrences.
    """
    taken: set[str] = set()
    index = 0
    plans = []
    for s, d in enumerate(drafts):
        series_name = d.found.path.rsplit("/", 1)[-1]
        repeats: Counter[str] = Counter()
        channels = []
        for column, (raw_name, group) in enumerate(zip(d.names, d.groups, strict=True)):
            name = raw_name
            repeats[raw_name] += 1
            if repeats[raw_name] > 1:
                name = f"{raw_name} #{repeats[raw_name]}"
            if name in taken:
                name = f"{name} ({series_name})"
            k = 2
            base = name
            while name in taken:
                name = f"{base} #{k}"
                k += 1
            taken.add(name)
            channels.append(
                ChannelPlan(
                    index=index,
                    column=column,
                    name=name,
                    group=group,
                    scale=float(d.scales[column]),
                    offset=d.offset,
                )
            )
            index += 1
        chunks = d.data.chunks
        plans.append(
            SeriesPlan(
                index=s,
                path=d.found.path,
                name=series_name,
                neurodata_type=d.found.neurodata_type,
                data_path=f"{d.found.path}/data",
                dtype=d.data.dtype.str,
                shape=tuple(int(x) for x in d.data.shape),
                hdf5_chunks=tuple(int(x) for x in chunks) if chunks else None,
                compression=d.data.compression,
                unit=d.unit,
                unit_factor=d.factor,
                rate=d.rate,
                timing="timestamps" if d.timing == "timestamps" else "rate",
                channels=channels,
                segments=d.segments,
                chunks=d.chunks,
            )
        )
    return plans


def work_items(series: SeriesPlan, chunk_samples: int, max_item_mb: float, *, bundle: bool = False) -> list[WorkItem]:
    """Cut the series into work items: channel blocks × runs of chunks inside one segment.

    A channel block is as wide as the budget allows for one chunk of each channel, and a multiple
    of the HDF5 chunk width when the data is chunked, so no stored chunk is read by two items of
    the same time window. A run of chunks is as long as the budget allows. With the viewer
    bundle, the time windows are the bundle's instead (:func:`bundle_work_items`).
    """
    budget = max_item_mb * 1024 * 1024
    chunk_bytes = chunk_samples * 8
    n_columns = series.n_columns
    max_width = max(1, int(budget // chunk_bytes))
    width = min(n_columns, max_width)
    if series.hdf5_chunks and len(series.hdf5_chunks) == 2:
        rows, stored = series.hdf5_chunks
        itemsize = np.dtype(series.dtype).itemsize
        # e.g. data chunked as (all samples, 1 channel): a row of chunks is the whole item's data
        by_cache = max(1, CHUNK_ROW_BUDGET // (rows * stored * itemsize)) * stored
        max_width = min(max_width, by_cache)
        width = min(n_columns, max_width)
        if width < n_columns and max_width >= stored:
            width = (max_width // stored) * stored
    per_item = max(1, int(budget // (width * chunk_bytes)))
    if bundle:
        stored = series.hdf5_chunks[1] if series.hdf5_chunks and len(series.hdf5_chunks) == 2 else 1
        return bundle_work_items(series, per_item * chunk_samples, width, stored, budget)
    items = []
    by_segment: dict[int, list[int]] = {}
    for i, chunk in enumerate(series.chunks):
        by_segment.setdefault(chunk.segment, []).append(i)
    for chunk_ids in by_segment.values():
        for run_start in range(0, len(chunk_ids), per_item):
            run = chunk_ids[run_start : run_start + per_item]
            first, last = run[0], run[-1] + 1
            samples = series.chunks[last - 1].stop - series.chunks[first].start
            for c0 in range(0, n_columns, width):
                c1 = min(n_columns, c0 + width)
                items.append(
                    WorkItem(
                        id=f"{series.index:03d}-{first:07d}-{c0:05d}",
                        series=series.index,
                        column_start=c0,
                        column_stop=c1,
                        chunk_start=first,
                        chunk_stop=last,
                        samples=samples,
                        output_bytes=samples * (c1 - c0) * 8,
                    )
                )
    return items


def bundle_work_items(series: SeriesPlan, proposed_bins: int, width: int, stored: int, budget: float) -> list[WorkItem]:
    """Work items on the viewer bundle's windows: whole level-0 shards of the series' grid, so no
    two items ever write one shard (docs/bundle.md). An item owns the chunk files of the chunks
    whose first sample lies in its window. A channel block is narrowed until a window of float64
    (an upper bound of the bundle shards it holds, compressed, until they are complete) fits the budget.
    """
    grid = series_grid(series)
    plan = align_windows(grid.n_bins, proposed_bins, plan_levels(grid.n_bins, series.rate))
    per_channel = plan.length * 8
    if width * per_channel > budget:
        fit = max(1, int(budget // per_channel))
        width = (fit // stored) * stored if fit >= stored else fit
    n_columns = series.n_columns
    items = []
    for w, window in enumerate(plan.windows):
        first, last = window_chunks(series, grid, window)
        samples = sum(c.samples for c in series.chunks[first:last])
        for c0 in range(0, n_columns, width):
            c1 = min(n_columns, c0 + width)
            items.append(
                WorkItem(
                    id=f"{series.index:03d}-w{w:06d}-{c0:05d}",
                    series=series.index,
                    column_start=c0,
                    column_stop=c1,
                    chunk_start=first,
                    chunk_stop=last,
                    samples=samples,
                    output_bytes=samples * (c1 - c0) * 8,
                    window=w,
                    window_bins=plan.length,
                )
            )
    return items


def _scaling_warning(
    path: str, data: h5py.Dataset, n: int, scales: np.ndarray, offset: float, factor: float
) -> str | None:
    """Warn when the first rows, scaled, are all implausibly small or large for a voltage in µV.

    Real acquisition software (e.g. Open Ephys) has written the per-bit gain into both
    ``conversion`` and ``channel_conversion``; we follow the NWB rule and say so.
    """
    rows = min(SANITY_ROWS, n)
    raw = np.asarray(data[:rows], dtype=np.float64).reshape(rows, -1)
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
