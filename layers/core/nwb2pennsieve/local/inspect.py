"""``nwb2pennsieve inspect``: what a file holds and what its conversion will write, in human terms.

Everything here is read off the planner's own results (:func:`~nwb2pennsieve.plan.survey.survey`):
the series it would convert with their channels, segments and gaps, the series it would not
convert and why, and the number and size of the files the conversion writes with the given
``OUTPUT_FORMATS`` and ``GZIP_LEVEL``: the chunk files exactly at gzip level 0 (stored blocks),
at most that size at levels 1-3; the viewer bundle's level arrays by shape, with their float32
size before Zstd. A file with nothing to convert is inspected too (it says so).
:class:`Inspection` is what ``--json`` prints.
"""

from __future__ import annotations

import math
import os

import h5py
from pydantic import BaseModel, ConfigDict, Field

from ..bundle.series import bundle_name
from ..bundle.units import unit_channel_count
from ..options import ConversionOptions
from ..output.gzipstored import framed_size
from ..plan.bundle_layout import FLOAT32_BYTES, plan_levels
from ..plan.grid import series_grid
from ..plan.models import NotConverted, Plan, SeriesPlan, bundle_only_notes
from ..plan.summary import iso_time
from ..plan.survey import Survey, survey
from ..source.decoders import checksum
from ..source.inputs import InputSource, open_input
from ..source.units import units_paths
from ..write.chunks import metadata_body
from .inspect_bundle import TsZarrInfo, tszarr_info
from .planning import annotation_files

OTHER_TYPES_REASON = "only ElectricalSeries are converted"
TSZARR_OTHER_TYPES_REASON = "the bundle's channels are listed below"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ChannelInfo(_Model):
    index: int = Field(description="the channel's index in the output (file-wide)")
    name: str
    group: str


class SegmentInfo(_Model):
    start_sample: int
    stop_sample: int = Field(description="exclusive")
    start: str = Field(description="time of the first sample, ISO 8601 UTC")
    end: str = Field(description="time of the last sample, ISO 8601 UTC")
    seconds: float = Field(description="samples / rate")


class GapInfo(_Model):
    after_sample: int = Field(description="the gap follows this sample (the last of a segment)")
    step_seconds: float = Field(description="time from the last sample before the gap to the first after it")
    missing_seconds: float = Field(description="the time without samples: the step less one sample period")


class SeriesInfo(_Model):
    path: str
    type: str = Field(description="the neurodata type")
    shape: list[int]
    dtype: str
    hdf5_chunks: list[int] | None
    compression: str | None
    checksum: str | None = Field(
        default=None,
        description="what checks the stored data (Fletcher-32, deflate's Adler-32, BZip2's CRC); None: nothing, "
        "so damage inside a stored chunk may decode to other values without any error",
    )
    unit: str
    rate: float = Field(description="samples per second (estimated from the timestamps when timing is timestamps)")
    timing: str
    start: str = Field(description="time of the first sample, ISO 8601 UTC")
    end: str = Field(description="time of the last sample, ISO 8601 UTC")
    duration_seconds: float = Field(description="from the first sample to the last")
    segments: list[SegmentInfo]
    gaps: list[GapInfo]
    channels: list[ChannelInfo]
    chunk_files: int = Field(description="chunk files of this series (0 when OUTPUT_FORMATS has no chunks)")
    output_bytes: int = Field(
        description="bytes of this series' chunk files on disk: exact at GZIP_LEVEL 0, at most this at 1-3"
    )
    bundle_levels: list[list[int]] = Field(
        description="with the viewer bundle: the shape of each level array of each of this series' channels "
        "(level 0 (N,), level k (ceil(N/4^k), 2), N the series' grid bins); empty without it"
    )
    bundle_float32_bytes: int = Field(
        description="with the viewer bundle: this series' level arrays as float32 (TS-Zarr: with the means and "
        "the valid counts), before Zstd (0 without it)"
    )


