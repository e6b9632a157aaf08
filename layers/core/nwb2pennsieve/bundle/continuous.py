"""Continuous channels: a work item writes the shards of its window; the reduce writes the coarse levels.

A work item covers one window of a series' level-0 grid (see :func:`~.layout.align_windows`) for
a block of its channels. It is fed the window's level-0 bins in order, in slabs of any size
(``(rows, channels)`` float32 µV, NaN where there is no data), writes every shard of the levels
below ``plan.reduce_from`` as whole objects, and returns the level-``reduce_from`` bins of its
window: an :class:`ItemPartial`, 1/4**reduce_from of the window's level-0 data, two values a bin.
:func:`reduce_levels` assembles the partials of all windows and writes the remaining levels.
Memory per item: per channel, one uncompressed inner chunk per level, plus the compressed
chunks of the coarse levels' shards being built (the two finest levels are streamed to their
objects, :data:`STREAMED_LEVELS`).
"""

from __future__ import annotations

import functools
import json
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..output.storage import PendingObject, Store
from ..plan.bundle_layout import FOLD, WindowPlan
from .encode import ZSTD_LEVEL, ShardBuilder, encode_shard
from .fold import fold4, fold_pairs, padded
from .metadata import level_spec
from .sink import open_pending, put

_MAGIC = b"N2PBUNDLEPARTIAL"
# Shards of levels below this are written as their chunks are compressed, not held: the finest
# levels hold nearly all the bytes. Each open shard object is an open file in a local store,
# so the coarser levels (a small share of the bytes) are held and written whole.
STREAMED_LEVELS = 2


def framed(magic: bytes, header: bytes) -> bytes:
    """A partial result's head: its magic, the header's length (uint32 little-endian), the header."""
    return magic + struct.pack("<I", len(header)) + header


def unframed(data: bytes, magic: bytes, what: str) -> tuple[dict[str, Any], int]:
    """The JSON header of a :func:`framed` record and where its arrays begin."""
    if not data.startswith(magic):
        raise ValueError(f"not {what}")
    at = len(magic)
    (size,) = struct.unpack_from("<I", data, at)
    return json.loads(data[at + 4 : at + 4 + size]), at + 4 + size


def check_slab(slab: np.ndarray, width: int, fed: int, window: int, span: tuple[int, int]) -> np.ndarray:
    """``slab`` as float32 ``(rows, width)`` level-0 bins that fit the window ``span`` after ``fed``."""
    slab = np.asarray(slab, dtype=np.float32)
    if slab.ndim != 2 or slab.shape[1] != width:
        raise ValueError(f"slab of shape {slab.shape} for {width} channels")
    if fed + slab.shape[0] > span[1]:
        raise ValueError(f"window {window} is [{span[0]}, {span[1]}); fed past {span[1]}")
    return slab


@dataclass(frozen=True)
class ItemPartial:
    """The level-``level`` bins ``[start_bin, start_bin + len(bins))`` of one window, all its channels.

    ``bins`` is ``(n, channels, 2)`` float32 (min, max), channels in the item's order.
    """

    window: int
    level: int
    start_bin: int
    bins: np.ndarray
    channels: tuple[int, ...] = ()  # the bundle group index of each column of ``bins``

    def to_bytes(self) -> bytes:
        """A small deterministic binary form (for records storage between the items and the reduce)."""
        bins = np.ascontiguousarray(self.bins, dtype="<f4")
        header = json.dumps(
            {
                "window": self.window,
                "level": self.level,
                "start_bin": self.start_bin,
                "shape": list(bins.shape),
                "channels": list(self.channels),
            }
        ).encode()
        return framed(_MAGIC, header) + bins.tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> ItemPartial:
        header, at = unframed(data, _MAGIC, "a bundle partial result")
        bins = np.frombuffer(data, dtype="<f4", offset=at).reshape(header["shape"]).astype(np.float32)
        return cls(
            window=header["window"],
            level=header["level"],
            start_bin=header["start_bin"],
            bins=bins,
            channels=tuple(header.get("channels", ())),
        )


