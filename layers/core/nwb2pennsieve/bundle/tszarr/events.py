"""A TS-Zarr event channel: spikes or annotations as sorted onset-relative times plus columns.

```
<g>/events              (n,) int64 µs from the bundle onset, non-decreasing
<g>/durations           (n,) int64 µs >= 0 (0: a point), with the channel's max_duration_us
<g>/labels              (n,) uint16, with the channel's label_names
<g>/values              (n,) float32, in the channel's unit
<g>/bodies              uint8: every event's UTF-8 payload, each ending with a newline; one
                        uncompressed chunk, so the object <g>/bodies/c/0 is the NDJSON text itself
<g>/body_offsets        (n + 1,) uint64: event i's body is bodies[offsets[i]:offsets[i + 1]]
<g>/channel_refs        uint16 continuous channel groups each event names, with
<g>/channel_ref_offsets (n + 1,) uint64 (an empty span: the whole recording)
<g>/waveforms           (n, points) float32 µV, with period_us; <g>/templates (labels, points)
<g>/<k>/counts          count levels of a dense channel: (bins, labels) uint32 (or (bins,))
```
Written whole by the bundle's last step (event channels are small beside the samples).

**Offsets and count levels.** ``offset_us`` is the first event's time from the onset, but 0 for a
channel with count levels: their bins count from the onset (bin ``i`` covers ``[i p, (i + 1) p)``
µs from it), and a reader places bin ``i`` at ``offset_us + i p``; the two agree only at 0.
Count levels are written from 65,536 events: level 1's period is the whole number of µs that
keeps its array within 16 MiB, each next level 4 times coarser while the previous has 1,024
bins or more, at most 7; an interval counts in the bin of its start only, so each level sums to n.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ...output.storage import Store
from ...plan.bundle_layout import FOLD, MAX_LEVELS, MIN_BINS, TARGET_SHARD_BYTES
from ..encode import group_metadata
from ..sink import put, write_array

COUNT_LEVEL_EVENTS = 65_536


@dataclass
class EventChannel:
    """An event channel's content: times in µs since the epoch, sorted, and its optional columns."""

    group: int
    id: str
    name: str
    events: np.ndarray  # int64, µs since the epoch
    durations: np.ndarray | None = None  # int64
    labels: np.ndarray | None = None  # uint16
    label_names: list[str] | None = None
    bodies: list[bytes] | None = None  # each ends with "\n"
    media_type: str | None = None
    values: np.ndarray | None = None  # float32
    unit: str | None = None
    channel_refs: list[list[int]] | None = None
    waveforms: np.ndarray | None = None  # float32 (n, points)
    waveform_period_us: float | None = None
    templates: np.ndarray | None = None  # float32 (labels, points)

    def check(self) -> None:
        n = self.events.shape[0]
        if n and np.any(np.diff(self.events) < 0):
            raise ValueError(f"event channel {self.id}: events are not sorted")
        for column in (self.durations, self.labels, self.values, self.waveforms):
            if column is not None and column.shape[0] != n:
                raise ValueError(f"event channel {self.id}: a column of {column.shape[0]} rows for {n} events")
        if (
            self.labels is not None
            and self.label_names is not None
            and n
            and self.labels.max() >= len(self.label_names)
        ):
            raise ValueError(f"event channel {self.id}: a label beyond its {len(self.label_names)} names")


def plain_array(store: Store, path: str, data: bytes) -> dict[str, Any]:
    """A uint8 array of one uncompressed, unsharded chunk (``bodies``): the object is the bytes."""
    put(store, f"{path}/c/0", data)
    return {
        "shape": [len(data)],
        "data_type": "uint8",
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [max(1, len(data))]}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": 0,
        "codecs": [{"name": "bytes"}],
        "attributes": {},
        "zarr_format": 3,
        "node_type": "array",
        "storage_transformers": [],
    }


def _offsets(lengths: list[int]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(lengths, dtype=np.uint64)]).astype(np.uint64)


