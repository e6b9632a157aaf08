"""Pennsieve's annotation interchange files (``*.annotations.ndjson``, schema ``pennsieve/annotations-1.1``):
read beside an input file, written beside a bundle.

One file is one annotation source. Its first line is a header, ``{"schema":
"pennsieve/annotations-1.1", "channel": {"id", "name"?, "time_reference", "body_media_type"?,
"unit"?}}``; every later line is one mark, ``{"time_us", "duration_us"?, "label"?, "text"?,
"body"?, "value"?, "channels"?}``. ``time_reference`` says what ``time_us`` counts from:
``unix_epoch`` (µs since 1970) or ``recording_onset`` (µs from the recording's start, which we
take as the file's ``session_start_time``, as Pennsieve's producer does). Only the header carries
``schema``, so a file concatenated from two is refused where the second header is.

Reading is strict and names the line: the first problem ends the conversion with one line, e.g.
``annotation file rec.annotations.ndjson line 4: its duration_us is -5, below 0``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError

SCHEMA = "pennsieve/annotations-1.1"
SUFFIX = ".annotations.ndjson"
RECORDING_ONSET = "recording_onset"
UNIX_EPOCH = "unix_epoch"
JSON_MEDIA_TYPE = "application/json"
TEXT_MEDIA_TYPE = "text/plain"
MAX_US = 2**63 - 1


@dataclass(frozen=True)
class Mark:
    """One mark: its time in µs since the epoch (the reference applied) and what it carries."""

    line: int
    time_us: int
    duration_us: int | None = None
    label: str | None = None
    text: str | None = None
    body: Any = None
    has_body: bool = False
    value: float | None = None
    channels: tuple[str, ...] | None = None


@dataclass(frozen=True)
class AnnotationFile:
    """A parsed interchange file: its header and its marks, sorted by time (ties in file order)."""

    name: str
    channel_id: str
    channel_name: str
    time_reference: str
    media_type: str | None
    unit: str
    marks: list[Mark]


class _Problem(Exception):
    """A line's problem, raised inside the parser and reported with the file's name."""


def files_beside(path: str | os.PathLike[str]) -> list[Path]:
    """The annotation files beside an input file: in its folder, named ``<its stem>...annotations.ndjson``
    (so ``rec.nwb`` takes ``rec.annotations.ndjson`` and ``rec.seizures.annotations.ndjson``), by name
    (:func:`annotation_names`)."""
    path = Path(path)
    try:
        entries = {p.name: p for p in path.parent.iterdir()}
    except OSError:
        return []
    return [entries[n] for n in annotation_names(list(entries), path.name) if entries[n].is_file()]


def annotation_names(names: list[str], nwb_name: str) -> list[str]:
    """Of the file ``names`` in one folder, the annotation files of the input ``nwb_name``: those whose
    name starts with its stem and ends with ``.annotations.ndjson``, in name order, except those that
    start with the longer stem of another NWB file in the folder (``record2.annotations.ndjson`` is
    ``record2.nwb``'s, not ``rec.nwb``'s, when both are there)."""
    stem = _stem(nwb_name)
    longer = [s for s in (_stem(n) for n in names if n.lower().endswith(".nwb")) if s != stem and s.startswith(stem)]
    return sorted(
        n
        for n in names
        if n.startswith(stem) and n.endswith(SUFFIX) and not any(n.startswith(other) for other in longer)
    )


def _stem(name: str) -> str:
    return name[: -len(".nwb")] if name.lower().endswith(".nwb") else name


def parse(name: str, data: bytes, *, session_start_us: int, source: str) -> AnnotationFile:
    """Parse one interchange file; any problem is an :class:`InvalidInputError` naming ``source``
    (the NWB file), this file and the line."""
    try:
        return _parse(name, data, session_start_us)
    except _Problem as exc:
        raise InvalidInputError(f"annotation file {name} {exc}", file=source) from None


def _lines(data: bytes) -> list[tuple[int, dict[str, Any]]]:
    try:
        lines = data.decode("utf-8").split("\n")
    except UnicodeDecodeError as exc:
        raise _Problem(f"is not UTF-8 text (byte {exc.start})") from None
    out = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise _Problem(f"line {number}: not valid JSON ({exc.msg})") from None
        if not isinstance(value, dict):
            raise _Problem(f"line {number}: a JSON {type(value).__name__}, not an object")
        out.append((number, value))
    return out


def _parse(name: str, data: bytes, session_start_us: int) -> AnnotationFile:
    lines = _lines(data)
    if not lines:
        raise _Problem("is empty (no header line)")
    number, header = lines[0]
    schema = header.get("schema")
    if schema is None:
        raise _Problem(f"line {number}: the header has no schema")
    if schema != SCHEMA:
        raise _Problem(f"line {number}: schema {schema!r} is not {SCHEMA}")
    channel = header.get("channel")
    if not isinstance(channel, dict):
        raise _Problem(f"line {number}: the header has no channel object")
    ident = channel.get("id")
    if not isinstance(ident, str) or not ident.strip():
        raise _Problem(f"line {number}: the header's channel has no id (a non-empty string)")
    reference = channel.get("time_reference")
    if reference not in (RECORDING_ONSET, UNIX_EPOCH):
        raise _Problem(f"line {number}: time_reference {reference!r} is not {RECORDING_ONSET} or {UNIX_EPOCH}")
    for key in ("name", "body_media_type", "unit"):
        if key in channel and not isinstance(channel[key], str):
            raise _Problem(f"line {number}: the header's channel {key} is not a string")
    origin = session_start_us if reference == RECORDING_ONSET else 0
    marks = [_mark(n, line, origin) for n, line in lines[1:]]
    marks.sort(key=lambda m: m.time_us)
    return AnnotationFile(
        name=name,
        channel_id=ident,
        channel_name=channel.get("name") or ident,
        time_reference=reference,
        media_type=channel.get("body_media_type"),
        unit=channel.get("unit", ""),
        marks=marks,
    )


def _integer(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Problem(f"its {key} {value!r} is not an integer")
    if isinstance(value, float) and not (math.isfinite(value) and value == int(value)):
        raise _Problem(f"its {key} {value!r} is not an integer")
    number = int(value)
    if abs(number) > MAX_US:
        raise _Problem(f"its {key} {number} does not fit int64 µs")
    return number


def _mark(number: int, line: dict[str, Any], origin: int) -> Mark:
    try:
        return _checked_mark(number, line, origin)
    except _Problem as exc:
        raise _Problem(f"line {number}: {exc}") from None


def _checked_mark(number: int, line: dict[str, Any], origin: int) -> Mark:
    if "schema" in line:
        raise _Problem("a second header (schema): two files concatenated?")
    if "time_us" not in line:
        raise _Problem("the mark has no time_us")
    time_us = origin + _integer(line["time_us"], "time_us")
    if abs(time_us) > MAX_US:
        raise _Problem("its time_us does not fit int64 µs from the epoch")
    duration = None
    if "duration_us" in line:
        duration = _integer(line["duration_us"], "duration_us")
        if duration < 0:
            raise _Problem(f"its duration_us is {duration}, below 0")
    for key in ("label", "text"):
        if key in line and not isinstance(line[key], str):
            raise _Problem(f"its {key} is not a string")
    value = line.get("value")
    if "value" in line and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise _Problem(f"its value {value!r} is not a number")
    channels = line.get("channels")
    if "channels" in line and not (isinstance(channels, list) and all(isinstance(c, str) for c in channels)):
        raise _Problem("its channels are not a list of channel names")
    return Mark(
        line=number,
        time_us=time_us,
        duration_us=duration,
        label=line.get("label"),
        text=line.get("text"),
        body=line.get("body"),
        has_body="body" in line,
        value=float(value) if value is not None else None,
        channels=tuple(channels) if channels is not None else None,
    )


def render(
    channel_id: str, name: str, marks: list[dict[str, Any]], *, time_reference: str, media_type: str | None
) -> bytes:
    """An interchange file: the header, then one line per mark (``time_us`` in ``time_reference``)."""
    channel: dict[str, Any] = {"id": channel_id, "name": name, "time_reference": time_reference}
    if media_type:
        channel["body_media_type"] = media_type
    lines = [{"schema": SCHEMA, "channel": channel}, *marks]
    return "".join(_dumps(line) + "\n" for line in lines).encode()


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
