"""What only the TS-Zarr bundle carries, planned beside the ElectricalSeries: the other numeric
TimeSeries (acquisition and processing modules, each in its own unit: :func:`~.series.draft_timeseries`)
and the event sources (:mod:`.events`). None of it writes a chunk file; none of it fails a file
that converted before: a TimeSeries or a table that cannot be read is a note.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ..errors import InvalidSeriesError
from ..options import ConversionOptions
from ..source.annotation_files import AnnotationFile
from ..source.contents import FileContents
from .channels import UniqueNames, assign_channels
from .events import FoundFile, bundle_onset, check_files_inside, recording_span, survey_events
from .models import NotConverted, SeriesPlan
from .series import SeriesDraft, draft_timeseries
from .sources import EventSource

ANNOTATION_SERIES = "AnnotationSeries"
_DAMAGE = (OSError, ValueError, TypeError, KeyError, RuntimeError)


@dataclass
class BundleContents:
    """The bundle-only TimeSeries and event sources of a file, and the notes about them."""

    aux_series: list[SeriesPlan]
    sources: list[EventSource]
    parsed: list[AnnotationFile]
    session_start_us: int
    notes: list[NotConverted] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    handled: set[str] = field(default_factory=set)  # paths this survey speaks for (carried, or in its notes)

    @property
    def holds_anything(self) -> bool:
        return bool(self.aux_series or self.sources)

    def not_converted(self, notes: list[NotConverted]) -> list[NotConverted]:
        """The survey's notes without what the bundle carries, with this survey's own."""
        return [n for n in notes if n.path not in self.handled] + self.notes

    def onset(self, series: Sequence[SeriesPlan]) -> int | None:
        return bundle_onset([*series, *self.aux_series], self.sources)

    def check_files(self, series: Sequence[SeriesPlan], source: str) -> None:
        span = recording_span([*series, *self.aux_series], self.sources, self.session_start_us)
        check_files_inside(self.parsed, span, self.session_start_us, source)


def bundle_contents(
    contents: FileContents,
    drafts: list[SeriesDraft],
    selected: set[str],
    files: Sequence[FoundFile],
    reference_us: int,
    session_start_us: int,
    source: str,
    options: ConversionOptions,
) -> BundleContents:
    """The TimeSeries (``selected`` ones, or all) and event sources the TS-Zarr bundle carries."""
    notes: list[NotConverted] = []
    aux_drafts = []
    plain = [s for s in contents.timeseries if s.core_type != ANNOTATION_SERIES]
    for found in plain:
        try:
            aux_drafts.append(draft_timeseries(found, reference_us, options.chunk_samples))
        except (InvalidSeriesError, *_DAMAGE) as exc:
            if selected and found.path not in selected:
                continue
            reason = exc.reason if isinstance(exc, InvalidSeriesError) else f"it cannot be read ({exc})"
            notes.append(NotConverted(path=found.path, neurodata_type=found.neurodata_type, reason=reason))
    # The ElectricalSeries' names are taken first, in the order their channels are numbered; the
    # TimeSeries are numbered over the whole file, so a selection keeps their ids.
    unique = UniqueNames()
    assign_channels(drafts, reference_us, options.chunk_samples, unique=unique)
    every = assign_channels(aux_drafts, reference_us, options.chunk_samples, unique=unique)
    es_channels = sum(len(d.names) for d in drafts)
    taken = [f"channel-{i:05d}" for i in range(es_channels)] + [aux_id(c.index) for s in every for c in s.channels]
    chosen = [s for s in every if not selected or s.path in selected]
    aux = [s.model_copy(update={"index": i}) for i, s in enumerate(chosen)]
    annotation_series = [s for s in contents.timeseries if s.core_type == ANNOTATION_SERIES]
    events = survey_events(
        contents.units,
        contents.intervals,
        annotation_series,
        files,
        reference_us=reference_us,
        session_start_us=session_start_us,
        taken_ids=taken,
        source=source,
    )
    handled = {s.path for s in contents.timeseries + contents.units + contents.intervals}
    return BundleContents(
        aux_series=aux,
        sources=events.sources,
        parsed=events.parsed,
        session_start_us=session_start_us,
        notes=notes + events.notes,
        handled=handled,
    )


def aux_id(index: int) -> str:
    """A bundle-only TimeSeries channel's ``id``: ``timeseries-00003`` (numbered apart from the chunk files')."""
    return f"timeseries-{index:05d}"
