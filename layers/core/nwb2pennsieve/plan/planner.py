"""Planning: from an open NWB file to a :class:`Plan` (series, channels, segments, chunks, work items).

Planning reads only metadata, the timestamps (when a series has explicit ones) and one small
slab per series for the scaling sanity check, so it is cheap even over S3.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import h5py
import numpy as np

from ..bundle.series import series_grid, window_chunks
from ..errors import (
    ElectrodesError,
    InvalidFileError,
    InvalidInputError,
    InvalidSeriesError,
    NothingToConvertError,
    Nwb2PennsieveError,
    SeriesSelectionError,
)
from ..options import ConversionOptions
from ..source.nwb import (
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
from .bundle_layout import align_windows, plan_levels, window_length
from .models import ChannelPlan, NotConverted, Plan, Segment, SeriesPlan, SkippedSeries, WorkItem
from .timing import check_rate, rate_segments, timestamp_chunks

DEFAULT_UNIT = "volts"
PLAUSIBLE_UV = (1e-3, 1e7)  # scaled values all below / all above these are implausible for a voltage
SANITY_ROWS = 4096
# A writer keeps one row of the item's HDF5 chunks in the chunk cache (so a chunk cut by a chunk
# boundary is decompressed once); channel blocks are narrowed so that row stays under this.
CHUNK_ROW_BUDGET = 128 * 1024 * 1024
# NWB puts metadata (devices, electrodes, subject) under /general and no TimeSeries.
METADATA_GROUP = "/general/"
# Why a series left out by a selection (``--series``) is not converted.
NOT_SELECTED = "not selected (--series)"
# Channel files are named with 5 digits (channel-{index:05d}), and listed by those prefixes.
MAX_CHANNELS = 100_000
# Chunks are computed, never stored, but work items are listed: a plan holds at most this many
# (at the default 512 MiB per item, ~100 TiB of output), so a tiny file declaring an absurd length
# is refused in bounded time and memory.
MAX_WORK_ITEMS = 200_000


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
    segments: list[Segment]
    starting_time: float | None
    chunk_times: list[tuple[int, int]] | None
    scaling_warning: str | None


@dataclass
class Survey:
    """What planning found: the plan, or why there is nothing to convert, and what else the file holds."""

    source: str
    plan: Plan | None
    skipped: list[SkippedSeries]
    warnings: list[str]
    other_types: list[str] = field(default_factory=list)
    nothing_reason: str | None = None
    not_converted: list[NotConverted] = field(default_factory=list)

    def plan_or_raise(self) -> Plan:
        if self.plan is None:
            raise NothingToConvertError(
                self.nothing_reason or "nothing to convert",
                file=self.source,
                skipped=[(s.path, s.reason) for s in self.skipped],
                other_types=self.other_types,
            )
        return self.plan


def build_plan(h5: h5py.File, *, source: str, options: ConversionOptions) -> Plan:
    """Plan the conversion of every continuous ElectricalSeries of ``h5`` (or of ``options.series``
    only), with ``options`` stored in the plan for every executor.

    Strict by default: any invalid series fails the whole file with every problem listed
    (:class:`InvalidFileError`). With ``skip_invalid_series`` the rest is planned and the skipped
    series are listed in ``plan.skipped``. A file with nothing to convert raises
    :class:`NothingToConvertError`, saying what the file holds instead.

    ``options.series`` (HDF5 paths of series groups) selects the series to convert. Their channels
    keep the indices and names the whole file's conversion gives them (with invalid series
    skipped), so the output is exactly that conversion's files of those channels: a later
    conversion of the other series neither collides with it nor names a channel differently.
    Problems of the series left out fail nothing; a path that names no convertible series raises
    :class:`SeriesSelectionError` (a usage error).
    """
    return survey(h5, source=source, options=options).plan_or_raise()


def survey(h5: h5py.File, *, source: str, options: ConversionOptions) -> Survey:
    """:func:`build_plan`, but a file with nothing to convert is a :class:`Survey` without a plan."""
    try:
        return _survey(h5, source, options)
    except Nwb2PennsieveError as exc:
        raise exc.with_file(source) from None


def normalize_series_path(path: str) -> str:
    """``acquisition/ES/`` → ``/acquisition/ES``: the form series paths have in the plan."""
    return "/" + path.strip().strip("/")


def _survey(h5: h5py.File, source: str, options: ConversionOptions) -> Survey:
    chunk_size_mb = options.chunk_size_mb
    if not math.isfinite(chunk_size_mb):
        raise InvalidSeriesError(f"chunk size must be a positive number of MiB, not {chunk_size_mb}")
    chunk_samples = options.chunk_samples
    max_item_mb = options.max_item_mb
    skip_invalid_series = options.skip_invalid_series
    selection = options.series
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
    selected = {normalize_series_path(p) for p in selection}
    unknown = sorted(selected - {s.path for s in found})
    if unknown:
        listed = ", ".join(s.path for s in found) or "none"
        raise SeriesSelectionError(f"--series {unknown[0]} names no series in the file (its series: {listed})")

    def chosen(path: str) -> bool:
        return not selected or path in selected

    skipped: list[SkippedSeries] = []
    not_converted = [
        NotConverted(path=o.path, neurodata_type=o.neurodata_type, reason=o.reason) for o in contents.others
    ]
    problems: list[InvalidSeriesError] = []
    for u in contents.unreadable:
        if u.path.startswith(METADATA_GROUP):  # the schema puts no series there: say so, but go on
            warnings.append(f"{u.path} cannot be read ({u.reason}); it is metadata, not a series")
        elif selected:  # a selection names series that were found: this is none of them
            warnings.append(f"{u.path} cannot be read ({u.reason}); it is not selected")
        else:
            problems.append(
                InvalidSeriesError(
                    f"cannot be read, so it may be a series that would be lost: {u.reason}", series=u.path
                )
            )
    drafts: list[_Draft] = []
    for series in found:
        wanted = chosen(series.path)
        # The series' error boundary: every read of it while planning happens in here.
        try:
            reason = _not_continuous(series)
            if reason:
                if selected and wanted:
                    raise SeriesSelectionError(f"--series {series.path} names no convertible series: {reason}")
                not_converted.append(
                    NotConverted(path=series.path, neurodata_type=series.neurodata_type, reason=reason)
                )
                continue
            # A series left out is planned too (its channels take their indices and names), but
            # its problems fail nothing and its warnings are not this conversion's.
            strict = wanted and not skip_invalid_series
            drafts.append(_draft(series, reference_us, chunk_samples, warnings if wanted else [], strict=strict))
        except InvalidSeriesError as exc:
            exc.series = series.path
            if wanted:
                problems.append(exc)
            else:
                skipped.append(SkippedSeries(path=series.path, reason=NOT_SELECTED))
        except (OSError, ValueError, TypeError, KeyError, RuntimeError) as exc:  # h5py errors on damaged data
            if wanted:
                problems.append(InvalidSeriesError(f"cannot be read: {damage_reason(exc)}", series=series.path))
            else:
                skipped.append(SkippedSeries(path=series.path, reason=NOT_SELECTED))
    problems.sort(key=lambda p: p.series or "")
    if problems and not skip_invalid_series:
        raise InvalidFileError(source, problems)
    if problems and selected:
        first = problems[0]
        raise SeriesSelectionError(f"--series {first.series} names no convertible series: {first.reason}")
    for p in problems:
        skipped.append(SkippedSeries(path=p.series or "", reason=p.reason))
        warnings.append(f"skipped {p.series}: {p.reason}")
    if not drafts:
        return Survey(
            source=source,
            plan=None,
            skipped=skipped,
            warnings=warnings,
            other_types=contents.other_types,
            nothing_reason=_nothing_reason(found, skipped, not_converted, contents.other_types),
            not_converted=sorted(not_converted, key=lambda o: o.path),
        )

    every_series = _assign_channels(drafts, reference_us, chunk_samples)
    series_plans: list[SeriesPlan] = []
    for d, s in zip(drafts, every_series, strict=True):
        if chosen(s.path):
            series_plans.append(s.model_copy(update={"index": len(series_plans)}))
            if d.scaling_warning:
                warnings.append(d.scaling_warning)
        else:
            skipped.append(SkippedSeries(path=s.path, reason=NOT_SELECTED))
    if selected:
        skipped.sort(key=lambda s: s.path)
    bundle = options.writes_bundle
    _check_size(series_plans, chunk_samples, max_item_mb, bundle=bundle)
    items = [item for s in series_plans for item in work_items(s, chunk_samples, max_item_mb, bundle=bundle)]
    plan = Plan(
        source=source,
        session_start=start_text,
        session_start_us=session_us,
        timestamps_reference_time=reference[0] if reference else None,
        timestamps_reference_us=reference_us if reference else None,
        options=options,
        series=series_plans,
        work_items=items,
        skipped=skipped,
        not_converted=sorted(not_converted, key=lambda o: o.path),
        warnings=warnings,
    )
    return Survey(
        source=source,
        plan=plan,
        skipped=skipped,
        warnings=warnings,
        other_types=contents.other_types,
        not_converted=plan.not_converted,
    )


def _check_size(series_plans: list[SeriesPlan], chunk_samples: int, max_item_mb: float, *, bundle: bool) -> None:
    """Refuse a plan too big to list, before listing it (a tiny file may declare any length)."""
    channels = sum(len(s.channels) for s in series_plans)
    if channels > MAX_CHANNELS:
        raise InvalidInputError(
            f"its series have {channels:,} channels in all, more than the {MAX_CHANNELS:,} a conversion can name "
            "(channel-00000 to channel-99999)"
        )
    count = sum(count_work_items(s, chunk_samples, max_item_mb, bundle=bundle) for s in series_plans)
    if count > MAX_WORK_ITEMS:
        declared = ", ".join(f"{s.path} {s.n_samples:,} samples x {s.n_columns:,} channels" for s in series_plans)
        gb = sum(s.output_bytes() for s in series_plans) / 1e9
        raise InvalidInputError(
            f"its plan would have {count:,} work items ({gb:,.1f} GB of output), more than the "
            f"{MAX_WORK_ITEMS:,} a plan may hold (it declares {declared}); a damaged file may declare "
            "a length it does not hold, else raise MAX_ITEM_MB"
        )


def _not_continuous(series: FoundSeries) -> str | None:
    data = child(series.group, "data", "data")
    if series.neurodata_type == SPIKE_EVENT_SERIES:
        return "a SpikeEventSeries holds spike snippets, not continuous data"
    if isinstance(data, h5py.Dataset) and data.ndim == 3:
        return f"its data is 3-D {data.shape} (spike snippets), not continuous data"
    return None


def _nothing_reason(
    found: list[FoundSeries], skipped: list[SkippedSeries], not_converted: list[NotConverted], other_types: list[str]
) -> str:
    if found or skipped:
        listed = "; ".join(
            [f"{s.path}: {s.reason}" for s in skipped]
            + [f"{o.path}: {o.reason}" for o in not_converted if o.path in {f.path for f in found}]
        )
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
    if n_columns > MAX_CHANNELS:
        raise InvalidSeriesError(
            f"its data declares {n_columns:,} channels (columns), more than the {MAX_CHANNELS:,} a conversion can name"
        )
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
    starting_time: float | None = None
    chunk_times: list[tuple[int, int]] | None = None
    if isinstance(start, h5py.Dataset):
        if "rate" not in start.attrs:
            raise InvalidSeriesError("its starting_time has no rate")
        given_rate = check_rate(float(start.attrs["rate"]))
    if has_ts:
        _check_virtual(timestamps, "timestamps")
        rate, segments, chunk_times = timestamp_chunks(timestamps, n, given_rate, reference_us, chunk_samples)
        timing = "timestamps"
    elif isinstance(start, h5py.Dataset) and given_rate is not None:
        starting_time = float(start[()])
        segments = rate_segments(n, starting_time, given_rate, reference_us)
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
        starting_time=starting_time,
        chunk_times=chunk_times,
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


def _assign_channels(drafts: list[_Draft], reference_us: int, chunk_samples: int) -> list[SeriesPlan]:
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
                chunk_samples=chunk_samples,
                reference_us=reference_us,
                starting_time=d.starting_time,
                chunk_times=d.chunk_times,
            )
        )
    return plans


def _layout(series: SeriesPlan, chunk_samples: int, max_item_mb: float) -> tuple[int, int]:
    """(channel block width, chunks per item) of the series' work items."""
    n_columns = series.n_columns
    budget = max_item_mb * 1024 * 1024
    chunk_bytes = chunk_samples * 8
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
    return width, per_item


