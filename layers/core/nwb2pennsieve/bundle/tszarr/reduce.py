"""The reduce of TS-Zarr continuous channels: the levels the items did not write, and ``valid``.

Per channel, from every window's :class:`~.partials.StatPartial`: the levels from ``reduce_from``
up (``env``, ``mean``, ``valid``), folded from the windows' bins put end to end. And the decision
the items could not make: a channel whose counts are kept only if it has a non-finite sample
(``if-nonfinite``: float data without gaps) gets ``valid`` at every level as soon as one window saw
one; its items wrote only the ``valid`` shards with a short count, and the others (every count
full) are written here, the same bytes an item would have written. Without one, the channel has
no ``valid`` member and no ``valid`` object exists.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ...output.storage import Store
from ...plan.bundle_layout import FOLD, LevelLayout
from ..encode import encode_shard
from ..sink import put
from .layout import ValidPolicy, member_path, member_specs
from .partials import StatPartial
from .stats import Bins, concat, fold, fold_tail, full_counts, means, supports


@dataclass(frozen=True)
class ChannelLevels:
    """What the reduce needs of one channel: its levels and its ``valid`` policy."""

    levels: list[LevelLayout]
    policy: ValidPolicy


def write_level(
    store: Store, group: int, layout: LevelLayout, bins: Bins, n0: int, zstd_level: int, *, counts: bool
) -> None:
    """Every shard of a level's members of one channel, from all its bins (``(n, 1)`` arrays)."""
    k = layout.level
    layout_specs = member_specs(layout, zstd_level, counts=counts)
    rows = {"env": np.stack([bins.lo[:, 0], bins.hi[:, 0]], axis=-1), "mean": means(bins, k, n0)[:, 0]}
    if counts:
        rows["valid"] = full_counts(bins, k, n0)[:, 0]
    for name, spec in layout_specs.items():
        for shard in range(spec.shard_count):
            a = shard * spec.shard_rows
            parts = encode_shard(spec, shard, rows[name][a : a + spec.shard_rows])
            if parts is not None:
                put(store, member_path(group, k, name, spec.shard_key(shard)), parts)


def reduce_channel(
    store: Store, group: int, channel: ChannelLevels, parts: Sequence[StatPartial], zstd_level: int
) -> bool:
    """Write what the items left of one channel; True when it has ``valid`` members."""
    ordered = sorted(parts, key=lambda p: (p.start_bin, p.window))
    if sorted(p.window for p in ordered) != list(range(ordered[0].windows)):
        raise ValueError(f"channel group {group}: partial results of windows {[p.window for p in ordered]}")
    counts = channel.policy == "always" or (channel.policy == "if-nonfinite" and any(p.nonfinite[0] for p in parts))
    if len(channel.levels) < 2:
        counts = False
    r = ordered[0].level
    n0 = channel.levels[0].bins
    if r < len(channel.levels):
        expected = 0
        for p in ordered:
            if p.level != r or p.start_bin != expected or p.bins is None:
                raise ValueError(f"channel group {group}: partial of window {p.window} does not continue level {r}")
            expected += p.rows
        if expected != channel.levels[r].bins:
            raise ValueError(f"channel group {group}: partials hold {expected} of the {channel.levels[r].bins} bins")
        bins: Bins = concat([p.bins for p in ordered if p.bins is not None], r, n0)
        for k in range(r, len(channel.levels)):
            write_level(store, group, channel.levels[k], bins, n0, zstd_level, counts=counts)
            if k + 1 < len(channel.levels):
                bins = _fold_all(bins, k, n0, counts)
    if counts and channel.policy == "if-nonfinite":
        written = {(level, shard) for p in parts for _, level, shard in p.valid_shards}
        _write_clean_valid(store, group, channel.levels[1:r], n0, written, zstd_level)
    return counts


def _fold_all(bins: Bins, k: int, n0: int, counts: bool) -> Bins:
    whole = len(bins) // FOLD * FOLD
    pieces = [fold(bins.take(0, whole), k, n0, counts=counts)] if whole else []
    if whole < len(bins):
        pieces.append(fold_tail(bins.take(whole, len(bins)), k, n0, counts=counts))
    return concat(pieces, k + 1, n0)


def _write_clean_valid(
    store: Store, group: int, levels: Iterable[LevelLayout], n0: int, written: set[tuple[int, int]], zstd_level: int
) -> None:
    """The ``valid`` shards of the item levels no item wrote (every count full): the supports."""
    for layout in levels:
        spec = member_specs(layout, zstd_level, counts=True)["valid"]
        for shard in range(spec.shard_count):
            if (layout.level, shard) in written:
                continue
            a = shard * spec.shard_rows
            n = min(spec.shard_rows, layout.bins - a)
            parts = encode_shard(spec, shard, supports(layout.level, a, n, n0))
            if parts is not None:
                put(store, member_path(group, layout.level, "valid", spec.shard_key(shard)), parts)


def reduce_blocks(
    store: Store,
    channels: dict[int, ChannelLevels],
    blocks: Iterable[Sequence[StatPartial]],
    zstd_level: int,
) -> set[int]:
    """Reduce every channel from the items' partial results, a channel block at a time; the groups with ``valid``."""
    done: set[int] = set()
    with_counts: set[int] = set()
    for block in blocks:
        by_channel: dict[int, list[StatPartial]] = {}
        for p in block:
            for j, group in enumerate(p.channels):
                by_channel.setdefault(group, []).append(p.column(j))
        for group, parts in by_channel.items():
            if group in done:
                raise ValueError(f"partial results of channel group {group} in two blocks")
            if group not in channels:
                raise ValueError(f"partial results of channel group {group}, which the plan does not have")
            if reduce_channel(store, group, channels[group], parts, zstd_level):
                with_counts.add(group)
            done.add(group)
    missing = sorted(set(channels) - done)
    if missing:
        raise ValueError(f"no partial result of channel group {missing[0]} ({len(missing)} channels)")
    return with_counts