def count_levels(relative: np.ndarray, labels: np.ndarray | None, n_labels: int) -> list[tuple[float, np.ndarray]]:
    """(period µs, counts) of each count level of onset-relative ``relative`` times."""
    width = max(1, n_labels)
    span = int(relative[-1]) + 1
    period = max(1, -(-span // (TARGET_SHARD_BYTES // (4 * width))))
    bins = -(-span // period)
    index = (relative // period).astype(np.int64)
    if labels is not None:
        index = index * width + labels.astype(np.int64)
    counts = np.bincount(index, minlength=bins * width).astype(np.uint32).reshape(bins, width)
    out = [(float(period), counts)]
    while len(out) < MAX_LEVELS - 1 and out[-1][1].shape[0] >= MIN_BINS:
        prev = out[-1][1]
        pad = -prev.shape[0] % FOLD
        padded = np.concatenate([prev, np.zeros((pad, width), np.uint32)]) if pad else prev
        out.append((out[-1][0] * FOLD, padded.reshape(-1, FOLD, width).sum(axis=1, dtype=np.uint32)))
    return [(p, c if labels is not None else c[:, 0]) for p, c in out]


def write_event_channel(store: Store, ch: EventChannel, onset_us: int, zstd_level: int) -> dict[str, dict[str, Any]]:
    """Write an event channel's arrays; its ``{path: zarr.json}`` documents."""
    ch.check()
    relative = ch.events.astype(np.int64) - onset_us
    if relative.size and int(relative[0]) < 0:
        raise ValueError(f"event channel {ch.id}: an event before the bundle's onset")
    g = str(ch.group)
    dense = relative.shape[0] >= COUNT_LEVEL_EVENTS
    attrs: dict[str, Any] = {
        "id": ch.id,
        "kind": "event",
        "name": ch.name,
        "offset_us": 0 if dense or not relative.size else int(relative[0]),
    }
    docs: dict[str, dict[str, Any]] = {f"{g}/events": write_array(store, f"{g}/events", relative, "int64", zstd_level)}
    if ch.durations is not None:
        docs[f"{g}/durations"] = write_array(store, f"{g}/durations", ch.durations, "int64", zstd_level)
        attrs["max_duration_us"] = int(ch.durations.max()) if ch.durations.size else 0
    if ch.labels is not None:
        docs[f"{g}/labels"] = write_array(store, f"{g}/labels", ch.labels, "uint16", zstd_level)
        if ch.label_names is not None:
            attrs["label_names"] = list(ch.label_names)
    if ch.values is not None:
        docs[f"{g}/values"] = write_array(store, f"{g}/values", ch.values, "float32", zstd_level)
        attrs["unit"] = ch.unit or ""
    if ch.bodies is not None:
        docs[f"{g}/bodies"] = plain_array(store, f"{g}/bodies", b"".join(ch.bodies))
        offsets = _offsets([len(b) for b in ch.bodies])
        docs[f"{g}/body_offsets"] = write_array(store, f"{g}/body_offsets", offsets, "uint64", zstd_level)
        attrs["body_media_type"] = ch.media_type or "text/plain"
    if ch.channel_refs is not None:
        flat = np.array([r for refs in ch.channel_refs for r in refs], dtype=np.uint16)
        docs[f"{g}/channel_refs"] = write_array(store, f"{g}/channel_refs", flat, "uint16", zstd_level)
        offsets = _offsets([len(refs) for refs in ch.channel_refs])
        docs[f"{g}/channel_ref_offsets"] = write_array(store, f"{g}/channel_ref_offsets", offsets, "uint64", zstd_level)
    if ch.waveforms is not None and ch.waveform_period_us:
        every = {"period_us": float(ch.waveform_period_us)}
        docs[f"{g}/waveforms"] = write_array(store, f"{g}/waveforms", ch.waveforms, "float32", zstd_level, every)
    if ch.templates is not None:
        docs[f"{g}/templates"] = write_array(store, f"{g}/templates", ch.templates, "float32", zstd_level)
    if dense:
        n_labels = len(ch.label_names) if ch.label_names else (int(ch.labels.max()) + 1 if ch.labels is not None else 0)
        for k, (period, counts) in enumerate(count_levels(relative, ch.labels, n_labels), start=1):
            docs[f"{g}/{k}"] = group_metadata({"period_us": period})
            docs[f"{g}/{k}/counts"] = write_array(store, f"{g}/{k}/counts", counts, "uint32", zstd_level)
    docs[g] = group_metadata(attrs)
    return docs
