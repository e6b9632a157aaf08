"""``nwb2pennsieve inspect`` and ``--series`` / ``SERIES``, as a user meets them on the command line.

- inspect says what the file holds, what is not converted and why, and exactly what the
  conversion writes (checked against a real conversion); a file with nothing to convert is
  inspected too (exit 0); ``--json`` is the :class:`Inspection` model.
- ``--series`` converts only some series; their channels keep their whole-file indices and
  names, so the output is exactly the whole conversion's files of those channels.
- A path that names no convertible series is exit 2, naming it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nwb2pennsieve.local.cli import sample_path
from nwb2pennsieve.local.inspect import Inspection
from nwb2pennsieve.options import ConversionOptions
from nwb2pennsieve.output.publish import MARKER_NAME
from tests.cli_checks import run_cli
from tests.factory import SeriesSpec, write_nwb

RAW = "/acquisition/ElectricalSeriesRaw"
LFP = "/processing/ecephys/LFP/ElectricalSeriesLFP"


def files(folder: Path) -> dict[str, bytes]:
    """The conversion's files (chunk files and channel metadata; not the output marker)."""
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name != MARKER_NAME}


@pytest.fixture(scope="module")
def whole(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The sample's whole conversion."""
    from nwb2pennsieve.local import convert_file

    out = tmp_path_factory.mktemp("whole")
    convert_file(sample_path(), out, ConversionOptions(), workers=1)
    return files(out)


def test_inspect_predicts_exactly_what_the_conversion_writes(capsys, whole: dict[str, bytes]) -> None:
    code, out, err = run_cli(capsys, "inspect", "--json", str(sample_path()))
    assert code == 0, err
    found = Inspection.model_validate_json(out)
    assert found.convertible
    assert found.output.files == len(whole)
    assert found.output.chunk_files == len([n for n in whole if n.endswith(".bin.gz")])
    assert found.output.bytes == sum(len(b) for b in whole.values())
    assert sum(s.output_bytes for s in found.series) == sum(len(b) for n, b in whole.items() if n.endswith(".bin.gz"))
    indices = {int(n[len("channel-") : len("channel-") + 5]) for n in whole}
    assert sorted(c.index for s in found.series for c in s.channels) == sorted(indices)


def test_inspect_text_names_series_channels_gaps_and_output(capsys) -> None:
    code, out, _ = run_cli(capsys, "inspect", str(sample_path()))
    assert code == 0
    found = Inspection.model_validate_json(
        json.dumps(json.loads(run_cli(capsys, "inspect", "--json", str(sample_path()))[1]))
    )
    lfp = next(s for s in found.series if s.path == LFP)
    # the sample's LFP has one gap (timestamps jump): two segments, the gap's length is the jump
    assert len(lfp.segments) == 2 and len(lfp.gaps) == 1
    assert lfp.gaps[0].after_sample == lfp.segments[0].stop_sample - 1
    assert lfp.gaps[0].step_seconds > 1 / lfp.rate
    assert lfp.gaps[0].missing_seconds == pytest.approx(lfp.gaps[0].step_seconds - 1 / lfp.rate)
    for text in (RAW, LFP, "int16 (20000, 8)", "10000 Hz", "gaps: ", "group shank0: CH1", "\n  40 files ("):
        assert text in out, text
    assert out.splitlines()[0] == f"sample.nwb: {found.summary}"


def test_inspect_a_file_with_nothing_to_convert_says_so(capsys, tmp_path: Path) -> None:
    path = write_nwb(
        tmp_path / "spikes.nwb",
        [SeriesSpec(name="Spikes", kind="SpikeEventSeries", data=np.zeros((5, 2, 4), dtype=np.int16), rate=None,
                    timestamps=np.arange(5) / 10.0)],
    )  # fmt: skip
    code, out, err = run_cli(capsys, "inspect", str(path))
    assert code == 0, err
    assert out.splitlines()[0].startswith("spikes.nwb: nothing to convert: ")
    assert "/acquisition/Spikes: a SpikeEventSeries holds spike snippets" in out
    code, out, _ = run_cli(capsys, "inspect", "--json", str(path))
    found = Inspection.model_validate_json(out)
    assert (code, found.convertible, found.series, found.output.files) == (0, False, [], 0)
    assert [n.path for n in found.not_converted] == ["/acquisition/Spikes"]
    # convert still refuses it (exit 1), as before
    assert run_cli(capsys, "convert", str(path), "-o", str(tmp_path / "out"))[0] == 1


@pytest.mark.parametrize(("selected", "kept"), [((LFP,), (LFP,)), ((RAW,), (RAW,)), ((RAW, LFP), (RAW, LFP))])
def test_series_output_is_the_whole_conversions_files_of_those_channels(
    capsys, tmp_path: Path, whole: dict[str, bytes], selected: tuple[str, ...], kept: tuple[str, ...]
) -> None:
    options = [a for path in selected for a in ("--series", path.lstrip("/"))]  # leading / optional
    code, _, err = run_cli(capsys, "convert", str(sample_path()), "-o", str(tmp_path), "--workers", "1", *options)
    assert code == 0, err
    assert "not selected" not in err
    found = Inspection.model_validate_json(run_cli(capsys, "inspect", "--json", str(sample_path()), *options)[1])
    assert [s.path for s in found.series] == list(kept)
    channels = {f"channel-{c.index:05d}" for s in found.series for c in s.channels}
    expected = {n: b for n, b in whole.items() if n[: len("channel-00000")] in channels}
    assert files(tmp_path) == expected  # same names (whole-file indices), same bytes (same channel names)
    left_out = {n.path for n in found.not_converted if n.reason == "not selected (--series)"}
    assert left_out == {RAW, LFP} - set(kept)


def test_series_that_names_nothing_convertible_is_exit_2_naming_it(capsys, tmp_path: Path) -> None:
    for command in (["plan"], ["inspect"], ["convert", "-o", str(tmp_path / "o")]):
        code, _, err = run_cli(capsys, command[0], str(sample_path()), *command[1:], "--series", "/acquisition/Nope")
        assert code == 2
        last = err.strip().splitlines()[-1]
        assert last.startswith("error: sample.nwb: --series /acquisition/Nope names no series in the file"), last
        assert RAW in last and "Traceback" not in err
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())
    spikes = write_nwb(
        tmp_path / "mixed.nwb",
        [SeriesSpec(name="Raw"),
         SeriesSpec(name="Spikes", kind="SpikeEventSeries", data=np.zeros((5, 2, 4), dtype=np.int16), rate=None,
                    timestamps=np.arange(5) / 10.0)],
    )  # fmt: skip
    code, _, err = run_cli(capsys, "plan", str(spikes), "--series", "/acquisition/Spikes")
    assert code == 2
    assert "--series /acquisition/Spikes names no convertible series: a SpikeEventSeries" in err


