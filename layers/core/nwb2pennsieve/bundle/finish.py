"""The bundle's last step (the local pool's parent, or Finalize in the cloud): the reduce, the unit
channels, then the metadata with the root ``zarr.json`` last (the commit point), then
``asset-properties.json`` beside the bundle."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import h5py

from ..output.storage import Store
from ..plan.bundle_layout import LevelLayout, WindowPlan, plan_levels
from ..plan.grid import series_grid
from ..plan.models import Plan
from ..source.units import read_units
from .continuous import ItemPartial, reduce_levels
from .encode import ZSTD_LEVEL
from .metadata import ASSET_PROPERTIES, asset_properties, continuous_documents, write_documents
from .series import bundle_name, bundle_store, channel_infos, first_group
from .sink import put
from .units import unit_channels, write_unit_channel


def reduce_partials(
    store: Store, plan: Plan, blocks: Iterable[Sequence[ItemPartial]], *, zstd_level: int = ZSTD_LEVEL
) -> None:
    """Write the coarse levels of every channel from the items' partial results, a block at a time.

    Each element of ``blocks`` holds every window's partial results of some channels (one channel
    block of the work items), so only one block is held at once: with the default sizes a block of
    37 Neuropixels channels is 1.2 MB per 140 s of recording. A partial says which level it holds
    (the first level the items did not write), so the reduce needs no knowledge of how the items
    were cut; it checks that they cover every bin of every channel they name, and every channel
    of a series that has any.
    """
    # Each channel group's levels, from its series' grid (computed once a series, not once a channel).
    levels_of: dict[int, list[LevelLayout]] = {}
    for series in plan.series:
        first = first_group(plan, series)
        levels = plan_levels(series_grid(series).n_bins, series.rate)
        levels_of.update((g, levels) for g in range(first, first + len(series.channels)))
    done: set[int] = set()
    for block in blocks:
        by_channel: dict[int, list[ItemPartial]] = {}
        for p in block:
            for j, channel in enumerate(p.channels):
                bins = p.bins[:, j : j + 1]
                one = ItemPartial(window=p.window, level=p.level, start_bin=p.start_bin, bins=bins, channels=(channel,))
                by_channel.setdefault(channel, []).append(one)
        for g, parts in by_channel.items():
            if g in done:
                raise ValueError(f"partial results of channel group {g} in two blocks")
            if g not in levels_of:
                raise ValueError(f"partial results of channel group {g}, which the plan does not have")
            windows = WindowPlan(levels=levels_of[g], windows=[], reduce_from=parts[0].level)
            reduce_levels(store, windows, [g], parts, zstd_level=zstd_level)
            done.add(g)
    for series in plan.series:
        first = first_group(plan, series)
        have = [g for g in range(first, first + len(series.channels)) if g in done]
        if have and len(have) != len(series.channels):  # none: the items wrote every level
            raise ValueError(f"{series.path}: partial results for {len(have)} of its {len(series.channels)} channels")


def finish_bundle(
    output: Store,
    plan: Plan,
    h5: h5py.File,
    partials: Iterable[Sequence[ItemPartial]],
) -> int:
    """Reduce (``partials``: the items' partial results, a channel block at a time; see
    :func:`reduce_partials`), write the unit channels and every ``zarr.json`` (root last), then
    ``asset-properties.json`` into ``output`` (the conversion's output folder). Returns the number
    of channel groups. The Zstd level is the plan's (``options.bundle_zstd_level``)."""
    zstd_level = plan.options.bundle_zstd_level
    store = bundle_store(output, plan)
    reduce_partials(store, plan, partials, zstd_level=zstd_level)
    docs: dict[str, dict[str, Any]] = {}
    infos = channel_infos(plan)
    for series, info in infos:
        grid = series_grid(series)
        docs |= continuous_documents(info, plan_levels(grid.n_bins, series.rate), zstd_level=zstd_level)
    reference_us = plan.timestamps_reference_us if plan.timestamps_reference_us is not None else plan.session_start_us
    recording_start = min(info.start_us for _, info in infos)
    index = len(infos)
    for found in read_units(h5, reference_us):
        rate = found.waveform_rate or plan.series[0].rate
        for channel in unit_channels(found.table, first_index=index, rate_hz=rate, start_us=recording_start):
            docs |= write_unit_channel(store, channel, zstd_level=zstd_level)
            index += 1
    write_documents(store, docs)
    put(output, ASSET_PROPERTIES, asset_properties(bundle_name(plan)))
    return index
