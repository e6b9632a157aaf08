"""The plan and its parts: small typed models that round-trip through JSON.

The plan is the contract between the planning step and the writers: the local pool's
process pool and the cloud's Distributed Map execute the very same :class:`WorkItem` s.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterator, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Literal, overload

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from .summary import PlanSummary

from ..options import ConversionOptions, OutputFormat
from ..output.gzipstored import framed_size
from ..source.identity import SourceIdentity
from .sources import EventSource

PLAN_FORMAT = 2
CHANNEL_UNIT = "uV"
CHANNEL_TYPE = "CONTINUOUS"
FLOAT32_SAFE = 3.0e38  # below float32's largest finite value: a scaled value under this stays finite


def chunk_file_name(channel_index: int, start_us: int, end_us: int) -> str:
    """``channel-{index:05d}_{start_us}_{end_us}.bin.gz`` (pennsieve-api.md §1)."""
    return f"channel-{channel_index:05d}_{start_us}_{end_us}.bin.gz"


def metadata_file_name(channel_index: int) -> str:
    return f"channel-{channel_index:05d}.metadata.json"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ChannelPlan(_Model):
    """One output channel: a column of one series."""

    index: int = Field(description="channel index, unique across the whole file")
    column: int = Field(description="column of the series' data (0 for 1-D data)")
    name: str
    group: str
    scale: float = Field(description="conversion × channel_conversion: the series' unit per stored unit")
    offset: float = Field(description="added after scaling, in the series' unit")


class Segment(_Model):
    """A contiguous run of samples (no timestamp step > 2 sample periods inside)."""

    start: int = Field(description="first sample, inclusive")
    stop: int = Field(description="last sample, exclusive")


class Chunk(_Model):
    """Samples [start, stop) of one segment, written as one file per channel."""

    segment: int
    start: int
    stop: int
    start_us: int = Field(description="time of the first sample, µs since the Unix epoch (UTC)")
    end_us: int = Field(description="time of the last sample (inclusive), µs since the Unix epoch")

    @property
    def samples(self) -> int:
        return self.stop - self.start


class SeriesPlan(_Model):
    """One continuous ElectricalSeries and how it is cut up.

    Its chunks are not stored one by one (a tiny file may declare 10^12 samples): each segment is
    cut every ``chunk_samples``, and a chunk's times are computed from ``starting_time`` and
    ``rate`` (timing ``rate``) or listed in ``chunk_times`` (timing ``timestamps``, read from them).
    ``chunks`` is the resulting sequence of :class:`Chunk`, made on demand.
    """

    index: int
    path: str = Field(description="HDF5 path of the series group, e.g. /acquisition/ElectricalSeries")
    name: str
    neurodata_type: str
    data_path: str = Field(description="HDF5 path of the data dataset")
    dtype: str
    shape: tuple[int, ...]
    hdf5_chunks: tuple[int, ...] | None = None
    compression: str | None = None
    unit: str
    unit_factor: float = Field(description="µV per the series' unit")
    rate: float
    timing: Literal["rate", "timestamps"]
    channels: list[ChannelPlan]
    segments: list[Segment]
    chunk_samples: int = Field(description="samples per chunk: each segment is cut every chunk_samples")
    reference_us: int = Field(description="µs since the Unix epoch of the time the series' times are relative to")
    starting_time: float | None = Field(
        default=None, description="timing rate: seconds after reference_us of sample 0 (sample k at + k / rate)"
    )
    chunk_times: list[tuple[int, int]] | None = Field(
        default=None, description="timing timestamps: (start_us, end_us) of every chunk, from the timestamps"
    )
    bundle_only: bool = Field(
        default=False, description="a TimeSeries converted into the TS-Zarr bundle only (no chunk files)"
    )
    value_unit: str = Field(default=CHANNEL_UNIT, description="the bundle's unit of its values (uV for volts)")

    @property
    def valid_policy(self) -> Literal["never", "always", "if-nonfinite"]:
        """When the TS-Zarr bundle's levels carry ``valid`` counts (only for channels with a
        non-finite sample): ``always`` when the grid has gaps (NaN bins), ``if-nonfinite`` when the
        data may hold one (floats, or integers whose scaled value may overflow float32: decided
        after the items ran), ``never`` otherwise."""
        if len(self.segments) > 1:
            return "always"
        kind = self.dtype.lstrip("<>=|")[0]
        if kind == "f":
            return "if-nonfinite"
        bits = 8 * int(self.dtype.lstrip("<>=|")[1:])
        bound = max(abs(c.scale) * 2.0**bits + abs(c.offset) for c in self.channels) * abs(self.unit_factor)
        return "if-nonfinite" if bound >= FLOAT32_SAFE else "never"

    @cached_property
    def chunks(self) -> Chunks:
        return Chunks(self)

    def chunk_us(self, index: int, start: int, stop: int) -> tuple[int, int]:
        """(start_us, end_us) of chunk ``index``, samples [start, stop)."""
        if self.chunk_times is not None:
            return self.chunk_times[index]
        return self.sample_us(start), self.sample_us(stop - 1)

    def sample_us(self, k: int) -> int:
        """Time of sample ``k`` of a rate-timed series (µs since the epoch; half to even)."""
        assert self.starting_time is not None
        return self.reference_us + round(self.starting_time * 1e6 + (float(k) * 1e6) / self.rate)

    def output_bytes(self) -> int:
        """Bytes of this series' chunk files (gzip framing included), without listing the chunks."""
        total = 0
        for seg in self.segments:
            full, rest = divmod(seg.stop - seg.start, self.chunk_samples)
            total += full * framed_size(self.chunk_samples * 8) + (framed_size(rest * 8) if rest else 0)
        return total * len(self.channels)

    @property
    def n_samples(self) -> int:
        return self.shape[0]

    @property
    def n_columns(self) -> int:
        return self.shape[1] if len(self.shape) > 1 else 1


