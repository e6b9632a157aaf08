"""TS-Zarr unit channels: a ``Units`` table as one event channel of its spikes.

``events`` are every unit's spike times, merged and sorted (ties keep the table's row order);
``labels`` the unit's row, named by ``label_names`` (the table's ``id`` values); ``templates`` the
units' ``waveform_mean`` (µV) whenever the table has one; ``waveforms`` each spike's own waveform
(the ``waveforms`` column), only when the table has per-spike waveforms and a rate for them (NaN
rows for the spikes of a unit without), with ``period_us`` = 1e6 / the rate. A table of more than
65,536 units (``labels`` are uint16) is split in row order into channels of 65,536 (``<id>#<j>``,
named ``<name> (units a-b)``).
"""

from __future__ import annotations

import numpy as np

from ...plan.events import phi_safe
from ...plan.sources import UnitsSource
from ...source.spikes import UnitsData
from .events import EventChannel

MAX_LABELS = 65_536


def unit_channels(source: UnitsSource, data: UnitsData, first_group: int, rate: float | None) -> list[EventChannel]:
    """The event channels of one table (``rate``: the waveforms' Hz, when known)."""
    n = len(data.spike_times_us)
    parts = max(1, -(-n // MAX_LABELS))
    out = []
    for j in range(parts):
        rows = range(j * MAX_LABELS, min(n, (j + 1) * MAX_LABELS))
        ident, name = source.channel_id, source.name
        if parts > 1:
            ident, name = f"{ident}#{j}", f"{name} (units {rows.start + 1}-{rows.stop})"
        out.append(_channel(first_group + j, ident, name, data, rows, rate))
    return out


def _channel(group: int, ident: str, name: str, data: UnitsData, rows: range, rate: float | None) -> EventChannel:
    times = [data.spike_times_us[r] for r in rows]
    counts = [t.shape[0] for t in times]
    merged = np.concatenate(times) if times else np.empty(0, dtype=np.int64)
    order = np.argsort(merged, kind="stable")
    labels = np.repeat(np.arange(len(rows), dtype=np.uint16), counts)[order]
    templates = data.templates[rows.start : rows.stop] if data.templates is not None else None
    waveforms = None
    if data.waveforms is not None and rate and any(data.waveforms[r] is not None for r in rows):
        points = next(w.shape[1] for r in rows if (w := data.waveforms[r]) is not None)
        per_unit = [
            w if (w := data.waveforms[r]) is not None and w.shape[1] == points else _nan_rows(c, points)
            for r, c in zip(rows, counts, strict=True)
        ]
        waveforms = np.concatenate(per_unit)[order]
    return EventChannel(
        group=group,
        id=phi_safe(ident),
        name=phi_safe(name),
        events=merged[order],
        labels=labels,
        label_names=[phi_safe(data.ids[r]) for r in rows],
        waveforms=waveforms,
        waveform_period_us=1e6 / rate if rate else None,
        templates=templates,
    )


def _nan_rows(n: int, points: int) -> np.ndarray:
    return np.full((n, points), np.nan, dtype=np.float32)
