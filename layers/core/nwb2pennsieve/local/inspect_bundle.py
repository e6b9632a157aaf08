"""What ``inspect`` says of a TS-Zarr bundle: its onset, whether it has ``meta/``, and every channel
it will hold, of every kind, read off the plan (the same groups, ids and members the conversion
writes)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from ..bundle.tszarr.channels import continuous_channels
from ..plan.bundle_layout import plan_levels
from ..plan.grid import series_grid
from ..plan.models import Plan
from ..plan.sources import AnnotationSeriesSource, IntervalsSource, NdjsonSource, UnitsSource, source_label
from ..plan.summary import iso_time

# Count levels are written from this many events (bundle/tszarr/events.py's COUNT_LEVEL_EVENTS).
COUNT_LEVEL_EVENTS = 65_536


class BundleChannel(BaseModel):
    """One channel group of the TS-Zarr bundle (consecutive continuous channels of a series together)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    groups: list[int] = Field(description="the channel groups (first, last)")
    ids: list[str] = Field(description="the first and last channel id")
    kind: str = Field(description="continuous or event")
    source: str = Field(description="the HDF5 path, or the annotation file's name")
    what: str = Field(description="in words: unit, rate, samples, members; or events and columns")


class TsZarrInfo(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    onset: str | None = Field(
        description="ISO 8601 UTC of the earliest sample, spike or annotation: offsets count from it"
    )
    onset_from: str | None = Field(description="what starts at the onset")
    meta: bool = Field(description="meta/ (subject, session, source) is written: false with DEIDENTIFY")
    event_channels: int
    channels: list[BundleChannel]


def _count(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def _valid(policy: str) -> str:
    return {"always": ", valid", "if-nonfinite": ", valid if a sample is not finite", "never": ""}[policy]


def tszarr_info(plan: Plan) -> TsZarrInfo:
    """The TS-Zarr bundle ``plan`` writes, channel by channel."""
    out: list[BundleChannel] = []
    by_series: dict[int, list[tuple[int, str]]] = {}
    for ch in continuous_channels(plan):
        by_series.setdefault(id(ch.series), []).append((ch.group, ch.id))
    for series in plan.bundle_series():
        groups = by_series[id(series)]
        n = series_grid(series).n_bins
        levels = len(plan_levels(n, series.rate)) - 1
        members = f"raw + {levels} level groups (env, mean{_valid(series.valid_policy)})" if levels else "raw"
        gaps = f", {_count(len(series.segments) - 1, 'gap')} as NaN" if len(series.segments) > 1 else ""
        out.append(
            BundleChannel(
                groups=[groups[0][0], groups[-1][0]],
                ids=[groups[0][1], groups[-1][1]],
                kind="continuous",
                source=series.path,
                what=f"{_count(len(groups), 'channel')} in {series.value_unit}, {series.rate:g} Hz, "
                f"{n:,} samples{gaps}; {members}",
            )
        )
    group = sum(len(s.channels) for s in plan.bundle_series())
    for source in plan.event_sources:
        out.append(
            BundleChannel(
                groups=[group, group],
                ids=[source.channel_id, source.channel_id],
                kind="event",
                source=source_label(source),
                what=_event_words(source, plan.options.deidentify),
            )
        )
        group += 1
    onset, onset_from = _onset(plan)
    return TsZarrInfo(
        onset=iso_time(onset) if onset is not None else None,
        onset_from=onset_from,
        meta=not plan.options.deidentify,
        event_channels=len(plan.event_sources),
        channels=out,
    )


def _event_words(source: UnitsSource | IntervalsSource | AnnotationSeriesSource | NdjsonSource, deid: bool) -> str:
    if isinstance(source, UnitsSource):
        parts = [f"{_count(source.spikes, 'spike')} of {_count(source.units, 'unit')} (labels)"]
        if source.templates:
            parts.append("templates")
        if source.waveforms:
            parts.append(f"waveforms at {source.waveform_rate:g} Hz" if source.waveform_rate else "no waveform rate")
        count = source.spikes
    elif isinstance(source, IntervalsSource):
        label = f"labels from {source.label_column!r}" if source.label_column else "no label column"
        body = f"JSON bodies of {', '.join(source.body_columns)}" if source.body_columns else "no bodies"
        parts = [f"{_count(source.rows, 'annotation')} with durations", label, body]
        count = source.rows
    elif isinstance(source, AnnotationSeriesSource):
        parts = [f"{_count(source.rows, 'point annotation')}, labelled by their text"]
        count = source.rows
    else:
        parts = [f"{_count(source.marks, 'mark')} from the annotation file"]
        count = source.marks
    if count >= COUNT_LEVEL_EVENTS:
        parts.append("count levels")
    if deid and not isinstance(source, UnitsSource):
        parts.append("de-identified: no text")
    return "; ".join(parts)


def _onset(plan: Plan) -> tuple[int | None, str | None]:
    candidates = [(s.chunks[0].start_us, s.path) for s in plan.bundle_series()]
    candidates += [(s.first_us, source_label(s)) for s in plan.event_sources if s.first_us is not None]
    return min(candidates) if candidates else (None, None)
