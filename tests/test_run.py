"""`nwb2pennsieve run` (what `make run` does) and the environment settings."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from nwb2pennsieve.cli import main
from nwb2pennsieve.config import Settings
from nwb2pennsieve.errors import ConfigurationError

from .expected import assert_matches
from .factory import SeriesSpec, write_nwb


def test_run_converts_the_bundled_sample_when_input_is_empty(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("INPUT_DIR", str(tmp_path / "in"))
    monkeypatch.setenv("OUTPUT_DIR", str(tmp_path / "out"))
    assert main(["run"]) == 0
    out, err = capsys.readouterr()
    assert "bundled sample" in err
    assert "sample.nwb: 16 channels" in out
    assert len(list((tmp_path / "out" / "sample").glob("*.metadata.json"))) == 16


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
    assert main(["run"]) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("error: units.nwb: no ElectricalSeries to convert")
    assert_matches(inputs / "good.nwb", tmp_path / "out" / "good")
    assert_matches(inputs / "chunky.nwb", tmp_path / "out" / "chunky")
    assert len(list((tmp_path / "out" / "chunky").glob("channel-00000_*.bin.gz"))) == 3  # 1311 samples a chunk
    assert not (tmp_path / "out" / "units").exists() or not any((tmp_path / "out" / "units").iterdir())


def test_settings_defaults_follow_the_reference() -> None:
    local = Settings.from_env({})
    assert (local.environment, local.importer_enabled, local.chunk_size_mb) == ("local", False, 1.0)
    assert local.input_dir == Path("data/input") and local.output_dir == Path("data/output")
    prod = Settings.from_env({"ENVIRONMENT": "production", "CHUNK_SIZE_MB": "2"})
    assert prod.importer_enabled is True and prod.chunk_size_mb == 2.0
    assert Settings.from_env({"ENVIRONMENT": "production", "IMPORTER_ENABLED": "false"}).importer_enabled is False


@pytest.mark.parametrize(
    ("key", "value"), [("CHUNK_SIZE_MB", "big"), ("CHUNK_SIZE_MB", "0"), ("IMPORTER_ENABLED", "maybe")]
)
def test_bad_settings_are_one_line_errors(key: str, value: str) -> None:
    with pytest.raises(ConfigurationError, match=key):
        Settings.from_env({key: value})


def test_bad_environment_setting_exits_2(monkeypatch, capsys, tmp_path: Path) -> None:
    monkeypatch.setenv("INPUT_DIR", str(tmp_path))
    monkeypatch.setenv("CHUNK_SIZE_MB", "lots")
    assert main(["run"]) == 2
    assert (
        capsys.readouterr().err.strip().splitlines()[-1]
        == "error: CHUNK_SIZE_MB (--chunk-size-mb) must be a number, not 'lots'"
    )
