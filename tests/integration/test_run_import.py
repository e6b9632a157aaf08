"""`nwb2pennsieve run` (what `make run` does) with IMPORTER_ENABLED: convert, then import into the fake Pennsieve."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest

from nwb2pennsieve.local.cli import main, sample_path
from tests.fake_pennsieve.fixtures import *  # noqa: F403  (the pytest fixtures)


def _env(monkeypatch: pytest.MonkeyPatch, fake, tmp_path: Path, **extra: str) -> None:
    for name in ("INTEGRATION_ID", "SESSION_TOKEN", "REFRESH_TOKEN", "PENNSIEVE_API_KEY", "PENNSIEVE_API_SECRET"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "in").mkdir(exist_ok=True)
    shutil.copy(sample_path(), tmp_path / "in" / "sample.nwb")
    monkeypatch.setenv("INPUT_DIR", str(tmp_path / "in"))
    monkeypatch.setenv("OUTPUT_DIR", str(tmp_path / "out"))
    monkeypatch.setenv("PENNSIEVE_API_HOST", fake.url)
    monkeypatch.setenv("PENNSIEVE_API_HOST2", fake.url)
    monkeypatch.setenv("IMPORTER_ENABLED", "true")
    for k, v in extra.items():
        monkeypatch.setenv(k, v)


def test_run_converts_then_imports_and_a_rerun_duplicates_nothing(fake, api_key, tmp_path, monkeypatch, capsys):
    dataset = fake.add_dataset()
    package = fake.add_package(dataset)
    run = fake.add_run(dataset, [package])
    _env(
        monkeypatch,
        fake,
        tmp_path,
        INTEGRATION_ID=run,
        PENNSIEVE_API_KEY=api_key.key,
        PENNSIEVE_API_SECRET=api_key.secret,
    )
    assert main(["run"]) == 0
    assert "imported 24 files of 16 channels" in capsys.readouterr().out
    (imp,) = fake.imports.values()
    uploaded = fake.uploaded_files(imp.id)
    assert len(uploaded) == 24
    assert len(fake.channels[package]) == 16
    # what Pennsieve received is what the converter wrote, under the channel's node id
    out = tmp_path / "out" / "sample"
    by_name = {c["name"]: c["id"] for c in fake.channels[package]}
    local = sorted(p.name for p in out.glob("channel-*.bin.gz"))
    assert gzip.decompress(uploaded[f"{by_name['CH1']}_{local[0].split('_', 1)[1]}"]) == gzip.decompress(
        (out / local[0]).read_bytes()
    )

    assert main(["run"]) == 0  # the rerun: same channels, no new import, nothing uploaded twice
    assert len(fake.channels[package]) == 16
    assert len(fake.imports) == 1
    assert len(fake.uploaded_files(imp.id)) == 24


def test_run_with_importer_and_no_target_fails_before_converting(fake, api_key, tmp_path, monkeypatch, capsys):
    _env(monkeypatch, fake, tmp_path, PENNSIEVE_API_KEY=api_key.key, PENNSIEVE_API_SECRET=api_key.secret)
    assert main(["run"]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: ") and "target" in last.lower()
    assert not (tmp_path / "out").exists()