class BundleInfo(_Model):
    """The viewer bundle the conversion writes (``OUTPUT_FORMATS`` with ``bundle``; docs/bundle.md)."""

    name: str = Field(description="its folder in the output, <stem>.zarr (beside asset-properties.json)")
    continuous_channels: int = Field(description="channels of the converted series, one group each")
    level_arrays: int = Field(description="the continuous channels' level arrays (float32), all channels together")
    unit_channels: int = Field(description="unit (spike) channels from the file's Units tables (<= 256 units each)")
    float32_bytes: int = Field(
        description="the level arrays' values as uncompressed float32: an upper bound of their data, which "
        "Zstd makes smaller (not counted: zarr.json metadata, shard indexes and the unit channels)"
    )
    layout: str = Field(default="ts-zarr", description="BUNDLE_LAYOUT: ts-zarr or legacy")
    tszarr: TsZarrInfo | None = Field(default=None, description="TS-Zarr: the onset, meta/ and every channel")


class OutputInfo(_Model):
    """What the conversion writes, computed from the plan and the output settings."""

    formats: str = Field(description="OUTPUT_FORMATS: chunks, bundle or chunks,bundle")
    gzip_level: int = Field(description="GZIP_LEVEL of the chunk files: 0 stored blocks, 1-3 deflate")
    files: int = Field(description="chunk files + channel metadata files (the bundle's files are not counted)")
    chunk_files: int = Field(description="0 when OUTPUT_FORMATS has no chunks")
    metadata_files: int = Field(description="channel metadata files (written with the chunk files only)")
    bytes: int = Field(description="size of the chunk files and channel metadata on disk (see bytes_exact)")
    bytes_exact: bool = Field(
        description="true: bytes is exact (GZIP_LEVEL 0, or no chunk files); false: GZIP_LEVEL 1-3 compresses "
        "the chunk files, so bytes is an upper bound (their size with stored blocks)"
    )
    chunk_size_mb: float
    bundle: BundleInfo | None = Field(description="the viewer bundle, when OUTPUT_FORMATS has it")


class Inspection(_Model):
    source: str
    convertible: bool
    summary: str = Field(description="one sentence")
    session_start: str | None
    series: list[SeriesInfo]
    not_converted: list[NotConverted]
    other_types: list[str] = Field(description="the other neurodata types the file holds (not converted)")
    output: OutputInfo
    warnings: list[str]
    notes: list[str] = Field(default_factory=list, description="what only the bundle carries (with chunk files)")


def inspect_file(source: str | os.PathLike[str] | InputSource, options: ConversionOptions) -> Inspection:
    """Inspect a local file, URL or S3 object (reads its metadata only, like planning).

    ``options`` are the conversion's (``Settings.conversion_options()``): what it writes follows
    from them.
    """
    parsed = InputSource.parse(source)
    files = annotation_files(parsed) if options.tszarr else []
    with open_input(parsed) as opened:
        found = survey(opened.h5, source=opened.source.name, options=options, annotation_files=files)
        unit_channels = count_unit_channels(opened.h5) if options.writes_bundle and not options.tszarr else 0
        plan = found.plan
        checksums = {s.path: checksum(opened.h5[s.data_path]) for s in plan.series} if plan else {}
    return inspection(found, options, unit_channels=unit_channels, checksums=checksums)


def count_unit_channels(h5: h5py.File) -> int:
    """The bundle's unit channels: per Units table with spike times, as
    :func:`~nwb2pennsieve.bundle.units.unit_channels` splits them (:func:`unit_channel_count`). Reads shapes only."""
    count = 0
    for path in units_paths(h5):
        group = h5[path]
        if "spike_times" not in group:
            continue
        index = group.get("spike_times_index")
        units = index.shape[0] if isinstance(index, h5py.Dataset) and index.shape else 1
        count += unit_channel_count(units)
    return count


