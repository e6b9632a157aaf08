"""``nwb2pennsieve inspect``: what a file holds and what its conversion will write, in human terms.

Everything here is read off the planner's own results (:func:`~nwb2pennsieve.planner.survey`):
the series it would convert with their channels, segments and gaps, the series it would not
convert and why, and the exact number and size of the files the conversion writes. A file with
nothing to convert is inspected too (it says so). :class:`Inspection` is what ``--json`` prints.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field

from .config import DEFAULT_CHUNK_SIZE_MB, DEFAULT_MAX_ITEM_MB
from .gzipstored import framed_size
from .models import NotConverted, Plan, SeriesPlan
from .planner import Survey, survey
from .sources import InputSource, open_input
from .writer import metadata_body

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
OTHER_TYPES_REASON = "only ElectricalSeries are converted"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def iso_time(us: int) -> str:
    """µs since the Unix epoch as ISO 8601 UTC."""
    return (_EPOCH + timedelta(microseconds=us)).isoformat().replace("+00:00", "Z")


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
    seconds: float = Field(description="time from the last sample before the gap to the first after it")


class SeriesInfo(_Model):
    path: str
    type: str = Field(description="the neurodata type")
    shape: list[int]
    dtype: str
    hdf5_chunks: list[int] | None
    compression: str | None
    unit: str
    rate: float = Field(description="samples per second (estimated from the timestamps when timing is timestamps)")
    timing: str
    start: str = Field(description="time of the first sample, ISO 8601 UTC")
    end: str = Field(description="time of the last sample, ISO 8601 UTC")
    duration_seconds: float = Field(description="from the first sample to the last")
    segments: list[SegmentInfo]
    gaps: list[GapInfo]
    channels: list[ChannelInfo]
    chunk_files: int
    output_bytes: int = Field(description="bytes of this series' chunk files on disk")


class OutputInfo(_Model):
    """What the conversion writes (exactly: computed from the plan)."""

    files: int
    chunk_files: int
    metadata_files: int
    bytes: int = Field(description="total size of the files on disk")
    chunk_size_mb: float


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


def inspect_file(
    source: str | os.PathLike[str] | InputSource,
    *,
    chunk_size_mb: float = DEFAULT_CHUNK_SIZE_MB,
    max_item_mb: float = DEFAULT_MAX_ITEM_MB,
    skip_invalid_series: bool = False,
    series: tuple[str, ...] = (),
) -> Inspection:
    """Inspect a local file, URL or S3 object (reads its metadata only, like planning)."""
    with open_input(source) as opened:
        found = survey(
            opened.h5,
            source=opened.source.name,
            chunk_size_mb=chunk_size_mb,
            max_item_mb=max_item_mb,
            skip_invalid_series=skip_invalid_series,
            series=series,
        )
    return inspection(found, chunk_size_mb=chunk_size_mb)


def inspection(found: Survey, *, chunk_size_mb: float) -> Inspection:
    """The :class:`Inspection` of what the planner found."""
    plan = found.plan
    # Series skipped (invalid, or not selected) and objects that are not continuous series.
    not_converted = sorted(
        [NotConverted(path=s.path, neurodata_type="ElectricalSeries", reason=s.reason) for s in found.skipped]
        + list(found.not_converted),
        key=lambda n: n.path,
    )
    series = [_series(plan, s) for s in plan.series] if plan else []
    chunk_files = sum(s.chunk_files for s in series)
    metadata = [len(metadata_body(m)) for _, m in plan.channel_metadata()] if plan else []
    output = OutputInfo(
        files=chunk_files + len(metadata),
        chunk_files=chunk_files,
        metadata_files=len(metadata),
        bytes=sum(s.output_bytes for s in series) + sum(metadata),
        chunk_size_mb=plan.chunk_size_mb if plan else chunk_size_mb,
    )
    if plan is None:
        summary = f"nothing to convert: {found.nothing_reason}"
    else:
        channels = sum(len(s.channels) for s in series)
        summary = f"{len(series)} series, {channels} channels to convert: {output.files} files, {_size(output.bytes)}"
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
    )


def _series(plan: Plan, s: SeriesPlan) -> SeriesInfo:
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
        GapInfo(after_sample=s.segments[k].stop - 1, seconds=(starts[k + 1] - ends[k]) / 1e6)
        for k in range(len(s.segments) - 1)
    ]
    chunk_bytes = sum(framed_size(c.samples * 8) for c in s.chunks)
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
        chunk_files=len(s.chunks) * len(s.channels),
        output_bytes=chunk_bytes * len(s.channels),
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
    if value >= 3600:
        h, rest = divmod(value, 3600)
        return f"{int(h)} h {int(rest // 60)} min {rest % 60:.0f} s"
    if value >= 60:
        m, rest = divmod(value, 60)
        return f"{int(m)} min {rest:.1f} s"
    return f"{value:.3f} s".replace(".000 s", " s")


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
        first, last = (s.channels[0].index, s.channels[-1].index) if s.channels else (0, 0)
        timing = "from timestamps" if s.timing == "timestamps" else "starting_time and rate"
        lines += [
            "",
            f"{s.path} ({s.type})",
            f"  data      {stored}; unit {s.unit}",
            f"  timing    {s.rate:g} Hz ({timing}); {_seconds(s.duration_seconds)} from {s.start} to {s.end}",
        ]
        if s.gaps:
            gaps = ", ".join(f"{_seconds(g.seconds)} after sample {g.after_sample}" for g in s.gaps[:5])
            more = f", ... ({len(s.gaps) - 5} more)" if len(s.gaps) > 5 else ""
            lines.append(f"  segments  {len(s.segments)}, gaps: {gaps}{more}")
        else:
            lines.append("  segments  1 (no gap)")
        lines.append(f"  channels  {n_channels} (output channels {first}-{last}):")
        lines += _channel_list(s)
        lines.append(f"  output    {s.chunk_files} chunk files, {_size(s.output_bytes)}")
    if found.not_converted:
        lines += ["", "not converted:"]
        lines += [f"  {n.path} ({n.neurodata_type}): {n.reason}" for n in found.not_converted]
    if found.other_types:
        lines += ["", f"also in the file ({OTHER_TYPES_REASON}): {', '.join(found.other_types)}"]
    if found.convertible:
        o = found.output
        lines += [
            "",
            f"output: {o.files} files ({o.chunk_files} chunk files + {o.metadata_files} channel metadata), "
            f"{_size(o.bytes)} (CHUNK_SIZE_MB {o.chunk_size_mb:g})",
        ]
    if found.warnings:
        lines += ["", *(f"warning: {w}" for w in found.warnings)]
    return "\n".join(lines)
