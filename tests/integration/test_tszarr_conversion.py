"""Whole conversions into the TS-Zarr bundle, checked against an independent h5py computation
(tests/expected_tszarr.py), Pennsieve's validator and Pennsieve's reader (tests/tszarr_checks.py).

Shards and inner chunks are shrunk so a small file has many shards, many work-item windows and a
reduce; the same file converted with other windows (workers, item sizes) gives the same bytes.
"""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import numpy as np
import pytest

from nwb2pennsieve.local import convert_file, pool
from nwb2pennsieve.options import ConversionOptions
from nwb2pennsieve.plan import bundle_layout as layout
from tests.events_factory import SESSION_US, Everything, write_everything
from tests.expected import assert_matches
from tests.expected_tszarr import (
    check_continuous,
    check_events,
    consolidated,
    expected_continuous,
    expected_intervals,
    expected_units,
)
from tests.tszarr_checks import read_with_reader, validate

# The event channels of write_everything's file, in bundle order.
EVENT_IDS = [
    "units",
    *(f"intervals.{t}" for t in ("epochs", "invalid_times", "sleep_stages", "trials")),
    "acquisition.notes",
]
SMALL = {"INNER_CHUNK_BINS": 64, "TARGET_SHARD_BYTES": 1024, "MIN_BINS": 16}
EVENT_PATHS = [
    "/units",
    "/intervals/epochs",
    "/intervals/invalid_times",
    "/intervals/sleep_stages",
    "/intervals/trials",
]


