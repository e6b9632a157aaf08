"""What a TS-Zarr work item hands the bundle's last step, per window and channel block.

The level-``reduce_from`` bins of its window (min, max float32; sum float64; counts uint16 when
any was short, else none: every sample finite): 16 bytes a bin (18 with counts), against 8 for the
older layout's (min, max). And what decides ``valid``: per channel whether the window held a
non-finite sample, and which ``valid`` shards the item wrote (docs/bundle.md). Written to a
record (the cloud's ``bundle-partials/<item>.bin``) or a spill file (the local pool) in a small
deterministic binary form: a magic, a JSON header, the arrays little-endian in C order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from ..continuous import framed, unframed
from .stats import COUNT, Bins

MAGIC = b"N2PTSZPART2"


@dataclass(frozen=True)
class StatPartial:
    """One window's partial result for ``channels`` (bundle group indices, in column order)."""

    window: int
    windows: int  # of the series' window plan
    level: int
    start_bin: int
    channels: tuple[int, ...]
    bins: Bins | None  # None: the items wrote every level (nothing to reduce)
    nonfinite: tuple[bool, ...]
    valid_shards: tuple[tuple[int, int, int], ...] = ()  # (group, level, shard) of the valid shards written

    @property
    def rows(self) -> int:
        return 0 if self.bins is None else len(self.bins)

    def column(self, j: int) -> StatPartial:
        """The partial result of the ``j``-th channel alone."""
        channel = self.channels[j]
        bins = None
        if self.bins is not None:
            b = self.bins
            valid = None if b.valid is None else b.valid[:, j : j + 1]
            bins = Bins(b.start, b.lo[:, j : j + 1], b.hi[:, j : j + 1], b.sums[:, j : j + 1], valid)
        return StatPartial(
            window=self.window,
            windows=self.windows,
            level=self.level,
            start_bin=self.start_bin,
            channels=(channel,),
            bins=bins,
            nonfinite=(self.nonfinite[j],),
            valid_shards=tuple(v for v in self.valid_shards if v[0] == channel),
        )

    def to_bytes(self) -> bytes:
        b = self.bins
        header = {
            "window": self.window,
            "windows": self.windows,
            "level": self.level,
            "start_bin": self.start_bin,
            "channels": list(self.channels),
            "rows": self.rows,
            "bins": b is not None,
            "counts": b is not None and b.valid is not None,
            "nonfinite": list(self.nonfinite),
            "valid_shards": [list(v) for v in self.valid_shards],
        }
        parts = [framed(MAGIC, json.dumps(header, separators=(",", ":")).encode())]
        if b is not None:
            parts += [np.ascontiguousarray(b.lo, "<f4").tobytes(), np.ascontiguousarray(b.hi, "<f4").tobytes()]
            parts.append(np.ascontiguousarray(b.sums, "<f8").tobytes())
            if b.valid is not None:
                parts.append(np.ascontiguousarray(b.valid, "<u2").tobytes())
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> StatPartial:
        header, at = unframed(data, MAGIC, "a TS-Zarr partial result")
        shape = (header["rows"], len(header["channels"]))
        bins = None
        if header["bins"]:
            arrays = []
            for dtype in ("<f4", "<f4", "<f8", "<u2") if header["counts"] else ("<f4", "<f4", "<f8"):
                count = shape[0] * shape[1]
                arrays.append(np.frombuffer(data, dtype=dtype, count=count, offset=at).reshape(shape))
                at += count * np.dtype(dtype).itemsize
            lo, hi, sums = (a.astype(a.dtype.newbyteorder("=")) for a in arrays[:3])
            valid = arrays[3].astype(COUNT) if header["counts"] else None
            bins = Bins(header["start_bin"], lo, hi, sums, valid)
        if at != len(data):
            raise ValueError(f"a TS-Zarr partial result of {len(data)} bytes, {at} expected")
        return cls(
            window=header["window"],
            windows=header["windows"],
            level=header["level"],
            start_bin=header["start_bin"],
            channels=tuple(header["channels"]),
            bins=bins,
            nonfinite=tuple(header["nonfinite"]),
            valid_shards=tuple(tuple(v) for v in header["valid_shards"]),
        )
