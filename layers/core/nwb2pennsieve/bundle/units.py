"""Unit (spike) channels from NWB ``Units`` tables.

A unit channel holds every spike of up to 256 units: ``events`` (int64 µs since the Unix epoch,
ascending; ties keep table row order), ``units`` (uint8: the unit's row in the channel) and
``waveforms`` (float32 ``(n_events, points)``: each event carries its unit's ``waveform_mean``;
a table without ``waveform_mean`` gets one NaN point per event, which costs nothing stored).

**More than 256 units.** ``units`` is uint8, so a channel holds at most 256 units. A larger table
(common for spike-sorter output) is split, in row order, into ``ceil(n / 256)`` unit channels of
256 units each (the last holds the rest): channel ``j`` holds rows ``[256 j, 256 j + 256)`` and
its ``units`` value is ``row - 256 j``. They are named ``"<table> (units a-b)"`` with 1-based row
numbers and their ``id`` is ``"<table>#<j>"``; a table of at most 256 units keeps its name as
``name`` and ``id``. Nothing is dropped and no conversion fails for the unit count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..output.storage import Store
from ..source.units import UnitsTable
from .encode import ZSTD_LEVEL, DType, group_metadata
from .metadata import ChannelInfo
from .sink import write_array

MAX_UNITS_PER_CHANNEL = 256


@dataclass(frozen=True)
class UnitChannel:
    info: ChannelInfo
    events: np.ndarray  # int64 (n,)
    units: np.ndarray  # uint8 (n,)
    waveforms: np.ndarray  # float32 (n, points)


def unit_channel_count(n_units: int) -> int:
    """How many unit channels a table of ``n_units`` units becomes: one per 256, at least one."""
    return max(1, -(-n_units // MAX_UNITS_PER_CHANNEL))


def unit_channels(table: UnitsTable, *, first_index: int, rate_hz: float, start_us: int) -> list[UnitChannel]:
    """The unit channels of ``table`` (split by 256 units), group indices from ``first_index``.

    ``rate_hz`` is the waveforms' sample rate; ``start_us`` the recording start.
    """
    n_units = len(table.spike_times_us)
    means = table.waveform_means
    if means is not None and means.shape[0] != n_units:
        raise ValueError(f"Units table {table.name!r}: {means.shape[0]} waveform means for {n_units} units")
    parts = unit_channel_count(n_units)
    out = []
    for j in range(parts):
        rows = range(j * MAX_UNITS_PER_CHANNEL, min(n_units, (j + 1) * MAX_UNITS_PER_CHANNEL))
        times = [np.asarray(table.spike_times_us[r], dtype=np.int64).reshape(-1) for r in rows]
        counts = [t.shape[0] for t in times]
        all_times = np.concatenate(times) if times else np.empty(0, dtype=np.int64)
        which = np.repeat(np.arange(len(times), dtype=np.uint8), counts)
        order = np.argsort(all_times, kind="stable")
        if means is None:
            wave = np.full((len(times), 1), np.nan, dtype=np.float32)
        else:
            wave = np.asarray(means[rows.start : rows.stop], dtype=np.float32).reshape(len(times), -1)
        if parts == 1:
            ident, name = table.name, table.name
        else:
            ident, name = f"{table.name}#{j}", f"{table.name} (units {rows.start + 1}-{rows.stop})"
        info = ChannelInfo(index=first_index + j, id=ident, name=name, rate_hz=rate_hz, start_us=start_us, kind="unit")
        units = which[order]
        out.append(UnitChannel(info=info, events=all_times[order], units=units, waveforms=wave[units.astype(np.intp)]))
    return out


def write_unit_channel(
    store: Store, channel: UnitChannel, *, zstd_level: int = ZSTD_LEVEL
) -> dict[str, dict[str, Any]]:
    """Write a unit channel's three arrays; its ``{path: zarr.json document}`` for :func:`write_documents`."""
    i = channel.info.index
    period_us = 1e6 / channel.info.rate_hz
    arrays: list[tuple[str, np.ndarray, DType, dict[str, float]]] = [
        ("events", channel.events.astype(np.int64), "int64", {}),
        ("units", channel.units.astype(np.uint8), "uint8", {}),
        ("waveforms", channel.waveforms.astype(np.float32), "float32", {"period_us": float(period_us)}),
    ]
    docs: dict[str, dict[str, Any]] = {str(i): group_metadata(channel.info.attributes())}
    for name, data, dtype, attrs in arrays:
        docs[f"{i}/{name}"] = write_array(store, f"{i}/{name}", data, dtype, zstd_level, attrs)
    return docs