def test_an_invalid_series_left_out_fails_nothing(capsys, tmp_path: Path) -> None:
    path = write_nwb(tmp_path / "half.nwb", [SeriesSpec(name="Bad", unit="furlongs"), SeriesSpec(name="Good")])
    assert run_cli(capsys, "plan", str(path))[0] == 1  # strict: the whole file fails
    code, out, err = run_cli(capsys, "plan", str(path), "--series", "/acquisition/Good")
    assert code == 0, err
    summary = json.loads(out)
    assert [s["path"] for s in summary["series"]] == ["/acquisition/Good"]
    # Bad is invalid, so the whole file's conversion (invalid series skipped) numbers Good from 0
    assert [c["index"] for c in summary["series"][0]["channels"]] == [0, 1]
    code, _, err = run_cli(capsys, "plan", str(path), "--series", "/acquisition/Bad")
    assert code == 1 and "furlongs" in err  # the selected series itself is invalid: a bad file, as before


def test_series_env_selects_for_run(capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "sample.nwb").write_bytes(sample_path().read_bytes())
    monkeypatch.setenv("INPUT_DIR", str(inputs))
    monkeypatch.setenv("OUTPUT_DIR", str(tmp_path / "out"))
    monkeypatch.setenv("WORKERS", "1")
    monkeypatch.setenv("SERIES", f" {LFP} ,")
    for name in ("ENVIRONMENT", "IMPORTER_ENABLED"):
        monkeypatch.delenv(name, raising=False)
    code, _, err = run_cli(capsys, "run")
    assert code == 0, err
    names = {p.name for p in (tmp_path / "out" / "sample").iterdir() if p.name.startswith("channel-")}
    assert names and all(8 <= int(n[len("channel-") : len("channel-") + 5]) <= 15 for n in names)


