"""`nwb2pennsieve run` (what `make run` does) over shared-corpus files, one of them not convertible."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from nwb2pennsieve.local.cli import main
from tests.expected import assert_matches
from tests.factory import SeriesSpec, write_nwb


def test_run_converts_every_input_and_reports_failures(tmp_path: Path, monkeypatch, capsys, corpus: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(corpus / "metricproof-nwb__synthetic_ecephys_session.nwb", inputs / "good.nwb")
    write_nwb(inputs / "chunky.nwb", [SeriesSpec(data=np.random.default_rng(0).normal(size=(3000, 3)))])
    shutil.copy(
        corpus / "dandi-000009__sub_anm00239123_ses_20170627T093549_ecephys_and_ogen.nwb",
        inputs / "units.nwb",
    )
    monkeypatch.setenv("INPUT_DIR", str(inputs))
    monkeypatch.setenv("OUTPUT_DIR", str(tmp_path / "out"))
    monkeypatch.setenv("CHUNK_SIZE_MB", "0.01")
    assert main(["run"]) == 0  # a file with nothing to convert is skipped with a note, not a failure
    out, err = capsys.readouterr()
    assert "note: units.nwb: skipped: no ElectricalSeries to convert" in err
    assert "error:" not in err
    assert out.strip().splitlines()[-1] == "2 converted, 1 skipped (nothing to convert)"
    assert_matches(inputs / "good.nwb", tmp_path / "out" / "good")
    assert_matches(inputs / "chunky.nwb", tmp_path / "out" / "chunky")
    assert len(list((tmp_path / "out" / "chunky").glob("channel-00000_*.bin.gz"))) == 3  # 1310 samples a chunk
    assert not (tmp_path / "out" / "units").exists() or not any((tmp_path / "out" / "units").iterdir())
