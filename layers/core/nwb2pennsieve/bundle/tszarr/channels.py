"""The TS-Zarr bundle's continuous channels: which group each is, its id, name, unit and offset.

Groups are dense from 0: the ElectricalSeries' channels in the chunk files' order, then the
bundle-only TimeSeries' channels; the event channels follow them (:mod:`.finish`). An
ElectricalSeries channel's ``id`` is its chunk files' name, ``channel-00012`` (so the two outputs
join); a TimeSeries channel's ``timeseries-00003``, numbered over the file's TimeSeries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...plan.bundle_layout import plan_levels
from ...plan.bundle_only import aux_id
from ...plan.events import phi_safe
from ...plan.grid import series_grid
from ...plan.models import Plan, SeriesPlan
from ..series import channel_id
from .layout import continuous_attributes, continuous_documents
from .reduce import ChannelLevels


@dataclass(frozen=True)
class ContinuousChannel:
    group: int
    series: SeriesPlan
    column: int
    id: str
    name: str


def first_group(plan: Plan, series: SeriesPlan) -> int:
    """The bundle group of the series' first channel (ElectricalSeries first, then TimeSeries)."""
    before = [*plan.series, *plan.aux_series[: series.index]] if series.bundle_only else plan.series[: series.index]
    return sum(len(s.channels) for s in before)


def continuous_channels(plan: Plan) -> list[ContinuousChannel]:
    out = []
    for series in plan.bundle_series():
        first = first_group(plan, series)
        for column, ch in enumerate(series.channels):
            ident = aux_id(ch.index) if series.bundle_only else channel_id(ch.index)
            out.append(ContinuousChannel(first + column, series, column, ident, phi_safe(ch.name)))
    return out


def channel_levels(plan: Plan) -> dict[int, ChannelLevels]:
    """Every continuous channel's levels and ``valid`` policy, by group (each series' computed once)."""
    out: dict[int, ChannelLevels] = {}
    for series in plan.bundle_series():
        levels = ChannelLevels(plan_levels(series_grid(series).n_bins, series.rate), series.valid_policy)
        first = first_group(plan, series)
        out.update((first + c, levels) for c in range(len(series.channels)))
    return out


def continuous_docs(plan: Plan, onset_us: int, with_counts: set[int], zstd_level: int) -> dict[str, dict[str, Any]]:
    """``{path: zarr.json}`` of every continuous channel (``with_counts``: the groups with ``valid``)."""
    docs: dict[str, dict[str, Any]] = {}
    levels = {id(s): plan_levels(series_grid(s).n_bins, s.rate) for s in plan.bundle_series()}
    starts = {id(s): series_grid(s).start_us for s in plan.bundle_series()}
    for ch in continuous_channels(plan):
        s = ch.series
        attrs = continuous_attributes(ch.id, ch.name, starts[id(s)] - onset_us, s.rate, s.value_unit)
        docs |= continuous_documents(ch.group, attrs, levels[id(s)], zstd_level, valid=ch.group in with_counts)
    return docs
