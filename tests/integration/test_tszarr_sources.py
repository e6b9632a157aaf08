"""Event sources as real files have them: the shared corpus's units-only files (DANDI 000009's
waveform rate in a column, pynapple's units without waveforms), a dense Units table (count levels),
a table without stop times, a damaged table, an annotation file that changes or claims a taken id."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from nwb2pennsieve.errors import InvalidInputError
from nwb2pennsieve.local import convert_file
from nwb2pennsieve.local.convert import read_local_file
from nwb2pennsieve.local.planning import plan_file
from nwb2pennsieve.options import ConversionOptions
from tests.events_factory import Everything, write_everything
from tests.expected_tszarr import consolidated, expected_units
from tests.tszarr_checks import validate

BUNDLE = ConversionOptions(formats="bundle")


def test_dandi_units_and_trials_without_an_electrical_series(corpus: Path, tmp_path: Path) -> None:
    nwb = next(corpus.glob("dandi-000009*.nwb"))
    result = convert_file(nwb, tmp_path / "out", BUNDLE, workers=1)
    bundle = next((tmp_path / "out").glob("*.zarr"))
    validate(bundle)
    root = consolidated(bundle)
    units = root["0"]
    assert units.attrs["id"] == "units" and units.attrs["label_names"] == ["1", "2", "3", "4"]
    assert units["templates"].shape == (4, 29) and "waveforms" not in units.array_keys()
    source = result.plan.event_sources[0]
    assert source.kind == "units" and source.waveform_rate == 25000.0 and source.rate_from == "the sampling_rate column"
    trials = root["1"]
    assert trials.attrs["id"] == "intervals.trials" and trials["events"].shape == (412,)
    assert "label_names" not in trials.attrs  # no label-like column: the text is in the bodies
    first = json.loads(trials["bodies"][:].tobytes().decode().splitlines()[0])
    assert "photo_stim_type" in first and "cue_start_time" in first  # NaN is null, text is text
    meta = json.loads((bundle / "meta" / "zarr.json").read_text())["attributes"]
    assert meta["session"]["start_us"] == result.plan.bundle_onset_us
    assert int(trials["events"][0]) == 0  # the first trial (2.3 s) precedes the first spike (1,499 s): the onset


def test_pynapple_units_without_waveforms(corpus: Path, tmp_path: Path) -> None:
    nwb = next(corpus.glob("pynapple-phy*.nwb"))
    convert_file(nwb, tmp_path / "out", BUNDLE, workers=1)
    bundle = next((tmp_path / "out").glob("*.zarr"))
    validate(bundle)
    units = consolidated(bundle)["0"]
    assert units.attrs["label_names"] == ["6", "191", "206"]
    assert not {"templates", "waveforms"} & set(units.array_keys())
    assert sorted(units.group_keys(), key=int) == []  # 21,354 spikes: no count levels below 65,536


def test_a_dense_units_table_gets_count_levels(tmp_path: Path) -> None:
    nwb = write_everything(
        tmp_path / "rec.nwb", Everything(electrical=False, timeseries=False, spikes_per_unit=(40_000, 30_000))
    )
    convert_file(nwb, tmp_path / "out", BUNDLE, workers=1)
    bundle = tmp_path / "out" / "rec.zarr"
    validate(bundle)  # each count level sums to the events
    root = consolidated(bundle)
    units = root["0"]
    exp = expected_units(nwb)
    onset = json.loads((bundle / "meta" / "zarr.json").read_text())["attributes"]["session"]["start_us"]
    assert units.attrs["offset_us"] == 0  # count bins count from the onset
    np.testing.assert_array_equal(units["events"][:], exp.events - onset)
    levels = sorted(units.group_keys(), key=int)
    assert levels and levels[0] == "1"
    counts = units["1"]["counts"][:]
    period = units["1"].attrs["period_us"]
    relative = exp.events - onset
    labels = np.array([exp.extra["ids"].index(x) for x in exp.labels])
    want = np.zeros_like(counts)
    np.add.at(want, ((relative // period).astype(int), labels), 1)
    np.testing.assert_array_equal(counts, want)
    for k in levels[1:]:
        assert units[k].attrs["period_us"] == 4 * units[str(int(k) - 1)].attrs["period_us"]
        assert int(units[k]["counts"][:].sum()) == relative.size


def test_a_table_without_stop_times_is_a_note(tmp_path: Path) -> None:
    nwb = write_everything(tmp_path / "rec.nwb", Everything(electrical=False, timeseries=False))
    with h5py.File(nwb, "a") as f:
        del f["intervals/epochs/stop_time"]
    plan = plan_file(nwb, BUNDLE)
    note = next(n for n in plan.not_converted if n.path == "/intervals/epochs")
    assert note.reason == "it has no stop_time column of numbers"
    assert "/intervals/trials" in [getattr(s, "path", "") for s in plan.event_sources]


def test_a_damaged_units_table_is_a_note_and_the_rest_converts(tmp_path: Path) -> None:
    nwb = write_everything(tmp_path / "rec.nwb", Everything(electrical=False, timeseries=False))
    with h5py.File(nwb, "a") as f:
        del f["units/spike_times"]
    result = convert_file(nwb, tmp_path / "out", BUNDLE, workers=1)
    assert any(n.path == "/units" and "no spike_times" in n.reason for n in result.plan.not_converted)
    validate(tmp_path / "out" / "rec.zarr")


def test_an_annotation_file_claiming_a_taken_id_is_refused(tmp_path: Path) -> None:
    nwb = write_everything(tmp_path / "rec.nwb", Everything(electrical=False, timeseries=False))
    header = {"schema": "pennsieve/annotations-1.1", "channel": {"id": "units", "time_reference": "unix_epoch"}}
    (tmp_path / "rec.annotations.ndjson").write_text(json.dumps(header) + "\n" + json.dumps({"time_us": 1}) + "\n")
    with pytest.raises(InvalidInputError, match=r"annotation file rec.annotations.ndjson: its channel id 'units' is"):
        plan_file(nwb, BUNDLE)


def test_an_annotation_file_changed_after_planning_stops_the_last_step(tmp_path: Path) -> None:
    nwb = write_everything(tmp_path / "rec.nwb", Everything(electrical=False, timeseries=False))
    header = {"schema": "pennsieve/annotations-1.1", "channel": {"id": "m", "time_reference": "recording_onset"}}
    path = tmp_path / "rec.annotations.ndjson"
    path.write_text(json.dumps(header) + "\n" + json.dumps({"time_us": 1_000_000}) + "\n")
    plan = plan_file(nwb, BUNDLE)
    path.write_text(json.dumps(header) + "\n" + json.dumps({"time_us": 2_000_000}) + "\n")
    with pytest.raises(
        InvalidInputError, match=r"annotation file rec\.annotations\.ndjson changed since the conversion"
    ):
        convert_file(nwb, tmp_path / "out", plan, workers=1)
    assert read_local_file(plan.event_sources[-1]) == path.read_bytes()  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists()


def test_marks_naming_channels_point_at_their_groups(tmp_path: Path) -> None:
    nwb = write_everything(tmp_path / "rec.nwb", Everything(seconds=5.0, lfp_nan_at=None))
    header = {"schema": "pennsieve/annotations-1.1", "channel": {"id": "m", "time_reference": "recording_onset"}}
    marks = [
        {"time_us": 2_000_000, "channels": ["E1", "SpO2"]},
        {"time_us": 3_000_000},  # the whole recording
        {"time_us": 4_000_000, "channels": ["E0 (lfp)", "gone"]},
    ]
    (tmp_path / "rec.annotations.ndjson").write_text("".join(json.dumps(m) + "\n" for m in [header, *marks]))
    convert_file(nwb, tmp_path / "out", BUNDLE, workers=1)
    root = consolidated(tmp_path / "out" / "rec.zarr")
    groups = {root[g].attrs["name"]: int(g) for g in root.group_keys() if root[g].attrs["kind"] == "continuous"}
    marks_group = next(root[g] for g in root.group_keys() if root[g].attrs["id"] == "m")
    refs, offsets = marks_group["channel_refs"][:], marks_group["channel_ref_offsets"][:]
    assert offsets.tolist() == [0, 2, 2, 3]
    assert refs.tolist() == [groups["E1"], groups["SpO2"], groups["E0 (lfp)"]]
