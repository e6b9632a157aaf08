"""The TS-Zarr bundle's event channels, surveyed while planning: every Units table, every
TimeIntervals table, every AnnotationSeries and every annotation file beside the input, with
their channel ids, sizes and time ranges (the data is read again by the bundle's last step).

**Ids.** An NWB source's id is its HDF5 path without the leading ``/``, ``/`` turned into ``.``
and any character outside ``[A-Za-z0-9._-]`` into ``_`` (``units``, ``intervals.trials``,
``processing.ecephys.units``); one that is taken gets ``~2``, ``~3``. An annotation file's id is
its header's ``channel.id``: one already taken by another channel is an error naming the file.
No id, name or label is exactly ``subject`` or ``start_us`` (the validator's identity scan would
take it for metadata): such a one gets a trailing ``_``.

**Onset** (:func:`bundle_onset`): the earliest time anything in the bundle starts: a sample, a
spike, an annotation (which may precede the first sample).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import InvalidInputError, InvalidSeriesError
from ..source.annotation_files import AnnotationFile, parse
from ..source.annotations import annotation_times, table_layout, time_range, times_us
from ..source.contents import FoundSeries
from ..source.spikes import survey_units
from .models import NotConverted, SeriesPlan
from .sources import AnnotationSeriesSource, EventSource, IntervalsSource, NdjsonSource, UnitsSource

RESERVED_WORDS = ("subject", "start_us")
_ID_CHARS = re.compile(r"[^A-Za-z0-9._-]")
_READ_ERRORS = (OSError, ValueError, TypeError, KeyError, RuntimeError)


def phi_safe(word: str) -> str:
    """``word``, with a trailing ``_`` when it is exactly a key the validator reserves for meta/."""
    return word + "_" if word in RESERVED_WORDS else word


@dataclass(frozen=True)
class FoundFile:
    """An annotation file to read: its name, where it is (path or s3:// URI), its version and bytes."""

    name: str
    location: str
    data: bytes
    version_id: str | None = None


class _Ids:
    """Channel ids given so far, unique across every channel of the bundle."""

    def __init__(self, taken: Sequence[str]) -> None:
        self.taken = set(taken)

    def from_path(self, path: str) -> str:
        base = phi_safe(_ID_CHARS.sub("_", path.strip("/").replace("/", ".")) or "events")
        ident, k = base, 2
        while ident in self.taken:
            ident, k = f"{base}~{k}", k + 1
        self.taken.add(ident)
        return ident

    def claim(self, ident: str, file: str, source: str) -> str:
        ident = phi_safe(ident)
        if ident in self.taken:
            raise InvalidInputError(
                f"annotation file {file}: its channel id {ident!r} is already another channel's in the bundle",
                file=source,
            )
        self.taken.add(ident)
        return ident


@dataclass
class EventSurvey:
    """What :func:`survey_events` found: the sources, and what is left out with why."""

    sources: list[EventSource]
    notes: list[NotConverted]
    parsed: list[AnnotationFile]


def survey_events(
    units: list[FoundSeries],
    intervals: list[FoundSeries],
    annotation_series: list[FoundSeries],
    files: Sequence[FoundFile],
    *,
    reference_us: int,
    session_start_us: int,
    taken_ids: Sequence[str],
    source: str,
) -> EventSurvey:
    """Every event source in bundle order (Units, TimeIntervals, AnnotationSeries, files by name).

    A source that cannot be read or holds nothing is a note; an annotation file that is not
    valid is an :class:`InvalidInputError` naming the file and the line.
    """
    ids = _Ids(taken_ids)
    out = EventSurvey(sources=[], notes=[], parsed=[])
    for found in units + intervals + annotation_series:
        try:
            out.sources.append(_nwb_source(found, reference_us, ids))
        except _Empty as exc:
            out.notes.append(NotConverted(path=found.path, neurodata_type=found.neurodata_type, reason=str(exc)))
        except (InvalidSeriesError, *_READ_ERRORS) as exc:
            reason = exc.reason if isinstance(exc, InvalidSeriesError) else f"it cannot be read ({exc})"
            out.notes.append(NotConverted(path=found.path, neurodata_type=found.neurodata_type, reason=reason))
    for f in sorted(files, key=lambda f: f.name):
        parsed = parse(f.name, f.data, session_start_us=session_start_us, source=source)
        if not parsed.marks:
            out.notes.append(NotConverted(path=f.name, neurodata_type="annotation file", reason="it has no marks"))
            continue
        out.parsed.append(parsed)
        out.sources.append(
            NdjsonSource(
                channel_id=ids.claim(parsed.channel_id, f.name, source),
                name=parsed.channel_name,
                first_us=parsed.marks[0].time_us,
                last_us=max(m.time_us + (m.duration_us or 0) for m in parsed.marks),
                file=f.name,
                location=f.location,
                version_id=f.version_id,
                sha256=hashlib.sha256(f.data).hexdigest(),
                marks=len(parsed.marks),
            )
        )
    return out


class _Empty(Exception):
    """A source with nothing to show: no channel, a note."""


def _nwb_source(found: FoundSeries, reference_us: int, ids: _Ids) -> EventSource:
    group, path = found.group, found.path
    name = path.rsplit("/", 1)[-1]
    if found.core_type == "Units":
        units = survey_units(path, group, reference_us)
        if not units.spikes:
            raise _Empty("it has no spike times")
        return UnitsSource(
            channel_id=ids.from_path(path),
            name=name,
            first_us=units.first_us,
            last_us=units.last_us,
            path=path,
            units=units.units,
            spikes=units.spikes,
            templates=units.templates,
            waveforms=units.waveforms,
            waveform_rate=units.rate,
            rate_from=units.rate_from,
        )
    if found.core_type == "TimeIntervals":
        layout = table_layout(group)
        span = time_range(group["start_time"], reference_us, "start times")
        stops = time_range(group["stop_time"], reference_us, "stop times")
        if not layout.rows or span is None:
            raise _Empty("it has no rows" if not layout.rows else "no row has a finite start_time")
        return IntervalsSource(
            channel_id=ids.from_path(path),
            name=name,
            first_us=span[0],
            last_us=max(span[1], stops[1]) if stops else span[1],
            path=path,
            rows=layout.rows,
            label_column=layout.label_column,
            body_columns=layout.body_columns,
        )
    seconds, rows = annotation_times(group)
    finite = seconds[seconds == seconds]
    if not finite.size:
        raise _Empty("it has no texts" if not rows else "no text has a finite time")
    first, last = times_us(finite[[finite.argmin(), finite.argmax()]], reference_us, "timestamps").tolist()
    return AnnotationSeriesSource(
        channel_id=ids.from_path(path), name=name, first_us=first, last_us=last, path=path, rows=rows
    )


def recording_span(
    series: Sequence[SeriesPlan], sources: Sequence[EventSource], session_start_us: int
) -> tuple[int, int]:
    """(start, end) µs of the recording as the NWB file has it: from the session start or the
    earliest sample, spike or annotation, to the latest (an interval's stop included)."""
    firsts = [s.chunks[0].start_us for s in series] + [
        s.first_us for s in sources if not isinstance(s, NdjsonSource) and s.first_us is not None
    ]
    lasts = [s.chunks[-1].end_us for s in series] + [
        s.last_us for s in sources if not isinstance(s, NdjsonSource) and s.last_us is not None
    ]
    start = min([session_start_us, *firsts])
    return start, max([start, *lasts])


def check_files_inside(
    parsed: Sequence[AnnotationFile], span: tuple[int, int], session_start_us: int, source: str
) -> None:
    """An annotation file's mark that starts outside the recording is an error naming the file and line."""
    for f in parsed:
        for mark in f.marks:
            if not span[0] <= mark.time_us <= span[1]:
                at = (mark.time_us - session_start_us) / 1e6
                low, high = ((t - session_start_us) / 1e6 for t in span)
                raise InvalidInputError(
                    f"annotation file {f.name} line {mark.line}: its mark at {at:.6f} s from the session start "
                    f"is outside the recording ({low:.6f} s to {high:.6f} s)",
                    file=source,
                )


def bundle_onset(series: Sequence[SeriesPlan], sources: Sequence[EventSource]) -> int | None:
    """The earliest time anything in the bundle starts (None: the bundle holds nothing)."""
    firsts = [s.chunks[0].start_us for s in series] + [s.first_us for s in sources if s.first_us is not None]
    return min(firsts) if firsts else None