def _segment_chunk_ranges(series: SeriesPlan) -> list[range]:
    """Indices of each segment's chunks (a segment's chunks are consecutive)."""
    ranges = []
    first = 0
    for seg in series.segments:
        count = -(-(seg.stop - seg.start) // series.chunk_samples)
        ranges.append(range(first, first + count))
        first += count
    return ranges


def count_work_items(series: SeriesPlan, chunk_samples: int, max_item_mb: float, *, bundle: bool = False) -> int:
    """How many items :func:`work_items` makes, without making them."""
    if bundle:
        length, width = _bundle_layout(series, chunk_samples, max_item_mb)
        return -(-series_grid(series).n_bins // length) * -(-series.n_columns // width)
    width, per_item = _layout(series, chunk_samples, max_item_mb)
    blocks = -(-series.n_columns // width)
    return sum(-(-len(r) // per_item) for r in _segment_chunk_ranges(series)) * blocks


def work_items(
    series: SeriesPlan, chunk_samples: int, max_item_mb: float, *, bundle: bool = False, streamed: bool = False
) -> list[WorkItem]:
    """Cut the series into work items: channel blocks × runs of chunks inside one segment.

    A channel block is as wide as the budget allows for one chunk of each channel, and a multiple
    of the HDF5 chunk width when the data is chunked, so no stored chunk is read by two items of
    the same time window. A run of chunks is as long as the budget allows. With the viewer
    bundle, the time windows are the bundle's instead (:func:`bundle_work_items`; ``streamed``:
    see :func:`_bundle_layout`).
    """
    if bundle:
        return bundle_work_items(series, chunk_samples, max_item_mb, streamed=streamed)
    width, per_item = _layout(series, chunk_samples, max_item_mb)
    chunks = series.chunks
    items: list[WorkItem] = []
    for chunk_ids in _segment_chunk_ranges(series):
        for run_start in range(chunk_ids.start, chunk_ids.stop, per_item):
            first, last = run_start, min(run_start + per_item, chunk_ids.stop)
            samples = chunks[last - 1].stop - chunks[first].start
            items += _channel_blocks(series, width, f"{first:07d}", first, last, samples)
    return items


def _channel_blocks(
    series: SeriesPlan, width: int, label: str, first: int, last: int, samples: int, **window: int
) -> list[WorkItem]:
    """The work items of one run of chunks (``first``..``last``): one per block of ``width`` channels."""
    return [
        WorkItem(
            id=f"{series.index:03d}-{label}-{c0:05d}",
            series=series.index,
            column_start=c0,
            column_stop=min(series.n_columns, c0 + width),
            chunk_start=first,
            chunk_stop=last,
            samples=samples,
            output_bytes=samples * (min(series.n_columns, c0 + width) - c0) * 8,
            **window,
        )
        for c0 in range(0, series.n_columns, width)
    ]


def _bundle_layout(
    series: SeriesPlan, chunk_samples: int, max_item_mb: float, *, streamed: bool = False
) -> tuple[int, int]:
    """(window length in grid bins, channel block width) of the series' bundle work items.

    A window proposes as many bins as the chunk runs of :func:`work_items` have samples; a channel
    block is narrowed until a window of float64 (an upper bound of the bundle shards it holds,
    compressed, until they are complete: an S3 store keeps a shard in memory until it is put)
    fits the budget. ``streamed``: the store writes shards to files as they are made (the local
    pool), so the budget balances load and bounds no memory; then compressed data is never cut
    narrower than one HDF5 chunk, since a window cannot be shorter than a level-0 shard and a
    narrower block decompresses the same chunks again (47- and 8-channel blocks of 64-channel
    gzip chunks: 10.1 s of CPU on the 10 s Neuropixels bundle, whole chunks 7.9 s).
    """
    width, per_item = _layout(series, chunk_samples, max_item_mb)
    budget = max_item_mb * 1024 * 1024
    stored = series.hdf5_chunks[1] if series.hdf5_chunks and len(series.hdf5_chunks) == 2 else 1
    n_bins = series_grid(series).n_bins
    length = window_length(n_bins, per_item * chunk_samples, plan_levels(n_bins, series.rate))
    per_channel = length * 8
    if width * per_channel > budget:
        fit = max(1, int(budget // per_channel))
        if fit >= stored:
            width = (fit // stored) * stored
        else:
            width = min(series.n_columns, stored) if streamed and series.compression else fit
    return length, width


def bundle_work_items(
    series: SeriesPlan, chunk_samples: int, max_item_mb: float, *, streamed: bool = False
) -> list[WorkItem]:
    """Work items on the viewer bundle's windows: whole level-0 shards of the series' grid, so no
    two items ever write one shard (docs/bundle.md). An item owns the chunk files of the chunks
    whose first sample lies in its window.
    """
    length, width = _bundle_layout(series, chunk_samples, max_item_mb, streamed=streamed)
    grid = series_grid(series)
    plan = align_windows(grid.n_bins, length, plan_levels(grid.n_bins, series.rate))
    items: list[WorkItem] = []
    for w, window in enumerate(plan.windows):
        first, last = window_chunks(series, grid, window)
        samples = sum(c.samples for c in series.chunks[first:last])
        items += _channel_blocks(series, width, f"w{w:06d}", first, last, samples, window=w, window_bins=plan.length)
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
