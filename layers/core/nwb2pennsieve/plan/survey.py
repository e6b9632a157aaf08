"""Planning: from an open NWB file to a :class:`Plan` (series, channels, segments, chunks, work items).

Planning reads only metadata, the timestamps (when a series has explicit ones) and one small
slab per series for the scaling sanity check, so it is cheap even over S3. The steps: the file's
times, what the file holds (:mod:`~nwb2pennsieve.source.contents`), each series checked and
timed (:mod:`.series`), file-wide channels (:mod:`.channels`), then the work items (:mod:`.items`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import h5py

from ..errors import (
    InvalidFileError,
    InvalidInputError,
    InvalidSeriesError,
    NothingToConvertError,
    Nwb2PennsieveError,
    SeriesSelectionError,
)
from ..options import ConversionOptions
from ..source.contents import SPIKE_EVENT_SERIES, FileContents, FoundSeries, find_electrical_series
from ..source.nwb import child, damage_reason, session_start, timestamps_reference
from .bundle_only import BundleContents, bundle_contents
from .channels import assign_channels
from .events import FoundFile
from .items import count_work_items, series_work_items
from .models import NotConverted, Plan, SeriesPlan, SkippedSeries
from .series import MAX_CHANNELS, SeriesDraft, draft_series

# NWB puts metadata (devices, electrodes, subject) under /general and no TimeSeries.
METADATA_GROUP = "/general/"
# Why a series left out by a selection (``--series``) is not converted.
NOT_SELECTED = "not selected (--series)"
# Chunks are computed, never stored, but work items are listed: a plan holds at most this many
# (at the default 512 MiB per item, ~100 TiB of output), so a tiny file declaring an absurd length
# is refused in bounded time and memory.
MAX_WORK_ITEMS = 200_000
# A session start before this (1980-01-01, µs since the epoch) is taken for a missing date: Pennsieve's
# Persyst converter writes 1970-01-01 when its source has none.
EARLIEST_PLAUSIBLE_US = 315_532_800_000_000
# What h5py raises on damaged data while a series is planned.
_DAMAGE_ERRORS = (OSError, ValueError, TypeError, KeyError, RuntimeError)


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


@dataclass(frozen=True)
class _Times:
    """The file's session start and the reference every time in it is relative to."""

    start_text: str
    session_us: int
    reference: tuple[str, int, bool] | None
    reference_us: int


@dataclass
class _Findings:
    """What the survey collects on the way: skipped series, objects not converted, problems, warnings."""

    warnings: list[str]
    not_converted: list[NotConverted]
    skipped: list[SkippedSeries] = field(default_factory=list)
    problems: list[InvalidSeriesError] = field(default_factory=list)


