"""Inputs that used to give wrong output with exit 0: each is now exact, or fails (or warns) in one line.

Every file is generated here (pynwb, then damaged or patched with h5py); each test checks the
outcome (exit code, output) and the message.
"""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import h5py
import numpy as np
import pytest

from nwb2pennsieve.local import convert_file, plan_file
from nwb2pennsieve.local.cli import main
from nwb2pennsieve.options import ConversionOptions
from nwb2pennsieve.source.nwb import damage_reason
from tests.expected import assert_matches, read_output
from tests.factory import START, SeriesSpec, write_nwb

SERIES = "series /acquisition/ElectricalSeries"


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def fails(capsys, nwb: Path, out: Path, *expected: str) -> str:
    """Strict conversion fails with exit 1 and one ``error: FILE: ...`` line holding ``expected``."""
    code, _, err = run_cli(capsys, "convert", str(nwb), "--output", str(out))
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"error: {nwb.name}: "), lines[0]
    for text in expected:
        assert text in lines[0], lines[0]
    assert "Traceback" not in err and "synchronously" not in err
    leftovers = [p.name for p in out.rglob("*")] if out.exists() else []
    assert not [n for n in leftovers if n.endswith((".bin.gz", ".json"))], leftovers
    return lines[0]


def skips(capsys, nwb: Path, out: Path) -> tuple[str, str]:
    code, stdout, err = run_cli(capsys, "convert", str(nwb), "--output", str(out), "--skip-invalid-series")
    assert code == 0, err
    assert "Traceback" not in err and "synchronously" not in err
    return stdout, err


def damage_object_header(path: Path, obj: str) -> None:
    """Overwrite the start of ``obj``'s object header (its version byte and the rest) with garbage."""
    with h5py.File(path, "r") as f:
        addr = h5py.h5o.get_info(f[obj].id).addr
    with open(path, "r+b") as fh:
        fh.seek(addr)
        fh.write(b"\xee" * 8)


def two_series(tmp_path: Path, name: str) -> Path:
    good = SeriesSpec(name="good", data=np.arange(60, dtype=np.int16).reshape(30, 2), electrodes=[0, 1])
    bad = SeriesSpec(name="ElectricalSeries", data=np.ones((30, 1)), electrodes=[2])
    return write_nwb(tmp_path / name, [good, bad])


# 1. timestamps_reference_time ---------------------------------------------------------------


def test_times_are_relative_to_timestamps_reference_time(tmp_path: Path) -> None:
    reference = START - timedelta(hours=5, minutes=7)
    by_rate = SeriesSpec(name="by_rate", data=np.arange(3000, dtype=np.int16).reshape(1500, 2), starting_time=2.5)
    by_ts = SeriesSpec(
        name="by_ts", data=np.ones((400, 1)), timestamps=10.0 + np.arange(400) / 500.0, rate=None, electrodes=[2]
    )
    nwb = write_nwb(tmp_path / "ref.nwb", [by_rate, by_ts], timestamps_reference=reference)
    with h5py.File(nwb, "r") as f:
        assert "timestamps_reference_time" in f  # the file really sets it

    plan = plan_file(nwb, ConversionOptions(chunk_size_mb=0.005))
    reference_us = round(reference.timestamp() * 1e6)
    assert plan.timestamps_reference_us == reference_us
    assert plan.session_start_us - reference_us == (5 * 3600 + 7 * 60) * 1_000_000
    rate_series = next(s for s in plan.series if s.name == "by_rate")
    ts_series = next(s for s in plan.series if s.name == "by_ts")
    assert rate_series.chunks[0].start_us == reference_us + 2_500_000
    assert ts_series.chunks[0].start_us == reference_us + 10_000_000
    assert ts_series.chunks[-1].end_us == reference_us + 10_000_000 + 399 * 2000

    out = tmp_path / "out"
    convert_file(nwb, out, plan, workers=1)
    assert assert_matches(nwb, out) > 2  # the independent computation uses the reference time too
    files, meta = read_output(out)
    assert meta[0]["start"] == reference_us + 2_500_000 == files[0][0].start_us


def test_without_timestamps_reference_time_the_session_start_is_the_reference(tmp_path: Path) -> None:
    nwb = write_nwb(tmp_path / "noref.nwb", [SeriesSpec(data=np.ones((10, 2)), starting_time=1.0)])
    with h5py.File(nwb, "a") as f:
        del f["timestamps_reference_time"]  # pynwb always writes it; older writers did not
    plan = plan_file(nwb, ConversionOptions())
    assert plan.timestamps_reference_us is None
    assert plan.series[0].chunks[0].start_us == plan.session_start_us + 1_000_000


