"""TS-Zarr annotation channels, and the annotation files written beside the bundle.

- A **TimeIntervals** table: ``events`` the rows' starts, ``durations`` stop − start (never below
  0; a point has stop = start), ``labels`` from its label column (:mod:`~nwb2pennsieve.source.annotations`),
  ``bodies`` one JSON object a row (``application/json``) of its scalar columns, left out when
  every row's object is empty.
- An **AnnotationSeries**: points labelled by their text, with ``{"text": ...}`` bodies.
- An **annotation file** beside the input: as Pennsieve's producer reads one (durations when a
  mark has one, labels when one is labelled: a mark without a label is named ``""``; ``values``
  in the header's unit when one has a value; ``bodies`` when the header names a media type;
  ``channel_refs`` to the continuous channels the marks name, by channel name: names the bundle
  does not have are dropped, and a mark naming only such is dropped, with a warning).

**Labels** are the distinct texts, sorted (an index is then the same whatever the order of the
rows); a source with more than 4,096 distinct labels or 256 KiB of them (they sit in the root
metadata every reader fetches first) gets none, with a warning (the text stays in the bodies).

**De-identification** (``DEIDENTIFY``): NWB marks no column as identifying, so every text taken
from the file or an annotation file counts as free text: label names from text are not written
(the integer labels stay), string values are removed from JSON bodies, text bodies are not
written; the annotation files written beside the bundle take the same cuts and count times from
the session start (``recording_onset``) instead of the epoch. A Units table's label names (its
unit ids) stay.

For every NWB annotation source one file ``<channel id>.annotations.ndjson`` is written beside the
bundle (schema ``pennsieve/annotations-1.1``, times µs since the epoch), so later workflow steps
can use the annotations with or without the bundle.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...plan.events import phi_safe
from ...plan.sources import AnnotationSeriesSource, IntervalsSource, NdjsonSource
from ...source.annotation_files import (
    JSON_MEDIA_TYPE,
    RECORDING_ONSET,
    UNIX_EPOCH,
    AnnotationFile,
    Mark,
    render,
)
from ...source.annotations import Annotations
from .events import EventChannel

MAX_LABEL_NAMES = 4096
MAX_LABEL_BYTES = 256 * 1024


@dataclass
class Built:
    """An annotation channel, the interchange file written beside the bundle (if any), warnings."""

    channel: EventChannel
    file: tuple[str, bytes] | None = None
    warnings: list[str] = field(default_factory=list)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _without_text(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if not isinstance(v, str)}


def label_index(labels: list[str], where: str, warnings: list[str]) -> tuple[np.ndarray, list[str]] | None:
    """(uint16 index of each label, sorted names); None with a warning when there are too many."""
    names = sorted(set(labels))
    if len(names) > MAX_LABEL_NAMES or sum(len(n.encode()) for n in names) > MAX_LABEL_BYTES:
        warnings.append(
            f"{where}: {len(names):,} distinct labels, more than a bundle's root metadata should carry "
            f"({MAX_LABEL_NAMES:,} or {MAX_LABEL_BYTES // 1024} KiB); its events have no labels "
            "(the text is in the bodies)"
        )
        return None
    index = {n: i for i, n in enumerate(names)}
    return np.array([index[label] for label in labels], dtype=np.uint16), names


def nwb_annotations(
    source: IntervalsSource | AnnotationSeriesSource,
    rows: Annotations,
    group: int,
    *,
    deidentify: bool,
    session_start_us: int,
) -> Built:
    """The channel and the interchange file of one NWB annotation source."""
    warnings: list[str] = []
    if rows.dropped:
        warnings.append(f"{source.path}: {rows.dropped} rows without a finite start time are left out")
    ch = EventChannel(group=group, id=source.channel_id, name=phi_safe(source.name), events=rows.starts_us)
    if rows.stops_us is not None:
        ch.durations = rows.stops_us - rows.starts_us
    if rows.labels is not None and (labelled := label_index(rows.labels, source.path, warnings)) is not None:
        ch.labels = labelled[0]
        ch.label_names = None if deidentify else [phi_safe(n) for n in labelled[1]]
    bodies = rows.bodies
    if bodies is not None and deidentify:
        bodies = [_without_text(b) for b in bodies]
    if bodies is not None and any(bodies):
        ch.bodies = [(_dumps(b) + "\n").encode() for b in bodies]
        ch.media_type = JSON_MEDIA_TYPE
    marks = []
    for i, start in enumerate(rows.starts_us.tolist()):
        mark: dict[str, Any] = {"time_us": start - session_start_us if deidentify else start}
        if ch.durations is not None:
            mark["duration_us"] = int(ch.durations[i])
        if rows.labels is not None and not deidentify:
            mark["label"] = rows.labels[i]
        if ch.bodies is not None and bodies is not None:
            mark["body"] = bodies[i]
        marks.append(mark)
    reference = RECORDING_ONSET if deidentify else UNIX_EPOCH
    text = render(ch.id, ch.name, marks, time_reference=reference, media_type=ch.media_type)
    return Built(channel=ch, file=(f"{ch.id}.annotations.ndjson", text), warnings=warnings)


def file_annotations(
    source: NdjsonSource,
    parsed: AnnotationFile,
    group: int,
    channel_groups: dict[str, int],
    *,
    deidentify: bool,
) -> Built:
    """The channel of one annotation file (``channel_groups``: continuous channel name → group)."""
    warnings: list[str] = []
    marks = _resolved(parsed.marks, channel_groups, source.file, warnings)
    ch = EventChannel(
        group=group,
        id=source.channel_id,
        name=phi_safe(source.name),
        events=np.array([m.time_us for m in marks], dtype=np.int64),
    )
    if any(m.duration_us is not None for m in marks):
        ch.durations = np.array([m.duration_us or 0 for m in marks], dtype=np.int64)
    if any(m.label is not None for m in marks):
        labelled = label_index([m.label or "" for m in marks], source.file, warnings)
        if labelled is not None:
            ch.labels = labelled[0]
            ch.label_names = None if deidentify else [phi_safe(n) for n in labelled[1]]
    if any(m.value is not None for m in marks):
        ch.values = np.array([np.nan if m.value is None else m.value for m in marks], dtype=np.float32)
        ch.unit = parsed.unit
    if parsed.media_type is not None:
        bodies = [_body(m, parsed.media_type, deidentify) for m in marks]
        if all(b is not None for b in bodies):
            ch.bodies = [b for b in bodies if b is not None]
            ch.media_type = parsed.media_type
    if any(m.channels is not None for m in marks):
        ch.channel_refs = [[channel_groups[n] for n in m.channels or ()] for m in marks]
    return Built(channel=ch, warnings=warnings)


def _body(mark: Mark, media_type: str, deidentify: bool) -> bytes | None:
    """A mark's payload in the header's media type (JSON: ``body``, else ``text``, else {}; text:
    ``text``, else ``body``); None when de-identification leaves no text to write."""
    if media_type == JSON_MEDIA_TYPE:
        value: Any = mark.body if mark.has_body else (mark.text if mark.text is not None else {})
        if deidentify:
            value = _without_text(value) if isinstance(value, dict) else (None if isinstance(value, str) else value)
        return (_dumps(value) + "\n").encode()
    if deidentify:
        return None
    value = mark.text if mark.text is not None else ("" if mark.body is None else mark.body)
    return (value if isinstance(value, str) else _dumps(value)).encode() + b"\n"


def _resolved(marks: list[Mark], groups: dict[str, int], file: str, warnings: list[str]) -> list[Mark]:
    """The marks with the channels they name trimmed to the bundle's; a mark naming only others dropped."""
    kept: list[Mark] = []
    unknown: set[str] = set()
    dropped = 0
    for mark in marks:
        if mark.channels is None:
            kept.append(mark)
            continue
        present = tuple(n for n in mark.channels if n in groups)
        unknown.update(n for n in mark.channels if n not in groups)
        if mark.channels and not present:
            dropped += 1
            continue
        kept.append(mark if present == mark.channels else _with_channels(mark, present))
    if unknown:
        warnings.append(
            f"{file}: its marks name {len(unknown)} channels the bundle does not have "
            f"({', '.join(sorted(unknown)[:5])}); they are left out, and {dropped} marks that named only them"
        )
    return kept


def _with_channels(mark: Mark, channels: tuple[str, ...]) -> Mark:
    from dataclasses import replace

    return replace(mark, channels=channels)


ReadFile = Callable[[NdjsonSource], bytes]
