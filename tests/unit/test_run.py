"""`nwb2pennsieve run` (what `make run` does) and the environment settings."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from nwb2pennsieve.errors import ConfigurationError
from nwb2pennsieve.local.cli import main, sample_path
from nwb2pennsieve.settings import Settings


@pytest.mark.parametrize("default_input", ["absent", "empty"])
def test_run_converts_the_bundled_sample_when_the_default_input_is_empty(
    tmp_path: Path, monkeypatch, capsys, default_input: str
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("INPUT_DIR", raising=False)
    monkeypatch.setenv("OUTPUT_DIR", str(tmp_path / "out"))
    if default_input == "empty":
        (tmp_path / "data" / "input").mkdir(parents=True)
    assert main(["run"]) == 0
    out, err = capsys.readouterr()
    assert f"no .nwb file in data/input: converting the bundled sample sample.nwb into {tmp_path}/out/sample" in err
    assert "sample.nwb: 16 channels" in out
    assert out.strip().splitlines()[-1] == "1 converted"
    assert len(list((tmp_path / "out" / "sample").glob("*.metadata.json"))) == 16


@pytest.mark.parametrize(
    ("setup", "expected"),
    [("missing", "does not exist"), ("empty", "holds no .nwb file"), ("file", "is not a folder")],
)
def test_a_wrong_input_dir_is_an_error_not_the_sample(
    tmp_path: Path, monkeypatch, capsys, setup: str, expected: str
) -> None:
    given = tmp_path / "inptu"
    if setup == "empty":
        given.mkdir()
    elif setup == "file":
        given.write_text("")
    monkeypatch.setenv("INPUT_DIR", str(given))
    monkeypatch.setenv("OUTPUT_DIR", str(tmp_path / "out"))
    assert main(["run"]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [f"error: INPUT_DIR {given} {expected}"]
    assert not (tmp_path / "out").exists()


def test_run_takes_nwb_files_in_any_case_and_ends_with_a_tally(tmp_path: Path, monkeypatch, capsys) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(sample_path(), inputs / "UPPER.NWB")
    shutil.copy(sample_path(), inputs / "mixed.Nwb")
    (inputs / "broken.nwb").write_bytes(b"not hdf5")
    (inputs / "empty.nwb").write_bytes(b"")
    (inputs / "notes.txt").write_text("not an input")
    monkeypatch.setenv("INPUT_DIR", str(inputs))
    monkeypatch.setenv("OUTPUT_DIR", str(tmp_path / "out"))
    assert main(["run"]) == 1
    out, err = capsys.readouterr()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["UPPER", "mixed"]
    tally = err.strip().splitlines()[-3:]  # the counts, then one failure a line
    assert tally[0] == "2 converted, 2 failed:", tally
    assert tally[1].startswith("  broken.nwb: ") and tally[2].startswith("  empty.nwb: "), tally
    assert "notes.txt" not in out + err


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
