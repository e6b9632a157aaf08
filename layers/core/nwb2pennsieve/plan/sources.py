"""What the TS-Zarr bundle's event channels come from, as the plan records them (no data).

Planning surveys each source (its size, its first and last time) so the bundle's onset, the
channel ids and the checks are settled before any work item runs; the bundle's last step
(the local pool's parent, or Finalize) reads the data again and writes the channels
(docs/bundle.md). Every time here is µs since the Unix epoch, by the chunk files' rule.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Source(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    channel_id: str = Field(description="the event channel's id in the bundle (unique across every channel)")
    name: str = Field(description="the channel's display name")
    first_us: int | None = Field(default=None, description="the earliest time of the source (None: it is empty)")
    last_us: int | None = Field(default=None, description="the latest time (an interval's stop included)")


class UnitsSource(_Source):
    """A ``Units`` table: one event channel of spikes (labels = the unit's row)."""

    kind: Literal["units"] = "units"
    path: str
    units: int
    spikes: int
    templates: bool = Field(description="the table has waveform_mean: the channel has templates")
    waveforms: bool = Field(description="the table has per-spike waveforms (the waveforms column)")
    waveform_rate: float | None = Field(description="Hz of the waveforms' samples, when the file or a series gives one")
    rate_from: str = Field(description="where waveform_rate comes from")


class IntervalsSource(_Source):
    """A ``TimeIntervals`` table (trials, epochs, invalid_times, a converter's comments): one
    annotation channel with durations, labels from its label-like column and JSON bodies."""

    kind: Literal["intervals"] = "intervals"
    path: str
    rows: int
    label_column: str | None
    body_columns: list[str]


class AnnotationSeriesSource(_Source):
    """An ``AnnotationSeries``: text at times, one annotation channel of points."""

    kind: Literal["annotation_series"] = "annotation_series"
    path: str
    rows: int


class NdjsonSource(_Source):
    """An annotation interchange file (``pennsieve/annotations-1.1``) found beside the input."""

    kind: Literal["ndjson"] = "ndjson"
    file: str = Field(description="the file's name")
    location: str = Field(description="a local path or s3://bucket/key")
    version_id: str | None = Field(default=None, description="the S3 object version read at planning")
    sha256: str = Field(description="of the bytes read at planning: the last step reads the very same")
    marks: int


EventSource = Annotated[
    UnitsSource | IntervalsSource | AnnotationSeriesSource | NdjsonSource, Field(discriminator="kind")
]


def source_label(source: UnitsSource | IntervalsSource | AnnotationSeriesSource | NdjsonSource) -> str:
    """Where a source is, for messages: the HDF5 path, or the annotation file's name."""
    return source.file if isinstance(source, NdjsonSource) else source.path
