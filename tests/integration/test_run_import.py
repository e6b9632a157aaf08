"""`nwb2pennsieve run` (what `make run` does) with IMPORTER_ENABLED: convert, then import into the fake
Pennsieve; one recording, one target."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from nwb2pennsieve.local.cli import main, sample_path
from tests.fake_pennsieve.fixtures import *  # noqa: F403  (the pytest fixtures)
from tests.fake_pennsieve.fixtures import assert_imported


def _env(monkeypatch: pytest.MonkeyPatch, fake, tmp_path: Path, *, inputs=("sample",), **extra: str) -> None:
    for name in ("INTEGRATION_ID", "SESSION_TOKEN", "REFRESH_TOKEN", "PENNSIEVE_API_KEY", "PENNSIEVE_API_SECRET",
                 "PACKAGE_MAP", "LEGACY_IMPORT_FLOW", "ASSET_NAME"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "in").mkdir(exist_ok=True)
    for stem in inputs:
        shutil.copy(sample_path(), tmp_path / "in" / f"{stem}.nwb")
    monkeypatch.setenv("INPUT_DIR", str(tmp_path / "in"))
    monkeypatch.setenv("OUTPUT_DIR", str(tmp_path / "out"))
    monkeypatch.setenv("PENNSIEVE_API_HOST", fake.url)
    monkeypatch.setenv("PENNSIEVE_API_HOST2", fake.url)
    monkeypatch.setenv("IMPORTER_ENABLED", "true")
    for k, v in extra.items():
        monkeypatch.setenv(k, v)


def _written(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in out.glob("channel-*.bin.gz")}


def _mapping(out: Path) -> dict[int, str]:
    return {int(k): v for k, v in json.loads((out / "import-asset.json").read_text())["channels"].items()}


def test_run_converts_then_imports_into_a_viewer_asset_and_a_rerun_is_a_no_op(
    fake, gate, api_key, tmp_path, monkeypatch, capsys
):
    dataset = fake.add_dataset()
    package = fake.add_package(dataset)
    run = fake.add_run(dataset, [package])
    _env(monkeypatch, fake, tmp_path, INTEGRATION_ID=run, PENNSIEVE_API_KEY=api_key.key,
         PENNSIEVE_API_SECRET=api_key.secret)  # fmt: skip

    assert main(["run"]) == 0
    assert "imported 24 files of 16 channels" in capsys.readouterr().out
    out = tmp_path / "out" / "sample"
    asset = assert_imported(fake, gate, package, _written(out), _mapping(out))
    assert fake.assets[asset]["package_ids"] == [package]  # linked to (and looked up by) the run's packages
    assert not fake.imports  # no import manifest

    assert main(["run"]) == 0  # the rerun converts again, then finds the asset finished
    assert f"viewer asset {asset} is finished" in capsys.readouterr().out
    assert len(fake.assets) == 1 and len(fake.channels[package]) == 16
    assert gate.stats()["stored"] == 24


def test_the_legacy_flow_imports_through_the_manifest_and_a_rerun_duplicates_nothing(
    fake, api_key, tmp_path, monkeypatch, capsys
):
    dataset = fake.add_dataset()
    package = fake.add_package(dataset)
    run = fake.add_run(dataset, [package])
    _env(monkeypatch, fake, tmp_path, INTEGRATION_ID=run, PENNSIEVE_API_KEY=api_key.key,
         PENNSIEVE_API_SECRET=api_key.secret, LEGACY_IMPORT_FLOW="true")  # fmt: skip
    assert main(["run"]) == 0
    assert "imported 24 files of 16 channels" in capsys.readouterr().out
    (imp,) = fake.imports.values()
    uploaded = fake.uploaded_files(imp.id)
    assert len(uploaded) == 24
    assert len(fake.channels[package]) == 16
    assert not fake.assets
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


@pytest.mark.parametrize("legacy", ["false", "true"])
def test_several_recordings_and_one_target_are_refused_before_converting(
    fake, api_key, tmp_path, monkeypatch, capsys, legacy
):
    dataset = fake.add_dataset()
    run = fake.add_run(dataset, [fake.add_package(dataset)])
    _env(monkeypatch, fake, tmp_path, inputs=("a", "b"), INTEGRATION_ID=run, PENNSIEVE_API_KEY=api_key.key,
         PENNSIEVE_API_SECRET=api_key.secret, LEGACY_IMPORT_FLOW=legacy)  # fmt: skip

    assert main(["run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: 2 input files but no import target (INTEGRATION_ID names one)")
    assert "PACKAGE_MAP" in err[0] and "--target STEM=PACKAGE for a, b" in err[0]
    assert not (tmp_path / "out").exists()  # nothing converted
    assert not fake.requests  # nor asked of Pennsieve


def test_each_recording_into_its_own_package_with_a_package_map_or_an_option(
    fake, gate, api_key, tmp_path, monkeypatch, capsys
):
    dataset = fake.add_dataset()
    pa, pb = fake.add_package(dataset, "a.nwb"), fake.add_package(dataset, "b.nwb")
    mapping = tmp_path / "targets.json"
    mapping.write_text(json.dumps({"a": pa, "b": "N:package:not-this-one"}))
    _env(monkeypatch, fake, tmp_path, inputs=("a", "b"), PACKAGE_MAP=str(mapping), PENNSIEVE_API_KEY=api_key.key,
         PENNSIEVE_API_SECRET=api_key.secret)  # fmt: skip

    assert main(["run", "--target", f"b={pb}"]) == 0  # the option wins over the map

    assert capsys.readouterr().out.count("imported 24 files of 16 channels") == 2
    for stem, package in (("a", pa), ("b", pb)):
        out = tmp_path / "out" / stem
        asset = assert_imported(fake, gate, package, _written(out), _mapping(out))
        assert fake.assets[asset]["package_ids"] == [package]
        assert fake.assets[asset]["properties"]["source"] == stem


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "is not a readable JSON file"),
        ('{"a": "N:package:1", "a": "N:package:2"}', "names 'a' twice"),
        ('{"a": 5}', "'a' must map to a package id"),
        ('{"a": {"dataset_id": "N:dataset:1"}}', "'a' must map to a package id"),
        ('{"a": "N:package:1", "b": "N:package:1"}', "'a' and 'b' are given one package"),
    ],
)
def test_a_bad_package_map_is_one_line_before_converting(
    fake, api_key, tmp_path, monkeypatch, capsys, content, message
):
    mapping = tmp_path / "targets.json"
    mapping.write_text(content)
    _env(monkeypatch, fake, tmp_path, inputs=("a", "b"), PACKAGE_MAP=str(mapping), SESSION_TOKEN="t")
    assert main(["run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "out").exists()


def test_a_recording_into_a_package_that_holds_another_recordings_asset_is_refused(
    fake, gate, api_key, tmp_path, monkeypatch, capsys
):
    dataset = fake.add_dataset()
    package = fake.add_package(dataset)
    _env(monkeypatch, fake, tmp_path, inputs=("a",), PENNSIEVE_API_KEY=api_key.key,
         PENNSIEVE_API_SECRET=api_key.secret)  # fmt: skip
    assert main(["run", "--target", f"a={package}"]) == 0
    (tmp_path / "in" / "a.nwb").rename(tmp_path / "in" / "b.nwb")
    capsys.readouterr()

    assert main(["run", "--target", f"b={package}"]) == 1  # a second recording into the same package

    err = capsys.readouterr().err.strip().splitlines()
    assert "of another recording, 'a': one recording, one package" in err[0]
    assert len(fake.assets) == 1 and len(fake.channels[package]) == 16  # nothing created, nothing deleted
