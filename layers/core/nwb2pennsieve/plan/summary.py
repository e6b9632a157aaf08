"""The plan in brief: what ``nwb2pennsieve plan`` prints as JSON (totals, series, channels)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import Field

from .models import NotConverted, SeriesPlan, SkippedSeries, _Model

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def iso_time(us: int) -> str:
    """µs since the Unix epoch as ISO 8601 UTC."""
    return (_EPOCH + timedelta(microseconds=us)).isoformat().replace("+00:00", "Z")


class ChannelSummary(_Model):
    """One channel as ``nwb2pennsieve plan`` shows it: its scaling in µV."""

    index: int
    name: str
    group: str
    scale_uV: float = Field(description="µV per stored unit")
    offset_uV: float = Field(description="µV added after scaling")


class SegmentSummary(_Model):
    start: int
    stop: int


class SeriesSummary(_Model):
    """One series as ``nwb2pennsieve plan`` shows it."""

    path: str
    type: str = Field(description="the neurodata type")
    dtype: str
    shape: list[int]
    hdf5_chunks: list[int] | None
    unit: str
    rate: float
    timing: Literal["rate", "timestamps"]
    channels: list[ChannelSummary]
    segments: list[SegmentSummary]
    chunks: int = Field(description="chunks per channel")
    start_us: int = Field(description="time of the first sample, µs since the Unix epoch")
    end_us: int = Field(description="time of the last sample (inclusive), µs since the Unix epoch")

    @classmethod
    def of(cls, s: SeriesPlan) -> SeriesSummary:
        return cls(
            path=s.path,
            type=s.neurodata_type,
            dtype=s.dtype,
            shape=list(s.shape),
            hdf5_chunks=list(s.hdf5_chunks) if s.hdf5_chunks else None,
            unit=s.unit,
            rate=s.rate,
            timing=s.timing,
            channels=[
                ChannelSummary(
                    index=c.index,
                    name=c.name,
                    group=c.group,
                    scale_uV=c.scale * s.unit_factor,
                    offset_uV=c.offset * s.unit_factor,
                )
                for c in s.channels
            ],
            segments=[SegmentSummary(start=g.start, stop=g.stop) for g in s.segments],
            chunks=len(s.chunks),
            start_us=s.chunks[0].start_us,
            end_us=s.chunks[-1].end_us,
        )


class PlanSummary(_Model):
    """The plan in brief (what ``nwb2pennsieve plan`` prints as JSON): totals, series, channels.

    The field order is the printed key order.
    """

    source: str
    series: list[SeriesSummary]
    channels: int
    segments: int
    chunk_files: int
    work_items: int
    output_bytes: int = Field(description="float64 bytes of all chunk files (before gzip framing)")
    skipped: list[SkippedSeries]
    not_converted: list[NotConverted]
    warnings: list[str]
    session_start: str
    chunk_samples: int