def inspection(
    found: Survey,
    options: ConversionOptions,
    *,
    unit_channels: int = 0,
    checksums: dict[str, str | None] | None = None,
) -> Inspection:
    """The :class:`Inspection` of what the planner found, for a conversion with ``options``
    (``unit_channels``: the file's, when it writes the bundle)."""
    plan = found.plan
    chunks, bundle = options.writes_chunks, options.writes_bundle
    gzip_level = options.gzip_level
    # Series skipped (invalid, or not selected) and objects that are not continuous series.
    not_converted = sorted(
        [NotConverted(path=s.path, neurodata_type="ElectricalSeries", reason=s.reason) for s in found.skipped]
        + list(found.not_converted),
        key=lambda n: n.path,
    )
    series = [_series(plan, s, writes_chunks=chunks, writes_bundle=bundle) for s in plan.series] if plan else []
    series = [s.model_copy(update={"checksum": (checksums or {}).get(s.path)}) for s in series]
    chunk_files = sum(s.chunk_files for s in series)
    metadata = [len(metadata_body(m)) for _, m in plan.channel_metadata()] if plan and chunks else []
    output = OutputInfo(
        formats=options.formats_text,
        gzip_level=gzip_level,
        files=chunk_files + len(metadata),
        chunk_files=chunk_files,
        metadata_files=len(metadata),
        bytes=sum(s.output_bytes for s in series) + sum(metadata),
        bytes_exact=gzip_level == 0 or chunk_files == 0,
        chunk_size_mb=options.chunk_size_mb,
        bundle=_bundle(plan, series, unit_channels) if plan and bundle else None,
    )
    if plan is None:
        summary = f"nothing to convert: {found.nothing_reason}"
    else:
        channels = sum(len(s.channels) for s in series)
        if plan.options.tszarr and (plan.aux_series or plan.event_sources):
            aux = sum(len(s.channels) for s in plan.aux_series)
            channels_text = (
                f"{channels} channels (+ {aux} TimeSeries channels, {len(plan.event_sources)} event channels)"
            )
        else:
            channels_text = f"{channels} channels"
        summary = f"{len(series)} series, {channels_text} to convert: " + "; ".join(_output_words(output, short=True))
    return Inspection(
        source=found.source,
        convertible=plan is not None,
        summary=summary,
        session_start=plan.session_start if plan else None,
        series=series,
        not_converted=not_converted,
        other_types=found.other_types,
        output=output,
        warnings=found.warnings,
        notes=bundle_only_notes(plan) if plan and chunks and options.tszarr else [],
    )


def _bundle(plan: Plan, series: list[SeriesInfo], unit_channels: int) -> BundleInfo:
    tszarr = tszarr_info(plan) if plan.options.tszarr else None
    return BundleInfo(
        name=bundle_name(plan),
        continuous_channels=sum(len(s.channels) for s in series) + sum(len(s.channels) for s in plan.aux_series),
        level_arrays=sum(len(s.bundle_levels) * len(s.channels) for s in series),
        unit_channels=unit_channels,
        float32_bytes=sum(s.bundle_float32_bytes for s in series),
        layout=plan.options.bundle_layout.value,
        tszarr=tszarr,
    )


