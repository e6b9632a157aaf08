"""Bad input: one clear line naming the file, the series and the problem; no chunk under a final name."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from nwb2pennsieve.errors import InvalidFileError, InvalidInputError, InvalidSeriesError, NothingToConvertError
from nwb2pennsieve.local import convert_file, plan_file
from nwb2pennsieve.local.cli import main
from nwb2pennsieve.options import ConversionOptions
from tests.cli_checks import assert_fails_cleanly, run_cli
from tests.factory import SeriesSpec, write_nwb


def patched(tmp_path: Path, name: str, fn, spec: SeriesSpec | None = None) -> Path:
    nwb = write_nwb(tmp_path / name, [spec or SeriesSpec(data=np.ones((20, 2)))])
    with h5py.File(nwb, "a") as f:
        fn(f["acquisition/ElectricalSeries"])
    return nwb


def test_not_hdf5(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "notes.nwb"
    bad.write_text("this is not an HDF5 file\n" * 20)
    assert_fails_cleanly(capsys, bad, tmp_path / "out", "not an HDF5 file")


def test_empty_file(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "empty.nwb"
    bad.touch()
    assert_fails_cleanly(capsys, bad, tmp_path / "out", "empty")


SERIES = "series /acquisition/ElectricalSeries"


def test_zero_samples(tmp_path: Path, capsys) -> None:
    def empty(g):
        del g["data"]
        g.create_dataset("data", shape=(0, 2), dtype="f8")
        g["data"].attrs.update({"unit": "volts", "conversion": 1.0, "offset": 0.0})

    assert_fails_cleanly(capsys, patched(tmp_path, "zero.nwb", empty), tmp_path / "out", SERIES, "zero samples")


def test_columns_differ_from_electrodes(tmp_path: Path, capsys) -> None:
    nwb = write_nwb(tmp_path / "cols.nwb", [SeriesSpec(data=np.ones((20, 3)), electrodes=[0, 1])], n_electrodes=3)
    assert_fails_cleanly(capsys, nwb, tmp_path / "out", SERIES, "3 columns", "2 electrodes")


@pytest.mark.parametrize(
    ("ts", "text"),
    [
        ([0.0, 0.1, 0.05, 0.2], "go backwards at sample 2"),
        ([0.0, 0.1, 0.1, 0.2], "repeat at sample 2"),
        ([0.0, np.nan, 0.2, 0.3], "timestamp 1 is nan"),
        ([0.0, 0.1, np.inf, 0.3], "timestamp 2 is inf"),
    ],
)
def test_bad_timestamps(tmp_path: Path, capsys, ts, text) -> None:
    spec = SeriesSpec(data=np.ones((4, 1)), timestamps=np.array(ts))
    assert_fails_cleanly(capsys, write_nwb(tmp_path / "ts.nwb", [spec]), tmp_path / "out", SERIES, text)


@pytest.mark.parametrize("rate", [0.0, -5.0])
def test_rate_not_positive(tmp_path: Path, capsys, rate) -> None:
    def set_rate(g):
        g["starting_time"].attrs["rate"] = rate

    nwb = patched(tmp_path, "rate.nwb", set_rate)
    assert_fails_cleanly(capsys, nwb, tmp_path / "out", SERIES, "sampling rate", "positive")


def test_rate_disagreeing_with_timestamps(tmp_path: Path, capsys) -> None:
    def add_rate(g):
        g.create_dataset("starting_time", data=0.0).attrs["rate"] = 1100.0  # timestamps say 1000 Hz

    spec = SeriesSpec(data=np.ones((50, 1)), timestamps=np.arange(50) / 1000.0)
    nwb = patched(tmp_path, "rate2.nwb", add_rate, spec)
    assert_fails_cleanly(capsys, nwb, tmp_path / "out", SERIES, "disagrees with its timestamps")


def test_rate_agreeing_within_two_percent_is_used(tmp_path: Path) -> None:
    def add_rate(g):
        g.create_dataset("starting_time", data=0.0).attrs["rate"] = 1010.0

    spec = SeriesSpec(data=np.ones((50, 1)), timestamps=np.arange(50) / 1000.0)
    assert plan_file(patched(tmp_path, "rate3.nwb", add_rate, spec), ConversionOptions()).series[0].rate == 1010.0


def test_unknown_unit(tmp_path: Path, capsys) -> None:
    nwb = write_nwb(tmp_path / "unit.nwb", [SeriesSpec(data=np.ones((5, 1)), unit="furlongs")])
    assert_fails_cleanly(capsys, nwb, tmp_path / "out", SERIES, "'furlongs'")


def test_strict_lists_every_problem_and_skip_converts_the_rest(tmp_path: Path, capsys) -> None:
    good = SeriesSpec(name="good", data=np.ones((30, 1)))
    bad1 = SeriesSpec(name="bad1", data=np.ones((30, 1)), unit="furlongs", electrodes=[1])
    bad2 = SeriesSpec(name="bad2", data=np.ones((3, 1)), timestamps=np.array([0.0, 0.2, 0.1]), electrodes=[2])
    nwb = write_nwb(tmp_path / "mixed.nwb", [good, bad1, bad2])
    with pytest.raises(InvalidFileError) as info:
        plan_file(nwb, ConversionOptions())
    assert [p.series for p in info.value.problems] == ["/acquisition/bad1", "/acquisition/bad2"]
    last = assert_fails_cleanly(capsys, nwb, tmp_path / "out", "2 invalid series", "/acquisition/bad1", "bad2")
    assert "furlongs" in last and "go backwards" in last

    code, out, err = run_cli(capsys, "convert", str(nwb), "-o", str(tmp_path / "out2"), "--skip-invalid-series")
    assert code == 0, err
    assert "1 channels" in out
    assert "skipped /acquisition/bad1" in err
    assert sorted(p.name for p in (tmp_path / "out2").glob("channel-*"))[0].startswith("channel-00000")


def test_skip_invalid_by_environment(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SKIP_INVALID_SERIES", "true")
    nwb = write_nwb(
        tmp_path / "m.nwb",
        [
            SeriesSpec(name="a", data=np.ones((5, 1))),
            SeriesSpec(name="b", data=np.ones((5, 1)), unit="x", electrodes=[1]),
        ],
    )
    assert main(["convert", str(nwb), "-o", str(tmp_path / "o")]) == 0


def test_all_series_invalid_with_skip_is_nothing_to_convert(tmp_path: Path) -> None:
    nwb = write_nwb(tmp_path / "allbad.nwb", [SeriesSpec(data=np.ones((5, 1)), unit="x")])
    with pytest.raises(NothingToConvertError, match="skipped: /acquisition/ElectricalSeries"):
        plan_file(nwb, ConversionOptions(skip_invalid_series=True))


def test_failure_while_writing_leaves_no_final_chunk(tmp_path: Path, monkeypatch) -> None:
    nwb = write_nwb(tmp_path / "w.nwb", [SeriesSpec(data=np.ones((2000, 2)))])
    calls = {"n": 0}
    import nwb2pennsieve.source.slabs as slabs

    real = slabs.H5SlabReader.read

    def failing(self, start, stop, out):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("Can't read data (inflate() failed)")
        real(self, start, stop, out)

    monkeypatch.setattr(slabs.H5SlabReader, "read", failing)
    out = tmp_path / "out"
    line = (
        r"^w\.nwb: series /acquisition/ElectricalSeries: samples \d+-\d+ \(channels 0-1\) cannot be read: "
        r"a compressed chunk does not decompress: the file is damaged or truncated$"
    )
    with pytest.raises(InvalidSeriesError, match=line):
        convert_file(nwb, out, ConversionOptions(chunk_size_mb=0.001), workers=1)
    assert not out.exists()  # nothing published
    assert list(tmp_path.iterdir()) == [nwb]  # the staging folder and the lock file removed


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "x.nwb"
    bad.touch()
    with pytest.raises(InvalidInputError):
        main(["--debug", "convert", str(bad), "-o", str(tmp_path / "o")])