def build_plan(
    h5: h5py.File, *, source: str, options: ConversionOptions, annotation_files: Sequence[FoundFile] = ()
) -> Plan:
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

    With the TS-Zarr bundle the plan also holds the TimeSeries the bundle alone carries, the event
    sources (Units, annotations, ``annotation_files`` found beside the input) and the bundle's
    onset (:mod:`.bundle_only`); a file with any of them and no ElectricalSeries has a plan too.
    """
    return survey(h5, source=source, options=options, annotation_files=annotation_files).plan_or_raise()


def survey(
    h5: h5py.File, *, source: str, options: ConversionOptions, annotation_files: Sequence[FoundFile] = ()
) -> Survey:
    """:func:`build_plan`, but a file with nothing to convert is a :class:`Survey` without a plan."""
    try:
        return _survey(h5, source, options, annotation_files)
    except Nwb2PennsieveError as exc:
        raise exc.with_file(source) from None


def normalize_series_path(path: str) -> str:
    """``acquisition/ES/`` → ``/acquisition/ES``: the form series paths have in the plan."""
    return "/" + path.strip().strip("/")


def _survey(h5: h5py.File, source: str, options: ConversionOptions, annotation_files: Sequence[FoundFile]) -> Survey:
    warnings: list[str] = []
    times = _file_times(h5, warnings)
    contents = find_electrical_series(h5)
    candidates = contents.series + (contents.timeseries if options.tszarr else [])
    selected = _selection(options.series, candidates)
    findings = _Findings(
        warnings=warnings,
        not_converted=[
            NotConverted(path=o.path, neurodata_type=o.neurodata_type, reason=o.reason) for o in contents.others
        ],
    )
    _note_unreadable(contents, selected, findings)
    drafts = _draft_all(contents.series, selected, options, times.reference_us, findings)
    _settle_problems(findings, options.skip_invalid_series, selected, source)
    extra = None
    if options.tszarr:
        extra = bundle_contents(
            contents, drafts, selected, annotation_files, times.reference_us, times.session_us, source, options
        )
        findings.not_converted = extra.not_converted(findings.not_converted)
    else:
        findings.not_converted += _tables_left_out(contents, options)
    not_converted = sorted(findings.not_converted, key=lambda o: o.path)
    plan = None
    if drafts or (extra is not None and extra.holds_anything):
        plan = _plan(source, times, options, drafts, selected, findings, not_converted, extra)
    return Survey(
        source=source,
        plan=plan,
        skipped=findings.skipped,
        warnings=warnings,
        other_types=contents.other_types,
        nothing_reason=None
        if plan
        else _nothing_reason(contents.series, findings.skipped, not_converted, contents.other_types),
        not_converted=not_converted,
    )


def _plan(
    source: str,
    times: _Times,
    options: ConversionOptions,
    drafts: list[SeriesDraft],
    selected: set[str],
    findings: _Findings,
    not_converted: list[NotConverted],
    extra: BundleContents | None,
) -> Plan:
    series_plans = _chosen_series(drafts, selected, times.reference_us, options.chunk_samples, findings)
    aux = extra.aux_series if extra else []
    _check_size(series_plans + aux, options)
    if extra is not None:
        extra.check_files(series_plans, source)
    return Plan(
        source=source,
        session_start=times.start_text,
        session_start_us=times.session_us,
        timestamps_reference_time=times.reference[0] if times.reference else None,
        timestamps_reference_us=times.reference_us if times.reference else None,
        options=options,
        series=series_plans,
        work_items=[item for s in series_plans + aux for item in series_work_items(s, options)],
        skipped=findings.skipped,
        not_converted=not_converted,
        warnings=findings.warnings + (extra.warnings if extra else []),
        aux_series=aux,
        event_sources=extra.sources if extra else [],
        bundle_onset_us=extra.onset(series_plans) if extra else None,
    )


# Why a table is left out without the TS-Zarr bundle: it was once dropped without a word.
_TABLE_REASONS = {
    "TimeIntervals": "annotations are written into the TS-Zarr viewer bundle only (--formats bundle)",
    "Units": "spikes are written into the viewer bundle only (--formats bundle)",
}


def _tables_left_out(contents: FileContents, options: ConversionOptions) -> list[NotConverted]:
    """Notes for the TimeIntervals (and, without any bundle, the Units) tables a conversion leaves out."""
    tables = contents.intervals + ([] if options.writes_bundle else contents.units)
    return [
        NotConverted(path=t.path, neurodata_type=t.neurodata_type, reason=_TABLE_REASONS[t.core_type]) for t in tables
    ]


def _file_times(h5: h5py.File, warnings: list[str]) -> _Times:
    start_text, session_us, naive = session_start(h5)
    if naive:
        warnings.append(f"session_start_time {start_text!r} has no time zone; taken as UTC")
    if session_us < EARLIEST_PLAUSIBLE_US:
        warnings.append(
            f"session_start_time {start_text!r} is before 1980: the recording's source probably had no date "
            "(converters write 1970 then), so every time in the output is relative to that"
        )
    # NWB: every time in the file is relative to timestamps_reference_time (default: the session start).
    reference = timestamps_reference(h5)
    reference_us = session_us
    if reference is not None:
        reference_us = reference[1]
        if reference[2]:
            warnings.append(f"timestamps_reference_time {reference[0]!r} has no time zone; taken as UTC")
    return _Times(start_text, session_us, reference, reference_us)


def _selection(series: Sequence[str], found: list[FoundSeries]) -> set[str]:
    """The selected series paths (empty: all); a path that names no series is a usage error."""
    selected = {normalize_series_path(p) for p in series}
    unknown = sorted(selected - {s.path for s in found})
    if unknown:
        listed = ", ".join(s.path for s in found) or "none"
        raise SeriesSelectionError(f"--series {unknown[0]} names no series in the file (its series: {listed})")
    return selected


def _note_unreadable(contents: FileContents, selected: set[str], findings: _Findings) -> None:
    """An object that cannot be read may be a series that would be lost: a problem, unless it is
    metadata, or a selection names only series that were found."""
    for u in contents.unreadable:
        if u.path.startswith(METADATA_GROUP):  # the schema puts no series there: say so, but go on
            findings.warnings.append(f"{u.path} cannot be read ({u.reason}); it is metadata, not a series")
        elif selected:  # a selection names series that were found: this is none of them
            findings.warnings.append(f"{u.path} cannot be read ({u.reason}); it is not selected")
        else:
            findings.problems.append(
                InvalidSeriesError(
                    f"cannot be read, so it may be a series that would be lost: {u.reason}", series=u.path
                )
            )


def _draft_all(
    found: list[FoundSeries], selected: set[str], options: ConversionOptions, reference_us: int, findings: _Findings
) -> list[SeriesDraft]:
    """Every continuous series checked and timed, selected or not (a series left out is planned
    too, so its channels take their indices and names, but its problems fail nothing and its
    warnings are not this conversion's)."""
    drafts: list[SeriesDraft] = []
    for series in found:
        wanted = not selected or series.path in selected
        # The series' error boundary: every read of it while planning happens in here.
        try:
            reason = _not_continuous(series)
            if reason:
                if selected and wanted:
                    raise SeriesSelectionError(f"--series {series.path} names no convertible series: {reason}")
                findings.not_converted.append(
                    NotConverted(path=series.path, neurodata_type=series.neurodata_type, reason=reason)
                )
                continue
            strict = wanted and not options.skip_invalid_series
            warnings = findings.warnings if wanted else []
            drafts.append(draft_series(series, reference_us, options.chunk_samples, warnings, strict=strict))
        except (InvalidSeriesError, *_DAMAGE_ERRORS) as exc:
            _series_problem(series.path, exc, wanted, findings)
    return drafts


def _series_problem(path: str, exc: Exception, wanted: bool, findings: _Findings) -> None:
    if not wanted:
        findings.skipped.append(SkippedSeries(path=path, reason=NOT_SELECTED))
        return
    if isinstance(exc, InvalidSeriesError):
        exc.series = path
        findings.problems.append(exc)
    else:  # h5py errors on damaged data
        findings.problems.append(InvalidSeriesError(f"cannot be read: {damage_reason(exc)}", series=path))


def _settle_problems(findings: _Findings, skip_invalid_series: bool, selected: set[str], source: str) -> None:
    """Fail the file on any problem (listing them all), or skip the series with a warning each."""
    problems = sorted(findings.problems, key=lambda p: p.series or "")
    if problems and not skip_invalid_series:
        raise InvalidFileError(source, problems)
    if problems and selected:
        first = problems[0]
        raise SeriesSelectionError(f"--series {first.series} names no convertible series: {first.reason}")
    for p in problems:
        findings.skipped.append(SkippedSeries(path=p.series or "", reason=p.reason))
        findings.warnings.append(f"skipped {p.series}: {p.reason}")


def _chosen_series(
    drafts: list[SeriesDraft], selected: set[str], reference_us: int, chunk_samples: int, findings: _Findings
) -> list[SeriesPlan]:
    """Every series' channels get file-wide indices and names; the selected ones are kept."""
    series_plans: list[SeriesPlan] = []
    for d, s in zip(drafts, assign_channels(drafts, reference_us, chunk_samples), strict=True):
        if not selected or s.path in selected:
            series_plans.append(s.model_copy(update={"index": len(series_plans)}))
            if d.scaling_warning:
                findings.warnings.append(d.scaling_warning)
        else:
            findings.skipped.append(SkippedSeries(path=s.path, reason=NOT_SELECTED))
    if selected:
        findings.skipped.sort(key=lambda s: s.path)
    return series_plans


def _check_size(series_plans: list[SeriesPlan], options: ConversionOptions) -> None:
    """Refuse a plan too big to list, before listing it (a tiny file may declare any length)."""
    channels = sum(len(s.channels) for s in series_plans if not s.bundle_only)
    if channels > MAX_CHANNELS:
        raise InvalidInputError(
            f"its series have {channels:,} channels in all, more than the {MAX_CHANNELS:,} a conversion can name "
            "(channel-00000 to channel-99999)"
        )
    count = sum(count_work_items(s, options) for s in series_plans)
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
