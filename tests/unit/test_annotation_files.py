"""Annotation interchange files (``*.annotations.ndjson``, ``pennsieve/annotations-1.1``) beside an
input: read into event channels; a bad one ends the conversion with one line naming the file and
the line (exit 1, nothing written); the files written beside a bundle read back the same."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nwb2pennsieve.errors import InvalidInputError
from nwb2pennsieve.source.annotation_files import files_beside, parse, render
from tests.cli_checks import run_cli
from tests.factory import START, SeriesSpec, write_nwb

HEADER = {"schema": "pennsieve/annotations-1.1", "channel": {"id": "marks", "time_reference": "recording_onset"}}


def ndjson(*lines: object) -> bytes:
    return "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines).encode()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (b"", "is empty (no header line)"),
        (ndjson({"schema": "pennsieve/annotations-2.0", "channel": {"id": "x"}}), "line 1: schema"),
        (ndjson({"channel": {"id": "x"}}), "line 1: the header has no schema"),
        (ndjson({"schema": "pennsieve/annotations-1.1", "channel": {"time_reference": "unix_epoch"}}), "has no id"),
        (ndjson({**HEADER, "channel": {"id": "x", "time_reference": "local"}}), "time_reference 'local'"),
        (ndjson(HEADER, {"time_us": 5}, "{not json"), "line 3: not valid JSON"),
        (ndjson(HEADER, [1, 2]), "line 2: a JSON list, not an object"),
        (ndjson(HEADER, {"duration_us": 5}), "line 2: the mark has no time_us"),
        (ndjson(HEADER, {"time_us": 1.5}), "line 2: its time_us 1.5 is not an integer"),
        (ndjson(HEADER, {"time_us": 1, "duration_us": -5}), "line 2: its duration_us is -5, below 0"),
        (ndjson(HEADER, {"time_us": 1, "label": 3}), "line 2: its label is not a string"),
        (ndjson(HEADER, {"time_us": 1, "value": "high"}), "line 2: its value 'high' is not a number"),
        (ndjson(HEADER, {"time_us": 1, "channels": "C3"}), "line 2: its channels are not a list"),
        (ndjson(HEADER, {"time_us": 1}, HEADER), "line 3: a second header"),
        (b"\xff\xfe", "is not UTF-8"),
    ],
)
def test_a_bad_file_is_one_line_naming_the_file_and_the_line(text: bytes, problem: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        parse("rec.annotations.ndjson", text, session_start_us=0, source="rec.nwb")
    line = caught.value.one_line()
    assert line.startswith("rec.nwb: annotation file rec.annotations.ndjson ") and problem in line, line
    assert "\n" not in line


def test_times_count_from_the_session_start_or_the_epoch() -> None:
    onset = parse("a", ndjson(HEADER, {"time_us": 7, "duration_us": 2.0}), session_start_us=1000, source="x")
    assert (onset.marks[0].time_us, onset.marks[0].duration_us) == (1007, 2)
    epoch = {**HEADER, "channel": {"id": "m", "time_reference": "unix_epoch"}}
    assert parse("a", ndjson(epoch, {"time_us": 7}), session_start_us=1000, source="x").marks[0].time_us == 7


def test_the_files_we_write_read_back_as_written() -> None:
    marks = [{"time_us": 5, "duration_us": 0, "label": "é", "body": {"a": 1, "b": None}}, {"time_us": 9}]
    text = render("trials", "trials", marks, time_reference="unix_epoch", media_type="application/json")
    parsed = parse("trials.annotations.ndjson", text, session_start_us=123, source="x")
    assert (parsed.channel_id, parsed.media_type) == ("trials", "application/json")
    assert [(m.time_us, m.label, m.body) for m in parsed.marks] == [(5, "é", {"a": 1, "b": None}), (9, None, None)]


def test_the_files_beside_an_input_are_those_named_after_its_stem(tmp_path: Path) -> None:
    for name in ("rec.annotations.ndjson", "rec.seizures.annotations.ndjson", "record2.annotations.ndjson",
                 "other.annotations.ndjson", "rec.ndjson"):  # fmt: skip
        (tmp_path / name).write_bytes(ndjson(HEADER))
    found = [p.name for p in files_beside(tmp_path / "rec.nwb")]
    # The issue's rule, a prefix of the stem: with no record2.nwb beside it, record2's file is taken too.
    assert found == ["rec.annotations.ndjson", "rec.seizures.annotations.ndjson", "record2.annotations.ndjson"]
    (tmp_path / "record2.nwb").write_bytes(b"")  # now it belongs to that recording, never to both
    assert [p.name for p in files_beside(tmp_path / "rec.nwb")] == found[:2]
    assert [p.name for p in files_beside(tmp_path / "record2.nwb")] == ["record2.annotations.ndjson"]


@pytest.fixture
def rec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # In this process: a forkserver (after another test started a thread) talks over a socket.
    monkeypatch.setenv("PLAN_TIMEOUT_S", "0")
    import numpy as np

    data = np.arange(40_000, dtype=np.int16).reshape(20_000, 2)
    (tmp_path / "in").mkdir()
    return write_nwb(tmp_path / "in" / "rec.nwb", [SeriesSpec(data=data, rate=1000.0, starting_time=1.0)])


@pytest.mark.parametrize(
    ("marks", "problem"),
    [
        ([{"time_us": 30_000_000}], "line 2: its mark at 30.000000 s from the session start is outside the recording"),
        ([{"time_us": -1}], "line 2: its mark at -0.000001 s"),
        ([{"time_us": 1_000}, {"time_us": 2_000, "duration_us": -1}], "line 3: its duration_us is -1"),
    ],
)
def test_convert_stops_on_a_bad_annotation_file_and_writes_nothing(
    rec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], marks: list[dict[str, int]], problem: str
) -> None:
    (rec.parent / "rec.annotations.ndjson").write_bytes(ndjson(HEADER, *marks))
    out = tmp_path / "out"
    code, _, err = run_cli(
        capsys, "convert", str(rec), "--output", str(out), "--formats", "chunks,bundle", "--workers", "1"
    )
    last = err.strip().splitlines()[-1]
    assert code == 1 and last.startswith("error: rec.nwb: annotation file rec.annotations.ndjson line "), last
    assert problem in last and "Traceback" not in err
    assert not out.exists() or not any(out.iterdir())


def test_an_annotation_file_becomes_an_event_channel(
    rec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    header = {**HEADER, "channel": {**HEADER["channel"], "body_media_type": "application/json", "unit": "z"}}
    marks = [
        {"time_us": 500_000, "label": "artifact", "body": {"score": 0.1}},  # before the first sample (1 s)
        {"time_us": 2_000_000, "duration_us": 250_000, "label": "seizure", "value": 3, "channels": ["E0", "nope"]},
        {"time_us": 3_000_000, "channels": ["nope"]},  # names only a channel the bundle does not have: dropped
    ]
    (rec.parent / "rec.annotations.ndjson").write_bytes(ndjson(header, *marks))
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "convert", str(rec), "--output", str(out), "--formats", "bundle", "--workers", "1")
    assert code == 0, err
    assert "rec.annotations.ndjson: its marks name 1 channels the bundle does not have (nope)" in err
    root = json.loads((out / "rec.zarr" / "zarr.json").read_text())["consolidated_metadata"]["metadata"]
    meta = json.loads((out / "rec.zarr" / "meta" / "zarr.json").read_text())["attributes"]
    assert meta["session"]["start_us"] == round(START.timestamp() * 1e6) + 500_000  # the onset: the first mark
    events = root["2"]["attributes"]
    assert events == {
        "id": "marks",
        "kind": "event",
        "name": "marks",
        "offset_us": 0,  # the first mark is the onset
        "max_duration_us": 250_000,
        "label_names": ["artifact", "seizure"],
        "unit": "z",
        "body_media_type": "application/json",
    }
    assert root["0"]["attributes"]["offset_us"] == 500_000  # the samples start 0.5 s after the first mark
    assert (out / "rec.zarr" / "2" / "bodies" / "c" / "0").read_bytes() == b'{"score":0.1}\n{}\n'
