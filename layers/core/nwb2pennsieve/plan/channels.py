"""File-wide channels: every series' columns get an index and a name unique across the file."""

from __future__ import annotations

from collections import Counter

from ..source.nwb import compression_name
from .models import ChannelPlan, SeriesPlan
from .series import SeriesDraft


class UniqueNames:
    """Names given so far across the file.

    A name already taken by an earlier series is qualified as ``{name} ({series name})``; a name
    repeated inside one series gets `` #2``, `` #3`` ... on its later occurrences.
    """

    def __init__(self) -> None:
        self._taken: set[str] = set()

    def series_names(self, raw_names: list[str], series_name: str) -> list[str]:
        repeats: Counter[str] = Counter()
        names = []
        for raw_name in raw_names:
            repeats[raw_name] += 1
            name = f"{raw_name} #{repeats[raw_name]}" if repeats[raw_name] > 1 else raw_name
            if name in self._taken:
                name = f"{name} ({series_name})"
            base, k = name, 2
            while name in self._taken:
                name = f"{base} #{k}"
                k += 1
            self._taken.add(name)
            names.append(name)
        return names


def assign_channels(
    drafts: list[SeriesDraft], reference_us: int, chunk_samples: int, *, unique: UniqueNames | None = None
) -> list[SeriesPlan]:
    """The series' plans, with file-wide channel indices (series in path order, then columns) and
    file-wide unique names (``unique``: the names given so far, when the ElectricalSeries' are
    given first and the bundle-only TimeSeries' after them, numbered apart)."""
    unique = unique if unique is not None else UniqueNames()
    index = 0
    plans = []
    for s, d in enumerate(drafts):
        series_name = d.found.path.rsplit("/", 1)[-1]
        names = unique.series_names(d.names, series_name)
        channels = [
            ChannelPlan(
                index=index + column,
                column=column,
                name=name,
                group=group,
                scale=float(d.scales[column]),
                offset=d.offset,
            )
            for column, (name, group) in enumerate(zip(names, d.groups, strict=True))
        ]
        index += len(channels)
        plans.append(_series_plan(s, d, series_name, channels, reference_us, chunk_samples))
    return plans


def _series_plan(
    s: int, d: SeriesDraft, series_name: str, channels: list[ChannelPlan], reference_us: int, chunk_samples: int
) -> SeriesPlan:
    chunks = d.data.chunks
    return SeriesPlan(
        index=s,
        path=d.found.path,
        name=series_name,
        neurodata_type=d.found.neurodata_type,
        data_path=f"{d.found.path}/data",
        dtype=d.data.dtype.str,
        shape=tuple(int(x) for x in d.data.shape),
        hdf5_chunks=tuple(int(x) for x in chunks) if chunks else None,
        compression=compression_name(d.data),
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
        bundle_only=d.bundle_only,
        value_unit=d.value_unit,
    )
