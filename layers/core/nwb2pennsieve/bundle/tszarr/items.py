"""A work item's share of a TS-Zarr continuous channel: the shards of its window and its partial result.

Fed the window's level-0 bins in order (``(rows, channels)`` float32, NaN where the grid has no
sample), the writer writes ``raw`` and, per level below ``plan.reduce_from``, the level group's
``env``, ``mean`` and (when the channels keep counts) ``valid`` shards, each a whole object. It
returns a :class:`~.partials.StatPartial`: the level-``reduce_from`` bins (min, max, sum, counts)
for the reduce, and what the last step needs to decide ``valid`` (docs/bundle.md, "valid").

The shards of ``raw`` and ``env``/``mean`` of level 1 (nearly all the bytes) are streamed to
their objects as their chunks are compressed; the rest are held compressed and written whole.
A ``valid`` shard of a channel whose counts are kept only if it has a non-finite sample
(``if-nonfinite``) is written only when some count in it is short, and reported; the last step
writes the others once it knows the channel has one anywhere.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ...output.storage import Store
from ...plan.bundle_layout import FOLD, WindowPlan
from ..continuous import STREAMED_LEVELS, _transpose_into, check_slab
from ..encode import ArraySpec, ShardBuilder
from ..sink import open_pending, put
from .layout import ValidPolicy, member_path, member_specs
from .partials import StatPartial
from .stats import Bins, concat, fold, fold_tail, full_counts, means, supports


@dataclass
class _Level:
    """The shards being built of one level's members, for every channel of the item."""

    k: int
    pos: int  # next bin of the level
    specs: dict[str, ArraySpec]
    chunks: dict[str, np.ndarray] = field(default_factory=dict)
    builders: dict[str, list[ShardBuilder]] | None = None
    held: int = 0
    short: np.ndarray | None = None  # per channel: a count in the current shard is short