# 2. series that cannot be read --------------------------------------------------------------


def test_series_with_damaged_object_header_fails_or_is_skipped_with_a_warning(tmp_path: Path, capsys) -> None:
    nwb = two_series(tmp_path, "hdr.nwb")
    damage_object_header(nwb, "acquisition/ElectricalSeries")
    line = fails(capsys, nwb, tmp_path / "out", SERIES, "cannot be read", "object header", "damaged or truncated")
    assert "version number" not in line  # HDF5's own words are not the message

    stdout, err = skips(capsys, nwb, tmp_path / "out2")
    assert "warning: hdr.nwb: skipped /acquisition/ElectricalSeries: cannot be read" in err
    assert "2 channels" in stdout
    files, meta = read_output(tmp_path / "out2")
    assert sorted(files) == [0, 1] and [meta[i]["name"] for i in (0, 1)] == ["E0", "E1"]


def test_series_linked_to_a_missing_file_fails_or_is_skipped(tmp_path: Path, capsys) -> None:
    nwb = two_series(tmp_path, "link.nwb")
    with h5py.File(nwb, "a") as f:
        del f["acquisition/ElectricalSeries"]
        f["acquisition/ElectricalSeries"] = h5py.ExternalLink("gone.nwb", "/acquisition/ElectricalSeries")
    fails(capsys, nwb, tmp_path / "out", SERIES, "external file 'gone.nwb'", "missing")
    _, err = skips(capsys, nwb, tmp_path / "out2")
    assert "warning: link.nwb: skipped /acquisition/ElectricalSeries: " in err and "'gone.nwb'" in err
    assert len(read_output(tmp_path / "out2")[0]) == 2


def test_series_data_linked_to_a_missing_file_fails(tmp_path: Path, capsys) -> None:
    nwb = write_nwb(tmp_path / "ext.nwb", [SeriesSpec(data=np.ones((20, 2)), external=True)])
    ext = tmp_path / "ext_ElectricalSeries_ext.h5"
    assert ext.exists()
    ext.unlink()
    fails(capsys, nwb, tmp_path / "out", SERIES, "'ext_ElectricalSeries_ext.h5'", "missing")


def test_damaged_chunk_read_by_the_scaling_check_is_inside_the_series_boundary(tmp_path: Path, capsys) -> None:
    """The first samples are read while planning: a corrupt compressed chunk there fails the series."""
    data = np.random.default_rng(1).integers(-500, 500, size=(4000, 2), dtype=np.int16)
    bad = SeriesSpec(data=data, chunks=(1000, 2), compression="gzip", electrodes=[2, 3])
    good = SeriesSpec(name="good", data=np.ones((30, 2)), electrodes=[0, 1])
    nwb = write_nwb(tmp_path / "chunk.nwb", [good, bad])
    with h5py.File(nwb, "r") as f:
        info = f["acquisition/ElectricalSeries/data"].id.get_chunk_info(0)
    with open(nwb, "r+b") as fh:
        fh.seek(info.byte_offset + 8)
        fh.write(b"\x00\xff" * 40)
    line = fails(capsys, nwb, tmp_path / "out", SERIES, "compressed chunk", "damaged or truncated")
    assert "filter" not in line
    _, err = skips(capsys, nwb, tmp_path / "out2")
    assert "warning: chunk.nwb: skipped /acquisition/ElectricalSeries: cannot be read" in err


@pytest.mark.parametrize(
    ("raw", "meaning"),
    [
        ("Can't synchronously read data (filter returned failure during read)", "compressed chunk"),
        ("Link iteration failed (incorrect metadata checksum after all read attempts)", "links cannot be listed"),
        ("Unable to synchronously open object (ran off end of input buffer while decoding)", "ends early"),
        ("Unable to synchronously open object (bad object header version number)", "object header"),
        ("something HDF5 has never said before", "HDF5 cannot read it"),
    ],
)
def test_hdf5_text_becomes_a_reason(raw: str, meaning: str) -> None:
    reason = damage_reason(OSError(raw))
    assert meaning in reason and "damaged or truncated" in reason
    assert "(" not in reason and "synchronously" not in reason


# 3. electrode metadata ----------------------------------------------------------------------


def _no_table(g: h5py.Group) -> None:
    del g["electrodes"].attrs["table"]