def _series(plan: Plan, s: SeriesPlan, *, writes_chunks: bool, writes_bundle: bool) -> SeriesInfo:
    segments = []
    for k, segment in enumerate(s.segments):
        chunks = [c for c in s.chunks if c.segment == k]
        segments.append(
            SegmentInfo(
                start_sample=segment.start,
                stop_sample=segment.stop,
                start=iso_time(chunks[0].start_us),
                end=iso_time(chunks[-1].end_us),
                seconds=(segment.stop - segment.start) / s.rate,
            )
        )
    ends: dict[int, int] = {}
    starts: dict[int, int] = {}
    for c in s.chunks:
        starts.setdefault(c.segment, c.start_us)
        ends[c.segment] = c.end_us
    gaps = [
        GapInfo(
            after_sample=s.segments[k].stop - 1,
            step_seconds=(starts[k + 1] - ends[k]) / 1e6,
            missing_seconds=max(0.0, (starts[k + 1] - ends[k]) / 1e6 - 1 / s.rate),
        )
        for k in range(len(s.segments) - 1)
    ]
    # Stored gzip blocks: exact at GZIP_LEVEL 0; deflate (1-3) shrinks scaled samples, by how much only writing tells.
    chunk_bytes = sum(framed_size(c.samples * 8) for c in s.chunks) if writes_chunks else 0
    levels = [list(level.shape) for level in plan_levels(series_grid(s).n_bins, s.rate)] if writes_bundle else []
    level_bytes = sum(math.prod(shape) for shape in levels) * FLOAT32_BYTES
    if plan.options.tszarr:  # each level group's mean (float32) and valid counts (uint16) besides env
        per_bin = FLOAT32_BYTES + (2 if s.valid_policy != "never" else 0)
        level_bytes += sum(shape[0] for shape in levels[1:]) * per_bin
    return SeriesInfo(
        path=s.path,
        type=s.neurodata_type,
        shape=list(s.shape),
        dtype=_dtype(s.dtype),
        hdf5_chunks=list(s.hdf5_chunks) if s.hdf5_chunks else None,
        compression=s.compression,
        unit=s.unit,
        rate=s.rate,
        timing=s.timing,
        start=iso_time(s.chunks[0].start_us),
        end=iso_time(s.chunks[-1].end_us),
        duration_seconds=(s.chunks[-1].end_us - s.chunks[0].start_us) / 1e6,
        segments=segments,
        gaps=gaps,
        channels=[ChannelInfo(index=c.index, name=c.name, group=c.group) for c in s.channels],
        chunk_files=len(s.chunks) * len(s.channels) if writes_chunks else 0,
        output_bytes=chunk_bytes * len(s.channels),
        bundle_levels=levels,
        bundle_float32_bytes=level_bytes * len(s.channels),
    )


def _dtype(text: str) -> str:
    import numpy as np

    return str(np.dtype(text))


# --- text ----------------------------------------------------------------------------------------


def _size(nbytes: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} bytes"


def _seconds(value: float) -> str:
    """``2.5 s``, ``9 min 59.9 s``, ``1 h 0 min 0 s``: rounded first, so no field reads 60."""
    if round(value) >= 3600:
        minutes, s = divmod(round(value), 60)
        return f"{minutes // 60} h {minutes % 60} min {s} s"
    if round(value, 1) >= 60:
        m, tenths = divmod(round(value * 10), 600)
        return f"{m} min {tenths / 10:.1f} s"
    return f"{value:.3f} s".replace(".000 s", " s")


def _output_words(o: OutputInfo, *, short: bool = False) -> list[str]:
    """What the conversion writes, in words: the chunk files, then the viewer bundle."""
    words = []
    if o.chunk_files:
        size = _size(o.bytes) if o.bytes_exact else f"at most {_size(o.bytes)}"
        if short:
            words.append(f"{o.files} files, {size}")
        else:
            compressed = "" if o.bytes_exact else f" (GZIP_LEVEL {o.gzip_level} compresses them)"
            files = f"{o.files} files ({o.chunk_files} chunk files + {o.metadata_files} channel metadata)"
            words.append(f"{files}, {size}{compressed}")
    if o.bundle and o.bundle.tszarr:
        b, t = o.bundle, o.bundle.tszarr
        events = f" + {t.event_channels} event channel{'s' if t.event_channels > 1 else ''}" if t.event_channels else ""
        if short:
            words.append(f"TS-Zarr viewer bundle of {b.continuous_channels} channels{events}")
        else:
            meta = "meta/ with subject and session" if t.meta else "no meta/ and no free text (DEIDENTIFY)"
            onset = f"onset {t.onset} ({t.onset_from})" if t.onset else "no onset"
            words.append(f"TS-Zarr viewer bundle {b.name}: {b.continuous_channels} channels{events}; {onset}; {meta}")
    elif o.bundle:
        b = o.bundle
        units = f" + {b.unit_channels} unit channels" if b.unit_channels else ""
        float32 = f"{_size(b.float32_bytes)} as float32"
        if short:
            words.append(f"viewer bundle of {b.level_arrays} level arrays, {float32}")
        else:
            words.append(
                f"viewer bundle {b.name}: {b.continuous_channels} channels{units}, {b.level_arrays} level arrays, "
                f"{float32} before Zstd (an upper bound of the arrays' data: Zstd makes it smaller)"
            )
    return words