class StatItemWriter:
    """Writes one window of a series' channels: :meth:`feed` level-0 slabs in order, then :meth:`finish`."""

    def __init__(
        self,
        store: Store,
        plan: WindowPlan,
        window: int,
        channels: Sequence[int],
        *,
        zstd_level: int,
        policy: ValidPolicy,
    ) -> None:
        self.store, self.plan, self.window = store, plan, window
        self.channels = list(channels)
        self.start, self.stop = plan.windows[window]
        self.n0 = plan.levels[0].bins
        self.policy = policy
        self.counts = policy != "never" and len(plan.levels) > 1
        self._fed = self.start
        self._r = plan.reduce_from
        self._levels = [
            _Level(k, self.start // FOLD**k, member_specs(layout, zstd_level, counts=self.counts))
            for k, layout in enumerate(plan.item_levels)
        ]
        self._carry: list[Bins | None] = [None] * len(plan.levels)
        self._partial: list[Bins] = []
        self._nonfinite = np.zeros(len(self.channels), dtype=bool)
        self._valid_shards: list[tuple[int, int, int]] = []

    def feed(self, slab: np.ndarray) -> None:
        """The next ``(rows, channels)`` level-0 bins of the window (read during the call only)."""
        slab = check_slab(slab, len(self.channels), self._fed, self.window, (self.start, self.stop))
        if slab.shape[0]:
            self._push(0, Bins(self._fed, slab, slab, slab, None))
        self._fed += slab.shape[0]

    def _push(self, k: int, bins: Bins) -> None:
        if k == self._r:
            self._partial.append(bins.copy())
            return
        self._write(k, bins)
        if k + 1 == len(self.plan.levels):
            return
        carry = self._carry[k]
        if carry is not None:
            bins = concat([carry, bins], k, self.n0)
        whole = len(bins) // FOLD * FOLD
        self._carry[k] = bins.take(whole, len(bins)).copy() if whole < len(bins) else None
        if whole:
            self._folded(k, fold(bins.take(0, whole), k, self.n0, counts=self.counts))

    def _folded(self, k: int, up: Bins) -> None:
        """Bins of level ``k + 1`` just folded from level ``k``: note a short count at level 1."""
        if k == 0 and up.valid is not None:
            short = up.valid < supports(1, up.start, len(up), self.n0)[:, None]
            self._nonfinite |= short.any(axis=0)
        self._push(k + 1, up)

    def _write(self, k: int, bins: Bins) -> None:
        """Bins of level ``k`` into its members' shards: every channel's builders advance in step, so
        each member's inner chunks are the rows of one ``(channels, chunk rows, ...)`` array, filled
        by a transposing copy of each piece."""
        level = self._levels[k]
        rows = self._member_rows(k, bins)
        done = 0
        while done < len(bins):
            builders = level.builders or self._open(level)
            first = next(iter(builders.values()))[0]
            room = first.room
            at, take = first.filled + level.held, min(len(bins) - done, room - level.held)
            for name, values in rows.items():
                chunk = level.chunks[name]
                if name == "env":
                    _transpose_into(chunk[:, at : at + take, 0], values[0][done : done + take])
                    _transpose_into(chunk[:, at : at + take, 1], values[1][done : done + take])
                else:
                    _transpose_into(chunk[:, at : at + take], values[0][done : done + take])
            if "valid" in rows and level.short is not None:
                part = rows["valid"][0][done : done + take]
                level.short |= (part < supports(k, bins.start + done, take, self.n0)[:, None]).any(axis=0)
            done += take
            level.pos += take
            level.held += take
            if level.held < room:
                continue
            level.held = 0
            for member in builders.values():
                for builder in member:
                    builder.advance(room)
            if first.complete:
                self._close_shard(level, builders)

    def _member_rows(self, k: int, bins: Bins) -> dict[str, tuple[np.ndarray, ...]]:
        if k == 0:
            return {"raw": (bins.lo,)}
        rows: dict[str, tuple[np.ndarray, ...]] = {"env": (bins.lo, bins.hi), "mean": (means(bins, k, self.n0),)}
        if self.counts:
            rows["valid"] = (full_counts(bins, k, self.n0),)
        return rows

    def _open(self, level: _Level) -> dict[str, list[ShardBuilder]]:
        builders: dict[str, list[ShardBuilder]] = {}
        for name, spec in level.specs.items():
            shard = level.pos // spec.shard_rows
            chunk = level.chunks.get(name)
            if chunk is None:
                shape = (len(self.channels), spec.chunk_rows, *spec.shape[1:])
                chunk = level.chunks[name] = np.empty(shape, dtype=spec.dtype)
            streamed = level.k < STREAMED_LEVELS and name != "valid"
            key = spec.shard_key(shard)
            builders[name] = [
                ShardBuilder(
                    spec,
                    shard,
                    functools.partial(open_pending, self.store, member_path(ch, level.k, name, key))
                    if streamed
                    else None,
                    buffer=chunk[c],
                )
                for c, ch in enumerate(self.channels)
            ]
        level.builders = builders
        level.short = np.zeros(len(self.channels), dtype=bool) if self.policy == "if-nonfinite" else None
        return builders

    def _close_shard(self, level: _Level, builders: dict[str, list[ShardBuilder]]) -> None:
        for name, member in builders.items():
            for c, (channel, builder) in enumerate(zip(self.channels, member, strict=True)):
                path = member_path(channel, level.k, name, builder.spec.shard_key(builder.shard))
                if level.k < STREAMED_LEVELS and name != "valid":
                    builder.commit()
                    continue
                if name == "valid" and level.short is not None:
                    if not level.short[c]:
                        continue  # a clean shard: the last step writes it if the channel needs counts
                    self._valid_shards.append((channel, level.k, builder.shard))
                parts = builder.finish()
                if parts is not None:
                    put(self.store, path, parts)
        level.builders = None

    def abort(self) -> None:
        """Drop the partly written shard objects of a window that will not be finished."""
        for level in self._levels:
            for member in (level.builders or {}).values():
                for builder in member:
                    builder.abort()
            level.builders = None

    def finish(self) -> StatPartial:
        """Write the window's last shards; the partial result for the reduce and the last step."""
        if self._fed != self.stop:
            raise ValueError(f"window {self.window} is [{self.start}, {self.stop}); only fed up to {self._fed}")
        # Only the series' last window has a trailing partial block to fold.
        for k in range(min(self._r, len(self.plan.levels) - 1)):
            carry = self._carry[k]
            if carry is not None:
                self._carry[k] = None
                self._folded(k, fold_tail(carry, k, self.n0, counts=self.counts))
        for level in self._levels:
            if level.builders is not None:
                raise AssertionError(f"level {level.k} shard left open at bin {level.pos}")
        bins = concat(self._partial, self._r, self.n0) if self._partial else None
        return StatPartial(
            window=self.window,
            windows=len(self.plan.windows),
            level=self._r,
            start_bin=self.start // FOLD**self._r,
            channels=tuple(self.channels),
            bins=bins,
            nonfinite=tuple(bool(x) for x in self._nonfinite),
            valid_shards=tuple(self._valid_shards),
        )