def _null_table(g: h5py.Group) -> None:
    g["electrodes"].attrs.create("table", np.empty((), dtype=h5py.ref_dtype), dtype=h5py.ref_dtype)


@pytest.mark.parametrize(
    ("patch", "damage", "says"),
    [
        (_no_table, None, "its electrodes region has no table reference"),
        (_null_table, None, "table reference is null"),
        (None, "acquisition/ElectricalSeries/electrodes", "its electrodes region cannot be read"),
        (None, "general/extracellular_ephys/electrodes/id", "the electrodes table it references cannot be read"),
        (None, "general/extracellular_ephys/electrodes/label", "label column cannot be read"),
    ],
)
def test_unreadable_electrode_metadata_fails_or_warns(tmp_path: Path, capsys, patch, damage, says) -> None:
    spec = SeriesSpec(data=np.ones((20, 2)))
    nwb = write_nwb(tmp_path / "el.nwb", [spec], names=["alpha", "beta"], name_column="label")
    if patch:
        with h5py.File(nwb, "a") as f:
            patch(f["acquisition/ElectricalSeries"])
    if damage:
        damage_object_header(nwb, damage)
    fails(capsys, nwb, tmp_path / "out", SERIES, says)

    _, err = skips(capsys, nwb, tmp_path / "out2")
    warning = "warning: el.nwb: /acquisition/ElectricalSeries: "
    lines = [line for line in err.splitlines() if line.startswith(warning)]
    assert len(lines) == 1 and says in lines[0] and "default names and groups" in lines[0], err
    files, meta = read_output(tmp_path / "out2")
    assert [meta[i]["name"] for i in (0, 1)] == ["ElectricalSeries 0", "ElectricalSeries 1"]
    assert [meta[i]["group"] for i in (0, 1)] == ["default", "default"]
    assert all(np.array_equal(files[i][0].values, np.full(20, 1e6)) for i in (0, 1))


def test_readable_electrode_metadata_is_used(tmp_path: Path) -> None:
    nwb = write_nwb(tmp_path / "ok.nwb", [SeriesSpec(data=np.ones((20, 2)))], names=["alpha", "beta"])
    assert [c.name for c in plan_file(nwb, ConversionOptions()).series[0].channels] == ["alpha", "beta"]


# 4. virtual datasets ------------------------------------------------------------------------


def _virtual_data(nwb: Path, source_name: str, data: np.ndarray) -> None:
    with h5py.File(nwb.parent / source_name, "w") as src:
        src.create_dataset("samples", data=data)
    with h5py.File(nwb, "a") as f:
        g = f["acquisition/ElectricalSeries"]
        attrs = {k: v for k, v in g["data"].attrs.items()}
        del g["data"]
        layout = h5py.VirtualLayout(shape=data.shape, dtype=data.dtype)
        layout[:] = h5py.VirtualSource(source_name, "samples", shape=data.shape)
        ds = g.create_virtual_dataset("data", layout, fillvalue=0)
        ds.attrs.update(attrs)


def test_virtual_dataset_with_its_source_converts(tmp_path: Path, monkeypatch) -> None:
    data = np.random.default_rng(2).normal(size=(300, 2))
    nwb = write_nwb(tmp_path / "vds.nwb", [SeriesSpec(data=np.zeros((300, 2)))])
    _virtual_data(nwb, "vds_source.h5", data)
    monkeypatch.chdir(tmp_path)  # HDF5 finds relative sources beside the file or here
    out = tmp_path / "out"
    convert_file(nwb, out, ConversionOptions(), workers=1)
    assert assert_matches(nwb, out) == 2
    files, _ = read_output(out)
    assert np.array_equal(files[0][0].values, data[:, 0] * 1e6)  # the source's values, not fill zeros


def test_virtual_dataset_with_a_missing_source_fails_naming_it(tmp_path: Path, capsys) -> None:
    nwb = write_nwb(tmp_path / "vds.nwb", [SeriesSpec(data=np.zeros((300, 2)))])
    _virtual_data(nwb, "vds_source.h5", np.ones((300, 2)))
    (tmp_path / "vds_source.h5").unlink()
    fails(capsys, nwb, tmp_path / "out", SERIES, "virtual dataset", "'vds_source.h5'", "is missing")


# 5. times beyond int64 µs -------------------------------------------------------------------


@pytest.mark.parametrize("starting_time", [1e300, 1e14, -1e14])
def test_absurd_starting_time_fails(tmp_path: Path, capsys, starting_time: float) -> None:
    nwb = write_nwb(tmp_path / "far.nwb", [SeriesSpec(data=np.ones((20, 2)), starting_time=starting_time)])
    fails(capsys, nwb, tmp_path / "out", SERIES, "sample 0", "beyond what int64 microseconds")