def _channel_list(s: SeriesInfo, limit: int = 8) -> list[str]:
    by_group: dict[str, list[str]] = {}
    for c in s.channels:
        by_group.setdefault(c.group, []).append(c.name)
    lines = []
    for group, names in by_group.items():
        shown = ", ".join(names[:limit]) + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")
        lines.append(f"    group {group}: {shown}")
    return lines


def render(found: Inspection) -> str:
    """The inspection as text (what ``nwb2pennsieve inspect`` prints)."""
    lines = [f"{found.source}: {found.summary}"]
    if found.session_start:
        lines.append(f"session start {found.session_start}")
    for s in found.series:
        n_channels = len(s.channels)
        stored = f"{s.dtype} {tuple(s.shape)}"
        if s.hdf5_chunks:
            stored += f", chunks {tuple(s.hdf5_chunks)}"
        if s.compression:
            stored += f", {s.compression}"
        stored += f", checksum {s.checksum}" if s.checksum else ", no checksum (damage inside a chunk may go unseen)"
        first, last = (s.channels[0].index, s.channels[-1].index) if s.channels else (0, 0)
        timing = "from timestamps" if s.timing == "timestamps" else "starting_time and rate"
        lines += [
            "",
            f"{s.path} ({s.type})",
            f"  data      {stored}; unit {s.unit}",
            f"  timing    {s.rate:g} Hz ({timing}); {_seconds(s.duration_seconds)} from {s.start} to {s.end}",
        ]
        if s.gaps:
            gaps = ", ".join(
                f"{_seconds(g.missing_seconds)} without samples after sample {g.after_sample}" for g in s.gaps[:5]
            )
            more = f", ... ({len(s.gaps) - 5} more)" if len(s.gaps) > 5 else ""
            lines.append(f"  segments  {len(s.segments)}, gaps: {gaps}{more}")
        else:
            lines.append("  segments  1 (no gap)")
        lines.append(f"  channels  {n_channels} (output channels {first}-{last}):")
        lines += _channel_list(s)
        if s.chunk_files:
            lines.append(f"  output    {s.chunk_files} chunk files, {_size(s.output_bytes)}")
        if s.bundle_levels:
            shapes = ", ".join(str(tuple(shape)) for shape in s.bundle_levels)
            lines.append(
                f"  bundle    {len(s.bundle_levels)} levels per channel, {shapes}; "
                f"{_size(s.bundle_float32_bytes)} float32"
            )
    if found.not_converted:
        lines += ["", "not converted:"]
        lines += [f"  {n.path} ({n.neurodata_type}): {n.reason}" for n in found.not_converted]
    if found.other_types:
        tszarr = found.output.bundle is not None and found.output.bundle.tszarr is not None
        reason = TSZARR_OTHER_TYPES_REASON if tszarr else OTHER_TYPES_REASON
        lines += ["", f"also in the file ({reason}): {', '.join(found.other_types)}"]
    if found.convertible:
        o = found.output
        settings = f"OUTPUT_FORMATS {o.formats}, CHUNK_SIZE_MB {o.chunk_size_mb:g}, GZIP_LEVEL {o.gzip_level}"
        lines += ["", f"output ({settings}):", *(f"  {words}" for words in _output_words(o))]
    bundle = found.output.bundle
    if bundle and bundle.tszarr:
        lines += ["", "bundle channels:"]
        for c in bundle.tszarr.channels:
            groups = f"{c.groups[0]}" if c.groups[0] == c.groups[1] else f"{c.groups[0]}-{c.groups[1]}"
            ids = c.ids[0] if c.ids[0] == c.ids[1] else f"{c.ids[0]}..{c.ids[1]}"
            lines.append(f"  {groups:>7} {c.kind:<10} {ids} <- {c.source}: {c.what}")
    if found.warnings:
        lines += ["", *(f"warning: {w}" for w in found.warnings)]
    lines += [*([""] if found.notes else []), *found.notes]
    return "\n".join(lines)
