"""The TS-Zarr tree of a continuous channel: paths, array specs and ``zarr.json`` documents.

```
<g>/raw                 (N,) float32, the samples on the grid (NaN where there is none)
<g>/<k>/                level group k = 1..7, {"period_us"}
<g>/<k>/env             (bins, 2) float32 (min, max)
<g>/<k>/mean            (bins,) float32
<g>/<k>/valid           (bins,) uint16 finite samples a bin: only for a channel with a non-finite sample
```
Every member of a level shares its rows: inner chunks and shards of ``env``'s geometry
(:func:`~nwb2pennsieve.plan.bundle_layout.plan_levels`: up to 8,192 bins a chunk; aligned shards
for levels 1-4 of a channel longer than one raw shard), as Pennsieve's producer sizes ``mean``
and ``valid``. Fill values: NaN for float32 (an unstored chunk reads as "no data"), 0 for counts.
"""

from __future__ import annotations

from typing import Any, Literal

from ...plan.bundle_layout import LevelLayout
from ..encode import ArraySpec, DType, group_metadata

ValidPolicy = Literal["never", "always", "if-nonfinite"]
MEMBERS: tuple[str, ...] = ("env", "mean", "valid")


def member_path(group: int, level: int, member: str, key: str = "") -> str:
    """``3/raw/c/0`` (level 0) or ``3/2/env/c/0/0``: a member array (or an object of it) of a channel."""
    base = f"{group}/raw" if level == 0 else f"{group}/{level}/{member}"
    return f"{base}/{key}" if key else base


def _spec(layout: LevelLayout, shape: tuple[int, ...], dtype: DType, zstd_level: int) -> ArraySpec:
    return ArraySpec(
        shape=shape, dtype=dtype, chunk_rows=layout.chunk_bins, shard_rows=layout.shard_bins, zstd_level=zstd_level
    )


def member_specs(layout: LevelLayout, zstd_level: int, *, counts: bool) -> dict[str, ArraySpec]:
    """The arrays of one level: ``raw`` for level 0; ``env``, ``mean`` (and ``valid``) for a level group."""
    if layout.level == 0:
        return {"raw": _spec(layout, (layout.bins,), "float32", zstd_level)}
    specs = {
        "env": _spec(layout, (layout.bins, 2), "float32", zstd_level),
        "mean": _spec(layout, (layout.bins,), "float32", zstd_level),
    }
    if counts:
        specs["valid"] = _spec(layout, (layout.bins,), "uint16", zstd_level)
    return specs


def continuous_documents(
    group: int, attributes: dict[str, Any], levels: list[LevelLayout], zstd_level: int, *, valid: bool
) -> dict[str, dict[str, Any]]:
    """``{path: zarr.json}`` of a continuous channel: its group, ``raw``, each level group and its members."""
    docs = {str(group): group_metadata(attributes)}
    for layout in levels:
        specs = member_specs(layout, zstd_level, counts=valid)
        if layout.level:
            docs[f"{group}/{layout.level}"] = group_metadata({"period_us": float(layout.period_us)})
        for name, spec in specs.items():
            docs[member_path(group, layout.level, name)] = spec.metadata()
    return docs


def continuous_attributes(ident: str, name: str, offset_us: int, rate_hz: float, unit: str) -> dict[str, Any]:
    """A continuous channel group's attributes (the format's keys; never ``offset_uv``)."""
    return {
        "id": ident,
        "kind": "continuous",
        "name": name,
        "offset_us": int(offset_us),
        "rate_hz": float(rate_hz),
        "unit": unit,
    }
