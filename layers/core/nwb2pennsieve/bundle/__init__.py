"""Pennsieve's viewer bundle: pyramid Zarr v3 (float32 µV levels 0..7, min/max folds, Zstd, sharded,
consolidated metadata) and unit channels, written by us so every writer emits whole, deterministic
shard objects through the project's :class:`~nwb2pennsieve.output.storage.Store`.

Flow for one series (the writer, the local pool and the cloud all use the same pieces):

1. plan: ``levels = plan_levels(n_bins0, rate_hz)``; ``plan = align_windows(n_bins0, proposed, levels)``
   (pure; the same in every process);
2. work items: per window and block of channels, ``ItemWriter(store, plan, w, channels)``,
   ``feed`` slabs, ``finish()`` -> :class:`ItemPartial` (or None: nothing to reduce);
3. reduce: ``reduce_levels(store, plan, channels, partials)``;
4. metadata, last: ``write_documents(store, docs)`` with ``continuous_documents(...)`` of every
   continuous channel and ``write_unit_channel(...)`` of every unit channel; then
   ``asset_properties(name)`` beside the bundle.

:func:`write_series` does 1-3 in one process for a series held in memory.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..output.storage import Store
from ..plan.bundle_layout import LevelLayout, WindowPlan, align_windows, chunk_and_shard_bins, level_count, plan_levels
from .continuous import ItemPartial, ItemWriter, reduce_levels, write_window
from .encode import ZSTD_LEVEL, ArraySpec, decode_index
from .fold import fold_level, fold_pairs, fold_samples, pyramid
from .metadata import ASSET_PROPERTIES, ChannelInfo, asset_properties, continuous_documents, write_documents
from .units import MAX_UNITS_PER_CHANNEL, UnitChannel, UnitsTable, unit_channels, write_unit_channel


def write_series(
    store: Store,
    channels: Sequence[int],
    data: np.ndarray,
    plan: WindowPlan,
    *,
    slab_rows: int = 1 << 16,
    zstd_level: int = ZSTD_LEVEL,
) -> None:
    """Every window then the reduce, for ``data`` (``(n_bins0, channels)`` float32) in one process."""
    partials = []
    for w, (a, b) in enumerate(plan.windows):
        writer = ItemWriter(store, plan, w, channels, zstd_level=zstd_level)
        for s in range(a, b, slab_rows):
            writer.feed(data[s : min(b, s + slab_rows)])
        partial = writer.finish()
        if partial is not None:
            partials.append(partial)
    reduce_levels(store, plan, channels, partials, zstd_level=zstd_level)


__all__ = [
    "ASSET_PROPERTIES",
    "MAX_UNITS_PER_CHANNEL",
    "ArraySpec",
    "ChannelInfo",
    "ItemPartial",
    "ItemWriter",
    "LevelLayout",
    "UnitChannel",
    "UnitsTable",
    "WindowPlan",
    "align_windows",
    "asset_properties",
    "chunk_and_shard_bins",
    "continuous_documents",
    "decode_index",
    "fold_level",
    "fold_pairs",
    "fold_samples",
    "level_count",
    "plan_levels",
    "pyramid",
    "reduce_levels",
    "unit_channels",
    "write_documents",
    "write_series",
    "write_unit_channel",
    "write_window",
]
