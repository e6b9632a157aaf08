"""Output equals an independent h5py computation: values within 4 ULP, times within 1 µs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nwb2pennsieve.local import convert_file, plan_file
from nwb2pennsieve.options import ConversionOptions
from tests.expected import assert_matches, read_output
from tests.factory import SeriesSpec, gappy_timestamps, neuropixels_like, write_nwb

SMALL_CHUNK = 0.001  # 131 samples per chunk: many chunks from tiny files


def convert(nwb: Path, out: Path, *, workers: int = 1, **options: Any) -> Path:
    convert_file(nwb, out, ConversionOptions(**{"chunk_size_mb": SMALL_CHUNK, **options}), workers=workers)
    return out


def test_int16_chunked_gzip_shuffle_with_tiny_conversion(tmp_path: Path) -> None:
    spec = neuropixels_like(seconds=0.2, channels=16)
    nwb = write_nwb(tmp_path / "np.nwb", [spec])
    out = convert(nwb, tmp_path / "out")
    assert assert_matches(nwb, out) == 16 * -(-6000 // 131)


def test_conversion_and_channel_conversion_both_apply_and_warn(tmp_path: Path) -> None:
    data = np.random.default_rng(1).integers(-3000, 3000, size=(500, 4), dtype=np.int16)
    spec = SeriesSpec(data=data, conversion=1.95e-7, channel_conversion=[1.95e-7, 1.95e-7, 2e-7, 1.9e-7])
    nwb = write_nwb(tmp_path / "oe.nwb", [spec])
    plan = plan_file(nwb, ConversionOptions(chunk_size_mb=SMALL_CHUNK))
    assert any("implausible" in w and "/acquisition/ElectricalSeries" in w for w in plan.warnings)
    assert_matches(nwb, convert(nwb, tmp_path / "out"))


def test_plausible_scaling_does_not_warn(tmp_path: Path) -> None:
    data = np.random.default_rng(1).integers(-3000, 3000, size=(500, 4), dtype=np.int16)
    nwb = write_nwb(tmp_path / "ok.nwb", [SeriesSpec(data=data, conversion=1.95e-7)])
    assert plan_file(nwb, ConversionOptions()).warnings == []


def test_lfp_in_processing_and_two_series_get_global_indices(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    raw = SeriesSpec(name="raw", data=rng.normal(size=(400, 3)).astype(np.float32), rate=3000.0, conversion=1e-6)
    lfp = SeriesSpec(name="lfp", data=rng.normal(size=(100, 3)), rate=250.0, where="lfp", unit="mV")
    nwb = write_nwb(tmp_path / "two.nwb", [raw, lfp], names=["a", "b", "c"])
    out = convert(nwb, tmp_path / "out")
    assert_matches(nwb, out)
    _, meta = read_output(out)
    # path order: /acquisition/raw before /processing/ecephys/LFP/lfp
    assert [meta[i]["name"] for i in range(6)] == ["a", "b", "c", "a (lfp)", "b (lfp)", "c (lfp)"]
    assert meta[3]["rate"] == 250.0


def test_units_offset_missing_and_float_types(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    specs = [
        SeriesSpec(name="v", data=rng.normal(size=(50, 1)), unit="volt", offset=0.25),
        SeriesSpec(name="mv", data=rng.normal(size=(50, 1)).astype(np.float32), unit="mV", electrodes=[1]),
        SeriesSpec(
            name="uv",
            data=rng.integers(0, 60000, size=(50, 1), dtype=np.uint16),
            unit="uV",
            electrodes=[2],
            conversion=0.5,
            offset=-3.0,
        ),
        SeriesSpec(name="mu", data=rng.normal(size=(50, 1)), unit="µV", electrodes=[3], drop_offset=True),
        SeriesSpec(
            name="big",
            data=rng.integers(-(2**40), 2**40, size=(50, 1), dtype=np.int64),
            unit="V",
            electrodes=[4],
            conversion=1e-12,
        ),
    ]
    nwb = write_nwb(tmp_path / "units.nwb", specs, n_electrodes=5)
    assert_matches(nwb, convert(nwb, tmp_path / "out"))


def test_timestamps_with_gaps_late_start_odd_names(tmp_path: Path) -> None:
    rate = 2000.0
    t = gappy_timestamps(1000, rate, {300: 0.5, 700: 0.0016}, start=3600.25)  # 0.0016 s > 2 periods
    spec = SeriesSpec(name="Series with spaces.v2", data=np.random.default_rng(4).normal(size=(1000, 2)), timestamps=t)
    nwb = write_nwb(tmp_path / "gaps.nwb", [spec])
    plan = plan_file(nwb, ConversionOptions(chunk_size_mb=SMALL_CHUNK))
    assert [(s.start, s.stop) for s in plan.series[0].segments] == [(0, 300), (300, 700), (700, 1000)]
    assert plan.series[0].rate == rate
    assert_matches(nwb, convert(nwb, tmp_path / "out"))


def test_step_of_under_two_periods_is_not_a_gap(tmp_path: Path) -> None:
    t = gappy_timestamps(100, 1000.0, {50: 0.0009})  # a step of 1.9 periods
    nwb = write_nwb(tmp_path / "nogap.nwb", [SeriesSpec(data=np.zeros((100, 1)), timestamps=t)])
    assert len(plan_file(nwb, ConversionOptions()).series[0].segments) == 1


def test_rate_series_with_starting_time(tmp_path: Path) -> None:
    spec = SeriesSpec(data=np.random.default_rng(5).normal(size=(1000, 2)), rate=30000.0, starting_time=12.345678)
    nwb = write_nwb(tmp_path / "st.nwb", [spec])
    assert_matches(nwb, convert(nwb, tmp_path / "out"))


def test_one_dimensional_data(tmp_path: Path) -> None:
    one = SeriesSpec(name="single", data=np.arange(300, dtype=np.float64), electrodes=[2])
    many = SeriesSpec(name="mismatch", data=np.arange(300, dtype=np.float64), electrodes=[0, 1, 2])
    nwb = write_nwb(tmp_path / "1d.nwb", [one, many], names=["x", "y", "z"])
    plan = plan_file(nwb, ConversionOptions())
    assert [c.name for s in plan.series for c in s.channels] == ["mismatch", "z"]
    assert any("1-D data" in w and "3 electrodes" in w for w in plan.warnings)
    assert_matches(nwb, convert(nwb, tmp_path / "out"))


def test_spike_event_series_is_skipped(tmp_path: Path) -> None:
    spikes = SeriesSpec(
        name="spikes",
        kind="SpikeEventSeries",
        data=np.zeros((5, 2, 8)),
        timestamps=np.arange(5.0),
        electrodes=[0, 1],
    )
    nwb = write_nwb(tmp_path / "spk.nwb", [SeriesSpec(data=np.ones((10, 2))), spikes])
    plan = plan_file(nwb, ConversionOptions())
    assert [s.path for s in plan.series] == ["/acquisition/ElectricalSeries"]
    (spike,) = plan.not_converted  # a note, not a skipped invalid series
    assert (spike.path, spike.neurodata_type) == ("/acquisition/spikes", "SpikeEventSeries")
    assert "spike snippets" in spike.reason and not plan.skipped


def test_fixed_length_byte_strings_and_channel_name_column(tmp_path: Path) -> None:
    nwb = write_nwb(
        tmp_path / "fixed.nwb",
        [SeriesSpec(data=np.ones((10, 3)))],
        names=["CH1", "CH2", "CH3"],
        name_column="channel_name",
        groups=2,
        fixed_length_strings=True,
    )
    out = convert(nwb, tmp_path / "out")
    _, meta = read_output(out)
    assert [meta[i]["name"] for i in range(3)] == ["CH1", "CH2", "CH3"]
    assert [meta[i]["group"] for i in range(3)] == ["shank0", "shank1", "shank0"]


def test_duplicate_and_blank_names_become_unique_and_non_blank(tmp_path: Path) -> None:
    nwb = write_nwb(tmp_path / "dup.nwb", [SeriesSpec(data=np.ones((10, 4)))], names=["A", "A", " ", "B"])
    _, meta = read_output(convert(nwb, tmp_path / "out"))
    assert [meta[i]["name"] for i in range(4)] == ["A", "A #2", "E2", "B"]


def test_external_links_are_followed(tmp_path: Path) -> None:
    t = gappy_timestamps(400, 1000.0, {200: 1.0})
    spec = SeriesSpec(data=np.random.default_rng(6).normal(size=(400, 2)), timestamps=t, external=True)
    nwb = write_nwb(tmp_path / "ext.nwb", [spec])
    assert_matches(nwb, convert(nwb, tmp_path / "out"))


def test_naive_session_start_is_utc_with_warning(tmp_path: Path) -> None:
    nwb = write_nwb(tmp_path / "naive.nwb", [SeriesSpec(data=np.ones((10, 1)))], naive_start=True)
    plan = plan_file(nwb, ConversionOptions())
    assert any("no time zone" in w for w in plan.warnings)
    assert plan.session_start_us == 1709649015123456  # 2024-03-05T14:30:15.123456 read as UTC
    assert_matches(nwb, convert(nwb, tmp_path / "out"))


def test_a_session_start_before_1980_is_converted_with_a_warning(tmp_path: Path, capsys) -> None:
    """Pennsieve's Persyst converter writes 1970-01-01 when its source has no date: say so, convert anyway."""
    from datetime import UTC, datetime

    from tests.cli_checks import run_cli

    nwb = write_nwb(
        tmp_path / "old.nwb", [SeriesSpec(data=np.ones((10, 1)))], session_start=datetime(1970, 1, 1, tzinfo=UTC)
    )
    code, _, err = run_cli(capsys, "convert", str(nwb), "-o", str(tmp_path / "out"))
    assert code == 0, err
    assert "warning: old.nwb: session_start_time '1970-01-01T00:00:00+00:00' is before 1980" in err
    assert_matches(nwb, tmp_path / "out")
    recent = write_nwb(tmp_path / "new.nwb", [SeriesSpec(data=np.ones((10, 1)))])
    assert not any("before 1980" in w for w in plan_file(recent, ConversionOptions()).warnings)