class ItemWriter:
    """Writes one window of a series' channels: feed level-0 slabs in order, then :meth:`finish`.

    ``channels`` are the bundle group indices of the slab's columns, in column order.
    """

    def __init__(
        self, store: Store, plan: WindowPlan, window: int, channels: Sequence[int], *, zstd_level: int = ZSTD_LEVEL
    ) -> None:
        self.store = store
        self.plan = plan
        self.window = window
        self.channels = list(channels)
        self.start, self.stop = plan.windows[window]
        self._fed = self.start
        self._levels = plan.levels
        self._r = plan.reduce_from
        self._specs = [level_spec(layout, zstd_level=zstd_level) for layout in plan.item_levels]
        self._pos = [self.start // FOLD**k for k in range(self._r)]
        self._builders: list[list[ShardBuilder] | None] = [None] * self._r
        self._chunks: list[np.ndarray | None] = [None] * self._r  # each level's inner chunks, all channels
        self._held = [0] * self._r
        # Per level, the last 1-3 bins of a block of 4 not yet folded: (mins, maxes), copies.
        self._carry: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(self._levels)
        self._partial: list[np.ndarray] = []

    def feed(self, slab: np.ndarray) -> None:
        """The next ``(rows, channels)`` level-0 bins of the window (read during the call only)."""
        slab = check_slab(slab, len(self.channels), self._fed, self.window, (self.start, self.stop))
        self._fed += slab.shape[0]
        if slab.shape[0]:
            # A level-0 bin is its own min and max.
            self._push(0, slab, slab)

    def _push(self, k: int, low: np.ndarray, high: np.ndarray) -> None:
        """Bins of level ``k`` (``(rows, channels)`` mins and maxes; the same array at level 0)."""
        if k == self._r:
            self._partial.append(np.stack([low, high], axis=-1))
            return
        self._write_rows(k, low, high)
        if k + 1 == len(self._levels):
            return
        n = low.shape[0]
        carry = self._carry[k]
        c = 0 if carry is None else carry[0].shape[0]
        if c + n < FOLD:
            if carry is not None:
                low, high = np.concatenate([carry[0], low]), np.concatenate([carry[1], high])
            self._carry[k] = _copies(low, high)
            return
        # The carry's bin is completed by the first ``head`` rows; the rest fold in place, not
        # concatenated to the carry (a copy of the whole slab at every level).
        head = (FOLD - c) % FOLD
        whole = (n - head) // FOLD * FOLD
        bins = (1 if c else 0) + whole // FOLD
        shape = (bins, *low.shape[1:])
        lows, highs = np.empty(shape, dtype=np.float32), np.empty(shape, dtype=np.float32)
        if carry is not None:
            fold4(np.minimum, np.concatenate([carry[0], low[:head]]), lows[:1])
            fold4(np.maximum, np.concatenate([carry[1], high[:head]]), highs[:1])
        if whole:
            fold4(np.minimum, low[head : head + whole], lows[bins - whole // FOLD :])
            fold4(np.maximum, high[head : head + whole], highs[bins - whole // FOLD :])
        self._carry[k] = _copies(low[head + whole :], high[head + whole :]) if head + whole < n else None
        self._push(k + 1, lows, highs)

    def _write_rows(self, k: int, low: np.ndarray, high: np.ndarray) -> None:
        """Bins of level ``k`` into its shards: the builders of all channels advance in step, so their
        inner chunks are the rows of one ``(channels, chunk rows, ...)`` array, filled by a
        transposing copy of each piece (one copy for all channels, not one a channel)."""
        spec = self._specs[k]
        chunks = self._chunks[k]
        if chunks is None:
            chunks = self._chunks[k] = np.empty((len(self.channels), spec.chunk_rows, *spec.shape[1:]), np.float32)
        done = 0
        while done < low.shape[0]:
            pos = self._pos[k]
            shard = pos // spec.shard_rows
            builders = self._builders[k]
            if builders is None:
                builders = self._builders[k] = [
                    ShardBuilder(
                        spec, shard, self._streamed(k, f"{channel}/{k}/{spec.shard_key(shard)}"), buffer=chunks[c]
                    )
                    for c, channel in enumerate(self.channels)
                ]
            # Rows copied in but not yet handed to the builders (they are told once the chunk is full).
            held = self._held[k]
            room = builders[0].room
            at, take = builders[0].filled + held, min(low.shape[0] - done, room - held)
            if k == 0:
                _transpose_into(chunks[:, at : at + take], low[done : done + take])
            else:
                _transpose_into(chunks[:, at : at + take, 0], low[done : done + take])
                _transpose_into(chunks[:, at : at + take, 1], high[done : done + take])
            done += take
            self._pos[k] = pos + take
            self._held[k] = held + take
            if held + take < room:
                continue
            self._held[k] = 0
            for builder in builders:
                builder.advance(room)
            if builders[0].complete:
                for channel, builder in zip(self.channels, builders, strict=True):
                    if k < STREAMED_LEVELS:
                        builder.commit()
                    elif (parts := builder.finish()) is not None:
                        put(self.store, f"{channel}/{k}/{spec.shard_key(shard)}", parts)
                self._builders[k] = None

    def _streamed(self, k: int, path: str) -> Callable[[], PendingObject] | None:
        """How a level-``k`` shard opens its object when it is streamed (the finest levels)."""
        if k >= STREAMED_LEVELS:
            return None
        return functools.partial(open_pending, self.store, path)

    def abort(self) -> None:
        """Drop the partly written shard objects of a window that will not be finished."""
        for builders in self._builders:
            for builder in builders or ():
                builder.abort()
        self._builders = [None] * self._r

    def finish(self) -> ItemPartial | None:
        """Write the window's last shards; the partial result for the reduce (None: nothing to reduce)."""
        if self._fed != self.stop:
            raise ValueError(f"window {self.window} is [{self.start}, {self.stop}); only fed up to {self._fed}")
        # Only the series' last window has a trailing partial block to fold.
        for k in range(min(self._r, len(self._levels) - 1)):
            carry = self._carry[k]
            if carry is not None:
                self._carry[k] = None
                lows, highs = (np.empty((1, *carry[0].shape[1:]), dtype=np.float32) for _ in range(2))
                fold4(np.minimum, padded(carry[0]), lows)
                fold4(np.maximum, padded(carry[1]), highs)
                self._push(k + 1, lows, highs)
        for k, builders in enumerate(self._builders):
            if builders is not None:
                raise AssertionError(f"level {k} shard left open at bin {self._pos[k]}")
        if self._r == len(self._levels):
            return None
        width = len(self.channels)
        bins = np.concatenate(self._partial) if self._partial else np.empty((0, width, 2), dtype=np.float32)
        return ItemPartial(
            window=self.window,
            level=self._r,
            start_bin=self.start // FOLD**self._r,
            bins=bins,
            channels=tuple(self.channels),
        )


_TRANSPOSE_ROWS = 256  # rows per step of a transposing copy: the source rows stay in cache


def _transpose_into(out: np.ndarray, rows: np.ndarray) -> None:
    """``out`` (``(channels, n)``) ← ``rows.T`` (``rows`` is ``(n, channels)``), a few rows at a time."""
    for a in range(0, rows.shape[0], _TRANSPOSE_ROWS):
        np.copyto(out[:, a : a + _TRANSPOSE_ROWS], rows[a : a + _TRANSPOSE_ROWS].T)


def _copies(low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Copies of a carry (a slab may be its producer's reused buffer); one copy when it is level 0's."""
    kept = low.copy()
    return (kept, kept) if high is low else (kept, high.copy())


def write_window(
    store: Store, plan: WindowPlan, window: int, channels: Sequence[int], data: np.ndarray, **kw: int
) -> ItemPartial | None:
    """One window in one go: ``data`` is its ``(rows, channels)`` level-0 bins."""
    writer = ItemWriter(store, plan, window, channels, **kw)
    writer.feed(data)
    return writer.finish()


def reduce_levels(
    store: Store,
    plan: WindowPlan,
    channels: Sequence[int],
    partials: Sequence[ItemPartial],
    *,
    zstd_level: int = ZSTD_LEVEL,
) -> None:
    """Write levels ``plan.reduce_from`` and up of ``channels`` from the partials of every window.

    ``partials`` (any order) must cover every window, with the channels in ``channels``' order.
    """
    levels = plan.reduce_levels
    if not levels:
        return
    ordered = sorted(partials, key=lambda p: p.start_bin)
    expected = 0
    for p in ordered:
        if p.level != plan.reduce_from or p.start_bin != expected or p.bins.shape[1:] != (len(channels), 2):
            raise ValueError(f"partial of window {p.window} does not continue level {plan.reduce_from} at {expected}")
        expected += p.bins.shape[0]
    if expected != levels[0].bins:
        raise ValueError(f"partials hold {expected} of the {levels[0].bins} bins of level {plan.reduce_from}")
    data = np.concatenate([p.bins for p in ordered])
    for i, layout in enumerate(levels):
        spec = level_spec(layout, zstd_level=zstd_level)
        for c, channel in enumerate(channels):
            column = data[:, c]
            for shard in range(spec.shard_count):
                a = shard * spec.shard_rows
                parts = encode_shard(spec, shard, column[a : a + spec.shard_rows])
                if parts is not None:
                    put(store, f"{channel}/{layout.level}/{spec.shard_key(shard)}", parts)
        if i + 1 < len(levels):
            data = fold_pairs(data)
