"""`nwb2pennsieve run` (what `make run` does) and the environment settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from nwb2pennsieve.cli import main
from nwb2pennsieve.config import Settings
from nwb2pennsieve.errors import ConfigurationError


def test_run_converts_the_bundled_sample_when_input_is_empty(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("INPUT_DIR", str(tmp_path / "in"))
    monkeypatch.setenv("OUTPUT_DIR", str(tmp_path / "out"))
    assert main(["run"]) == 0
    out, err = capsys.readouterr()
    assert "bundled sample" in err
    assert "sample.nwb: 16 channels" in out
    assert len(list((tmp_path / "out" / "sample").glob("*.metadata.json"))) == 16


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