@pytest.mark.parametrize(
    ("filters", "named"),
    [({"compression": "gzip", "shuffle": True}, "gzip"), ("zstd", "zstd"), ("blosc", "blosc (zstd)")],
)
def test_inspect_names_every_compression(tmp_path: Path, capsys, filters: object, named: str) -> None:
    import hdf5plugin

    given = {"zstd": hdf5plugin.Zstd(), "blosc": hdf5plugin.Blosc(cname="zstd")}.get(str(filters), filters)
    spec = SeriesSpec(data=np.arange(4000, dtype=np.int16).reshape(2000, 2), hdf5_filters={**given, "chunks": (500, 2)})
    nwb = write_nwb(tmp_path / "c.nwb", [spec])
    code, out, err = run_cli(capsys, "inspect", str(nwb))
    assert code == 0, err
    assert f", chunks (500, 2), {named}, " in out and "unknown" not in out


@pytest.mark.parametrize(
    ("filters", "says"),
    [
        ({"compression": "gzip"}, ", checksum deflate's Adler-32;"),
        ({"fletcher32": True}, ", checksum Fletcher-32;"),
        ("zstd", ", no checksum (damage inside a chunk may go unseen);"),
        ("blosc", ", no checksum (damage inside a chunk may go unseen);"),
    ],
)
def test_inspect_says_what_checks_the_stored_data(tmp_path: Path, capsys, filters: object, says: str) -> None:
    """Damage inside a chunk of a filter without a checksum decodes to other values through any
    decoder (issue 17 item 1): inspect says which series are exposed to that."""
    import hdf5plugin

    given = {"zstd": hdf5plugin.Zstd(), "blosc": hdf5plugin.Blosc(cname="lz4")}.get(str(filters), filters)
    spec = SeriesSpec(data=np.arange(4000, dtype=np.int16).reshape(2000, 2), hdf5_filters={**given, "chunks": (500, 2)})
    nwb = write_nwb(tmp_path / "c.nwb", [spec])
    code, out, err = run_cli(capsys, "inspect", str(nwb))
    assert code == 0, err
    assert says in out, out


def test_inspect_shows_the_time_without_samples_as_the_gap(tmp_path: Path, capsys) -> None:
    """A 3 s step at 1 kHz leaves 2.999 s without samples: that is the gap, not the step."""
    t = np.concatenate([np.arange(1000) / 1000.0, 3.999 + np.arange(1000) / 1000.0])
    nwb = write_nwb(tmp_path / "g.nwb", [SeriesSpec(data=np.zeros((2000, 2), dtype=np.int16), timestamps=t, rate=None)])
    code, out, err = run_cli(capsys, "inspect", str(nwb))
    assert code == 0, err
    assert "gaps: 2.999 s without samples after sample 999" in out


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (59.96, "1 min 0.0 s"),
        (599.97, "10 min 0.0 s"),
        (3599.7, "1 h 0 min 0 s"),
        (7199.6, "2 h 0 min 0 s"),
        (2.5, "2.500 s"),
    ],
)
def test_durations_never_show_60_in_a_field(seconds: float, text: str) -> None:
    from nwb2pennsieve.local.inspect import _seconds

    assert _seconds(seconds) == text