@pytest.fixture
def small_shards(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SMALL.items():
        monkeypatch.setattr(layout, name, value)
    # The pool's workers must see the shrunk sizes: fork them (a forkserver worker imports afresh).
    monkeypatch.setattr(pool, "pool_context", lambda: multiprocessing.get_context("fork"))


@pytest.fixture(scope="module")
def everything(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_everything(tmp_path_factory.mktemp("nwb") / "rec.nwb")


def objects(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(("workers", "item_mb"), [(1, 0.05), (2, 0.02)])
def test_every_channel_of_every_kind_matches_the_nwb_file(
    small_shards: None, everything: Path, tmp_path: Path, workers: int, item_mb: float
) -> None:
    out = tmp_path / "out"
    options = ConversionOptions(formats="chunks,bundle", chunk_size_mb=0.01, max_item_mb=item_mb)
    result = convert_file(everything, out, options, workers=workers)
    assert len({i.window for i in result.plan.work_items if i.series == 0 and not i.aux}) > 5  # many windows
    assert assert_matches(everything, out) > 0  # the chunk files are what they always were: ElectricalSeries only
    bundle = out / "rec.zarr"
    validate(bundle)
    onset = check_continuous(bundle, everything, min_bins=SMALL["MIN_BINS"])
    assert onset == SESSION_US - 500_000  # the sleep stage that starts 0.5 s before the session
    root = consolidated(bundle)
    continuous = len(expected_continuous(everything))
    ids = [root[str(g)].attrs["id"] for g in range(continuous, continuous + 6)]
    assert ids == EVENT_IDS
    check_events(root[str(continuous)], expected_units(everything), onset)
    for g, path in enumerate(EVENT_PATHS[1:], start=continuous + 1):
        check_events(root[str(g)], expected_intervals(everything, path), onset)
    notes = root[str(continuous + 5)]
    assert notes.attrs["label_names"] == ["lights off", "lights on", "pt. Jane Roe coughed"]
    assert sorted(p.name for p in out.glob("*.annotations.ndjson")) == [
        f"{i}.annotations.ndjson" for i in sorted(ids[1:])
    ]
    assert result.summary_line().startswith(f"rec.nwb: {continuous} channels + 6 event channels, ")


def test_windows_and_workers_do_not_change_a_byte(small_shards: None, everything: Path, tmp_path: Path) -> None:
    runs = []
    for workers, item_mb in ((1, 0.05), (2, 0.01), (1, 512.0)):
        out = tmp_path / f"out-{workers}-{item_mb}"
        convert_file(everything, out, ConversionOptions(formats="bundle", max_item_mb=item_mb), workers=workers)
        runs.append(objects(out / "rec.zarr"))
    assert runs[0] == runs[1] == runs[2]


def test_the_reader_returns_our_values(small_shards: None, everything: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    convert_file(everything, out, ConversionOptions(formats="bundle", max_item_mb=0.05), workers=1)
    bundle = out / "rec.zarr"
    read = read_with_reader(bundle, "--levels")
    root = consolidated(bundle)
    want = expected_continuous(everything)
    assert [c["info"]["id"] for c in read["channels"]] == [root[str(g)].attrs["id"] for g in range(len(want))]
    for g, (channel, exp) in enumerate(zip(read["channels"], want, strict=True)):
        got = np.array([np.nan if v is None else v for v in channel["raw"]["values"]], dtype=np.float64)
        np.testing.assert_array_equal(got, exp.raw.astype(np.float64), err_msg=f"channel {g} raw through the reader")
        for level in channel.get("levels", []):
            env = root[str(g)][str(level["level"])]["env"][:].reshape(-1).astype(np.float64)
            values = np.array([np.nan if v is None else v for v in level["values"]], dtype=np.float64)
            np.testing.assert_array_equal(values, env, err_msg=f"channel {g} level {level['level']}")
    events = {e["info"]["id"]: e for e in read["events"]}
    trials = expected_intervals(everything, "/intervals/trials")
    onset = SESSION_US - 500_000
    got = events["intervals.trials"]["events"]
    assert [e["timeUs"] for e in got] == (trials.events - onset).tolist()
    assert [e["durationUs"] for e in got] == trials.durations.tolist()
    assert [e["label"] for e in got] == trials.labels
    assert [json.loads(e["body"]) for e in got] == trials.bodies
    assert events["units"]["n"] == sum(Everything().spikes_per_unit)


def test_deidentify_drops_meta_and_the_free_text(small_shards: None, everything: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    convert_file(everything, out, ConversionOptions(formats="bundle", deidentify=True), workers=1)
    bundle = out / "rec.zarr"
    validate(bundle)
    assert not (bundle / "meta").exists()
    files = [p for p in out.rglob("*") if p.is_file() and (p.suffix in (".json", ".ndjson") or p.name == "0")]
    text = "".join(p.read_text(errors="replace") for p in files)
    for word in ("Jane Roe", "Dr. Smith", "P-77", "nogo"):
        assert word not in text
    root = consolidated(bundle)
    for g in root.group_keys():
        attrs = dict(root[g].attrs)
        if attrs["kind"] == "event" and attrs["id"] != "units":
            assert "label_names" not in attrs
            if "bodies" in root[g].array_keys():
                for line in root[g]["bodies"][:].tobytes().decode().splitlines():
                    assert not any(isinstance(v, str) for v in json.loads(line).values())
    header, first = (json.loads(x) for x in (out / "intervals.trials.annotations.ndjson").read_text().splitlines()[:2])
    assert header["channel"]["time_reference"] == "recording_onset" and first["time_us"] == 1_000_000
    assert "label" not in first and first["body"] == {"correct": False, "rt": 0.3}


def test_a_file_with_units_and_annotations_but_no_electrical_series(small_shards: None, tmp_path: Path) -> None:
    nwb = write_everything(tmp_path / "rec.nwb", Everything(electrical=False))
    out = tmp_path / "out"
    result = convert_file(nwb, out, ConversionOptions(formats="bundle"), workers=1)
    assert not result.plan.series and result.plan.aux_series
    validate(out / "rec.zarr")
    check_continuous(out / "rec.zarr", nwb, min_bins=SMALL["MIN_BINS"])


def test_a_selection_keeps_the_whole_files_ids(small_shards: None, everything: Path, tmp_path: Path) -> None:
    """--series names ElectricalSeries and TimeSeries alike; the event channels are always written."""
    out = tmp_path / "out"
    series = ("/acquisition/SpO2", "/processing/ecephys/LFP/lfp")
    convert_file(everything, out, ConversionOptions(formats="chunks,bundle", series=series), workers=1)
    root = consolidated(out / "rec.zarr")
    ids = [root[str(g)].attrs["id"] for g in range(len(list(root.group_keys())))]
    assert ids[:5] == ["channel-00004", "channel-00005", "channel-00006", "channel-00007", "timeseries-00003"]
    assert ids[5:] == EVENT_IDS
    assert sorted(p.name for p in out.glob("channel-*.metadata.json")) == [
        f"channel-0000{i}.metadata.json" for i in range(4, 8)
    ]