@pytest.mark.parametrize(("workers", "max_item_mb"), [(2, 512), (1, 0.002), (2, 0.003)])
def test_bytes_do_not_depend_on_workers_or_item_size(tmp_path: Path, workers: int, max_item_mb: float) -> None:
    t = gappy_timestamps(3000, 30000.0, {1000: 0.01, 2500: 0.2})
    spec = neuropixels_like(seconds=0.1, channels=24)
    spec.data = np.random.default_rng(7).integers(-999, 999, size=(3000, 24), dtype=np.int16)
    spec.timestamps, spec.rate, spec.chunks = t, None, (512, 8)
    nwb = write_nwb(tmp_path / "det.nwb", [spec])
    base = convert(nwb, tmp_path / "base", workers=1, max_item_mb=512)
    other = convert(nwb, tmp_path / "other", workers=workers, max_item_mb=max_item_mb)
    plan = plan_file(nwb, ConversionOptions(chunk_size_mb=SMALL_CHUNK, max_item_mb=max_item_mb))
    if max_item_mb < 1:
        assert len(plan.work_items) > 10
    names = sorted(p.name for p in base.glob("channel-*"))  # the output; the marker records max_item_mb
    assert names == sorted(p.name for p in other.glob("channel-*"))
    for name in names:
        assert (base / name).read_bytes() == (other / name).read_bytes(), name


def test_extension_type_deriving_from_electrical_series(tmp_path: Path) -> None:
    """A type from an extension namespace is found through the schema cached in /specifications."""
    import h5py

    nwb = write_nwb(tmp_path / "ext_type.nwb", [SeriesSpec(data=np.ones((20, 2)))])
    with h5py.File(nwb, "a") as f:
        g = f["acquisition/ElectricalSeries"]
        g.attrs["neurodata_type"] = "MyProbeSeries"
        g.attrs["namespace"] = "ndx-probe"
        spec = '{"groups": [{"neurodata_type_def": "MyProbeSeries", "neurodata_type_inc": "ElectricalSeries"}]}'
        f.create_dataset("specifications/ndx-probe/0.1.0/ndx-probe.extensions", data=spec)
        f.create_dataset("specifications/ndx-probe/0.1.0/namespace", data='{"namespaces": []}')
    plan = plan_file(nwb, ConversionOptions())
    assert [(s.path, s.neurodata_type) for s in plan.series] == [("/acquisition/ElectricalSeries", "MyProbeSeries")]