class Chunks(Sequence[Chunk]):
    """A series' chunks, computed when asked for: O(segments) memory whatever the length."""

    def __init__(self, series: SeriesPlan) -> None:
        self._series = series
        self._firsts: list[int] = []  # index of each segment's first chunk
        count = 0
        for seg in series.segments:
            self._firsts.append(count)
            count += -(-(seg.stop - seg.start) // series.chunk_samples)
        self._len = count

    def __len__(self) -> int:
        return self._len

    @overload
    def __getitem__(self, index: int) -> Chunk: ...
    @overload
    def __getitem__(self, index: slice) -> list[Chunk]: ...
    def __getitem__(self, index: int | slice) -> Chunk | list[Chunk]:
        if isinstance(index, slice):
            return [self._chunk(i) for i in range(*index.indices(self._len))]
        if index < 0:
            index += self._len
        if not 0 <= index < self._len:
            raise IndexError(index)
        return self._chunk(index)

    def __iter__(self) -> Iterator[Chunk]:
        return (self._chunk(i) for i in range(self._len))

    def _chunk(self, index: int) -> Chunk:
        series = self._series
        s = bisect_right(self._firsts, index) - 1
        seg = series.segments[s]
        start = seg.start + (index - self._firsts[s]) * series.chunk_samples
        stop = min(start + series.chunk_samples, seg.stop)
        start_us, end_us = series.chunk_us(index, start, stop)
        return Chunk(segment=s, start=start, stop=stop, start_us=start_us, end_us=end_us)


class WorkItem(_Model):
    """An independent unit of writing: channels × a time window of one segment of one series.

    Columns are a block of the series' data columns (aligned to the HDF5 chunk columns when the
    data is chunked); chunks are a run of the series' chunks inside one segment.
    """

    id: str
    series: int
    column_start: int
    column_stop: int
    chunk_start: int
    chunk_stop: int
    samples: int
    output_bytes: int = Field(description="float64 bytes this item writes (before gzip framing)")
    window: int | None = Field(
        default=None, description="with the viewer bundle: the series' bundle window this item writes (docs/bundle.md)"
    )
    window_bins: int | None = Field(default=None, description="the length of the series' bundle windows (grid bins)")
    aux: bool = Field(default=False, description="``series`` indexes Plan.aux_series (a bundle-only TimeSeries)")


class ChunkRecord(_Model):
    """One chunk file as written: its stored (gzip) size and the CRC-32 of its decompressed bytes.

    The compressed bytes of a level above 0 may differ between runs and CPUs (:mod:`.compression`);
    the CRC-32 of the samples does not.
    """

    name: str
    size: int = Field(description="bytes of the gzip file")
    crc32: int = Field(description="CRC-32 of the decompressed bytes (the gzip trailer's)")


class ItemResult(_Model):
    """What writing one work item produced."""

    id: str
    files: int
    payload_bytes: int = Field(description="float64 bytes written (before gzip)")
    stored_bytes: int = Field(default=0, description="bytes of the chunk files (after gzip)")
    records: list[ChunkRecord] = Field(default_factory=list, description="every chunk file written, in order")
    partials: bytes | None = Field(
        default=None, exclude=True, description="with the viewer bundle: the item's partial results for the reduce"
    )


class SkippedSeries(_Model):
    path: str
    reason: str


class NotConverted(_Model):
    """An object of the file that is not converted (not a continuous ElectricalSeries), and why."""

    path: str
    neurodata_type: str
    reason: str

    def note(self, source: str) -> str:
        """``note: FILE: not converted: PATH (TYPE): why``, as the command line prints it."""
        return f"note: {source}: not converted: {self.path} ({self.neurodata_type}): {self.reason}"


def bundle_only_notes(plan: Plan) -> list[str]:
    """``note: FILE: in the viewer bundle only: PATH ...``: what the chunk files leave to the TS-Zarr bundle."""
    where = f"note: {plan.source}: in the viewer bundle only"
    lines = [
        f"{where}: {s.path} ({s.neurodata_type}): {len(s.channels)} channel{'s' if len(s.channels) > 1 else ''} "
        f"in {s.value_unit}, not an ElectricalSeries"
        for s in plan.aux_series
    ]
    for e in plan.event_sources:
        what = {"units": "spike events", "intervals": "annotations", "annotation_series": "annotations"}
        label = getattr(e, "path", None) or getattr(e, "file", "")
        kind = what.get(e.kind, "annotations from the annotation file")
        lines.append(f"{where}: {label}: {kind} (event channel {e.channel_id})")
    return lines


class ChannelMetadata(_Model):
    """The body of ``channel-{index:05d}.metadata.json`` (pennsieve-api.md §1)."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    name: str
    start: int
    end: int
    unit: str = CHANNEL_UNIT
    rate: float
    type: str = CHANNEL_TYPE
    group: str
    last_annotation: int = Field(default=0, alias="lastAnnotation")
    properties: list[dict[str, str]] = Field(default_factory=list)


class Plan(_Model):
    """Everything the writers and the finalizer need, computed once from the file's metadata."""

    format: int = PLAN_FORMAT
    source: str = Field(description="the input file's name (or S3 URI)")
    session_start: str = Field(description="session_start_time as read, ISO 8601")
    session_start_us: int
    timestamps_reference_time: str | None = Field(
        default=None, description="timestamps_reference_time as read, when the file sets one"
    )
    timestamps_reference_us: int | None = Field(
        default=None, description="µs since the epoch of timestamps_reference_time; every chunk time is relative to it"
    )
    options: ConversionOptions = Field(description="how the file is converted: every executor reads them from here")
    series: list[SeriesPlan]
    work_items: list[WorkItem]
    skipped: list[SkippedSeries] = Field(default_factory=list)
    not_converted: list[NotConverted] = Field(
        default_factory=list, description="objects left out because they are not continuous ElectricalSeries"
    )
    warnings: list[str] = Field(default_factory=list)
    source_identity: SourceIdentity | None = Field(
        default=None,
        description="the version of the input planned (a local file's inode, size and times; a URL's ETag or "
        "Last-Modified): every later open of the input is checked against it",
    )
    aux_series: list[SeriesPlan] = Field(
        default_factory=list, description="TimeSeries written into the TS-Zarr bundle only (no chunk files)"
    )
    event_sources: list[EventSource] = Field(
        default_factory=list, description="the TS-Zarr bundle's event channels: Units, annotations, annotation files"
    )
    bundle_onset_us: int | None = Field(
        default=None, description="TS-Zarr: µs since the epoch of the earliest sample, spike or annotation"
    )

    def output_bytes(self) -> int:
        """Bytes the output needs on disk or S3, at most: every chunk file (gzip framing included),
        and with the viewer bundle its arrays uncompressed: level 0 float32, then per 4-bin block a
        (min, max) pair, in TS-Zarr also a mean and a valid count (4 + 8/3 bytes a sample, TS-Zarr
        4 + 8/3 + 4/3 + 2/3)."""
        chunk_files = sum(s.output_bytes() for s in self.series) if self.writes_chunks else 0
        per_3_samples = 26 if self.options.tszarr else 20
        bundle = sum(s.n_samples * len(s.channels) * per_3_samples // 3 for s in self.bundle_series())
        return chunk_files + (bundle if self.writes_bundle else 0)

    def bundle_series(self) -> list[SeriesPlan]:
        """Every series with channels in the bundle: the ElectricalSeries, then (TS-Zarr) the TimeSeries."""
        return [*self.series, *self.aux_series] if self.writes_bundle else []

    def series_of(self, item: WorkItem) -> SeriesPlan:
        """The series ``item`` writes."""
        return (self.aux_series if item.aux else self.series)[item.series]

    @property
    def chunk_samples(self) -> int:
        return self.options.chunk_samples

    @property
    def writes_chunks(self) -> bool:
        return OutputFormat.CHUNKS in self.options.formats

    @property
    def writes_bundle(self) -> bool:
        return OutputFormat.BUNDLE in self.options.formats

    def channels(self) -> list[tuple[SeriesPlan, ChannelPlan]]:
        return [(s, c) for s in self.series for c in s.channels]

    def item(self, item_id: str) -> WorkItem:
        for item in self.work_items:
            if item.id == item_id:
                return item
        raise KeyError(item_id)

    def item_file_names(self, item: WorkItem) -> list[str]:
        """Every chunk file ``item`` writes, chunk by chunk then channel by channel."""
        if not self.writes_chunks or item.aux:
            return []
        series = self.series[item.series]
        channels = series.channels[item.column_start : item.column_stop]
        return [
            chunk_file_name(ch.index, chunk.start_us, chunk.end_us)
            for chunk in series.chunks[item.chunk_start : item.chunk_stop]
            for ch in channels
        ]

    def file_names(self) -> list[str]:
        """Every chunk file of the plan, in work-item order."""
        return [name for item in self.work_items for name in self.item_file_names(item)]

    def channel_metadata(self) -> list[tuple[int, ChannelMetadata]]:
        """(channel index, metadata) of every channel; start/end span all its chunks."""
        out = []
        for series, ch in self.channels():
            out.append(
                (
                    ch.index,
                    ChannelMetadata(
                        name=ch.name,
                        start=series.chunks[0].start_us,
                        end=series.chunks[-1].end_us,
                        rate=series.rate,
                        group=ch.group,
                    ),
                )
            )
        return out

    def summary(self) -> PlanSummary:
        """What ``nwb2pennsieve plan`` prints: the totals, then each series and its channels."""
        from .summary import PlanSummary, SeriesSummary

        return PlanSummary(
            source=self.source,
            series=[SeriesSummary.of(s) for s in self.series],
            channels=sum(len(s.channels) for s in self.series),
            segments=sum(len(s.segments) for s in self.series),
            chunk_files=sum(len(s.chunks) * len(s.channels) for s in self.series),
            work_items=len(self.work_items),
            output_bytes=sum(i.output_bytes for i in self.work_items),
            skipped=self.skipped,
            not_converted=self.not_converted,
            warnings=self.warnings,
            session_start=self.session_start,
            chunk_samples=self.chunk_samples,
        )