def test_infinite_starting_time_fails(tmp_path: Path, capsys) -> None:
    nwb = write_nwb(tmp_path / "inf.nwb", [SeriesSpec(data=np.ones((20, 2)))])
    with h5py.File(nwb, "a") as f:
        f["acquisition/ElectricalSeries/starting_time"][()] = np.inf
    fails(capsys, nwb, tmp_path / "out", SERIES, "starting_time is inf")


def test_absurd_timestamp_fails(tmp_path: Path, capsys) -> None:
    ts = np.arange(50) / 1000.0
    ts[-1] = 1e300
    nwb = write_nwb(tmp_path / "ts.nwb", [SeriesSpec(data=np.ones((50, 1)), timestamps=ts, rate=None)])
    fails(capsys, nwb, tmp_path / "out", SERIES, "sample 49", "beyond what int64 microseconds")


def test_times_near_the_limit_but_inside_it_convert(tmp_path: Path) -> None:
    far = 2.0e5 * 365 * 86400  # 200,000 years after the reference: still fits int64 µs
    nwb = write_nwb(tmp_path / "near.nwb", [SeriesSpec(data=np.ones((20, 2)), starting_time=far)])
    plan = plan_file(nwb, ConversionOptions())
    assert plan.series[0].chunks[0].start_us == plan.session_start_us + round(far * 1e6)


# 6. rates from float32 timestamps -----------------------------------------------------------


def test_rate_from_float32_timestamps_is_within_1_ppm(tmp_path: Path) -> None:
    rate, n, offset = 30000.0, 600_000, 100.0  # 20 s at 30 kHz, starting 100 s in
    ts = (offset + np.arange(n) / rate).astype(np.float32)
    steps = np.diff(ts.astype(np.float64))
    median_rate = 1.0 / float(np.median(steps))
    assert abs(median_rate / rate - 1) > 1e-3  # float32 rounds each step: the median is far off
    nwb = write_nwb(tmp_path / "f32.nwb", [SeriesSpec(data=np.zeros((n, 1), dtype=np.int16), timestamps=ts, rate=None)])
    with h5py.File(nwb, "a") as f:  # pynwb writes float64: store the float32 values as float32
        g = f["acquisition/ElectricalSeries"]
        attrs = dict(g["timestamps"].attrs)
        del g["timestamps"]
        g.create_dataset("timestamps", data=ts, dtype=np.float32).attrs.update(attrs)
    plan = plan_file(nwb, ConversionOptions())
    assert len(plan.series[0].segments) == 1
    assert abs(plan.series[0].rate / rate - 1) < 1e-6


def test_rate_estimate_uses_the_longest_segment(tmp_path: Path) -> None:
    ts = np.concatenate([np.arange(10) / 1000.0, 5.0 + np.arange(3000) / 2000.0])  # short, then long
    nwb = write_nwb(tmp_path / "seg.nwb", [SeriesSpec(data=np.ones((3010, 1)), timestamps=ts, rate=None)])
    plan = plan_file(nwb, ConversionOptions())
    assert plan.series[0].rate == 2000.0
    assert [(g.start, g.stop) for g in plan.series[0].segments][-1] == (10, 3010)


# the unreadable object elsewhere -------------------------------------------------------------


def test_unreadable_metadata_group_is_a_warning_not_a_silent_drop(tmp_path: Path, capsys) -> None:
    nwb = write_nwb(tmp_path / "dev.nwb", [SeriesSpec(data=np.ones((20, 2)))])
    damage_object_header(nwb, "general/devices/probe")
    code, _, err = run_cli(capsys, "convert", str(nwb), "--output", str(tmp_path / "out"))
    assert code == 0, err
    assert "warning: dev.nwb: /general/devices/probe cannot be read" in err


def test_unreadable_object_outside_general_fails_strict(tmp_path: Path, capsys) -> None:
    nwb = two_series(tmp_path, "proc.nwb")
    with h5py.File(nwb, "a") as f:
        f.create_group("processing/behavior").attrs["neurodata_type"] = "ProcessingModule"
    damage_object_header(nwb, "processing/behavior")
    fails(capsys, nwb, tmp_path / "out", "series /processing/behavior", "may be a series that would be lost")
    shutil.rmtree(tmp_path / "out", ignore_errors=True)
