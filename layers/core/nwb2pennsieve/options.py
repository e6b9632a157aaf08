"""The conversion options: what one conversion writes and how, in one typed model.

The settings model (:mod:`nwb2pennsieve.settings`, and the cloud's) builds a
:class:`ConversionOptions` once from the environment, the flags or an execution's overrides; the
planner stores it in the plan (``Plan.options``), and every executor, ``inspect`` and the cloud
steps read it from there. No option travels beside the plan.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, model_validator

SAMPLES_PER_MIB = 131_072  # 1 MiB of float64

DEFAULT_CHUNK_SIZE_MB = 1.0
# A work item writes at most this many MiB of float64. When writing to S3 the writer holds one
# chunk of each of the item's channels in memory (≤ this), so 512 fits a 2 GB Lambda with room
# for the input slab and the runtime.
DEFAULT_MAX_ITEM_MB = 512.0
# The viewer bundle's Zstd level (1-22). Pennsieve's producer uses 5; a lower level compresses
# several times faster for a slightly larger bundle (bench/results-bundle.md).
DEFAULT_BUNDLE_ZSTD_LEVEL = 4


class OutputFormat(StrEnum):
    """What a conversion writes: the chunk files (and channel metadata) the importer uploads,
    and/or Pennsieve's viewer bundle (docs/bundle.md). Both come from one read of each slab."""

    CHUNKS = "chunks"
    BUNDLE = "bundle"


FORMAT_ORDER = (OutputFormat.CHUNKS, OutputFormat.BUNDLE)


class BundleLayout(StrEnum):
    """The viewer bundle's layout: Pennsieve's TS-Zarr (default), or the older ts-zarr-py layout for
    platforms on a reader that predates TS-Zarr (docs/bundle.md)."""

    TSZARR = "ts-zarr"
    LEGACY = "legacy"


def formats_text(formats: frozenset[OutputFormat]) -> str:
    """``chunks``, ``bundle`` or ``chunks,bundle``: the canonical spelling (also in plan.json)."""
    return ",".join(f.value for f in FORMAT_ORDER if f in formats)


def parse_formats(value: Any) -> frozenset[OutputFormat]:
    """``chunks``, ``bundle`` or both, comma-separated (any order, any case), or a collection of them."""
    if isinstance(value, str):
        value = value.split(",")
    words = {str(w).strip().lower() for w in value if str(w).strip()}
    known = {f.value for f in OutputFormat}
    if not words or not words <= known:
        raise ValueError("chunks, bundle or chunks,bundle")
    return frozenset(OutputFormat(w) for w in words)


Formats = Annotated[
    frozenset[OutputFormat],
    PlainSerializer(lambda formats: [f.value for f in FORMAT_ORDER if f in formats], return_type=list[str]),
]
"""A set of output formats; serialized as a list in canonical order, so plan.json is deterministic."""


class ConversionOptions(BaseModel):
    """How one file is converted: built once by the settings model, stored in the plan."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    formats: Formats = Field(default=frozenset({OutputFormat.CHUNKS}), description="what the conversion writes")
    gzip_level: int = Field(default=0, ge=0, le=3, description="chunk files: 0 stored gzip blocks, 1-3 ISA-L deflate")
    chunk_size_mb: float = Field(
        default=DEFAULT_CHUNK_SIZE_MB, gt=0, allow_inf_nan=False, description="MiB of float64 per chunk file"
    )
    max_item_mb: float = Field(
        default=DEFAULT_MAX_ITEM_MB, gt=0, allow_inf_nan=False, description="float64 MiB one work item writes"
    )
    series: tuple[str, ...] = Field(default=(), description="HDF5 paths of the series to convert; empty: all")
    skip_invalid_series: bool = Field(default=False, description="convert the valid series, skip the invalid ones")
    bundle_zstd_level: int = Field(default=DEFAULT_BUNDLE_ZSTD_LEVEL, ge=1, le=22, description="the bundle's Zstd")
    bundle_layout: BundleLayout = Field(default=BundleLayout.TSZARR, description="the bundle's layout")
    deidentify: bool = Field(default=False, description="the bundle without meta/ and without free text")

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, data: Any) -> Any:
        if isinstance(data, dict) and "formats" in data and not isinstance(data["formats"], frozenset):
            data = {**data, "formats": parse_formats(data["formats"])}
        return data

    @model_validator(mode="after")
    def _item_holds_a_chunk(self) -> ConversionOptions:
        # A work item holds at least one chunk of one channel.
        if self.max_item_mb < self.chunk_size_mb:
            object.__setattr__(self, "max_item_mb", float(self.chunk_size_mb))
        return self

    @property
    def chunk_samples(self) -> int:
        """Samples per chunk file: ``CHUNK_SIZE_MB`` MiB of float64, rounded down as Pennsieve's
        reference processor does (at least one)."""
        return max(1, math.floor(self.chunk_size_mb * SAMPLES_PER_MIB))

    @property
    def writes_chunks(self) -> bool:
        return OutputFormat.CHUNKS in self.formats

    @property
    def writes_bundle(self) -> bool:
        return OutputFormat.BUNDLE in self.formats

    @property
    def tszarr(self) -> bool:
        """The bundle is written in the TS-Zarr layout (with the bundle on)."""
        return self.writes_bundle and self.bundle_layout == BundleLayout.TSZARR

    @property
    def formats_text(self) -> str:
        return formats_text(self.formats)
