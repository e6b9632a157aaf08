"""``nwb2pennsieve inspect`` predicts what ``convert`` with the same settings writes.

- ``OUTPUT_FORMATS`` / ``--formats``: with ``bundle`` alone no chunk file (nor channel metadata)
  is predicted; with the bundle its level arrays are counted and sized (float32, before Zstd),
  checked against an independent computation from the data's shape and against the arrays the
  conversion writes (their ``zarr.json``), unit channels included.
- ``GZIP_LEVEL``: at 0 the predicted bytes are exactly the chunk files and channel metadata on
  disk (also the chunk part of ``chunks,bundle``); at 1-3 they are an upper bound, said so.
- The settings reach ``inspect`` from the flags and from the environment alike.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from nwb2pennsieve.local.inspect import Inspection
from nwb2pennsieve.output.publish import MARKER_NAME
from nwb2pennsieve.settings import COMPRESSED_GZIP_LEVEL
from tests.cli_checks import run_cli
from tests.factory import SeriesSpec, write_nwb

N_SAMPLES = 20_000  # at 1 kHz: levels 0-2 (20000 // 4**2 = 1250 >= 1024 whole bins; // 4**3 = 312 is not)
N_CHANNELS = 3
N_UNITS = 257  # one more than a unit channel holds: two unit channels


@pytest.fixture(scope="module")
def nwb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(7)
    data = rng.integers(-2000, 2000, size=(N_SAMPLES, N_CHANNELS), dtype=np.int16)
    units = [np.sort(rng.uniform(0, N_SAMPLES / 1000, size=3)) for _ in range(N_UNITS)]
    return write_nwb(
        tmp_path_factory.mktemp("in") / "rec.nwb", [SeriesSpec(name="Raw", data=data, rate=1000.0)], units=units
    )


def expected_levels(n: int) -> list[tuple[int, ...]]:
    """The level shapes of a channel of n samples, by the format's rule (docs/bundle.md): level k
    is kept while n // 4**k >= 1024 (at most 8 levels); level 0 (n,), level k (ceil(n / 4**k), 2)."""
    shapes: list[tuple[int, ...]] = [(n,)]
    k = 1
    while k < 8 and n // 4**k >= 1024:
        shapes.append((math.ceil(n / 4**k), 2))
        k += 1
    return shapes


def inspect_json(capsys: pytest.CaptureFixture[str], nwb: Path, *options: str) -> Inspection:
    code, out, err = run_cli(capsys, "inspect", "--json", str(nwb), *options)
    assert code == 0, err
    return Inspection.model_validate_json(out)


def convert(capsys: pytest.CaptureFixture[str], nwb: Path, out: Path, *options: str) -> Path:
    code, _, err = run_cli(capsys, "convert", str(nwb), "-o", str(out), "--workers", "1", *options)
    assert code == 0, err
    return out


def chunk_output_bytes(folder: Path) -> tuple[int, int, int]:
    """(chunk files, channel metadata files, their bytes) on disk."""
    chunk = [p for p in folder.iterdir() if p.name.endswith(".bin.gz")]
    meta = [p for p in folder.iterdir() if p.name.endswith(".metadata.json")]
    return len(chunk), len(meta), sum(p.stat().st_size for p in chunk + meta)


def written_bundle(folder: Path) -> tuple[list[list[int]], int]:
    """(shapes of the continuous channels' level arrays, unit channel count) as the bundle's zarr.json say."""
    shapes, units = [], 0
    for group in (folder / "rec.zarr").iterdir():
        if not group.is_dir():
            continue
        kind = json.loads((group / "zarr.json").read_text())["attributes"]["kind"]
        if kind == "unit":
            units += 1
            continue
        assert kind == "continuous"
        for array in group.iterdir():
            if array.is_dir():
                meta = json.loads((array / "zarr.json").read_text())
                assert meta["data_type"] == "float32"
                shapes.append(meta["shape"])
    return shapes, units


def test_bundle_only_predicts_no_chunk_files_and_the_bundles_arrays(capsys, nwb: Path, tmp_path: Path) -> None:
    found = inspect_json(capsys, nwb, "--formats", "bundle", "--bundle-layout", "legacy")
    o = found.output
    assert (o.formats, o.files, o.chunk_files, o.metadata_files, o.bytes) == ("bundle", 0, 0, 0, 0)
    assert [(s.chunk_files, s.output_bytes) for s in found.series] == [(0, 0)]
    levels = expected_levels(N_SAMPLES)
    assert len(levels) == 3  # the fixture's length has a pyramid, not a single level
    assert o.bundle is not None
    assert o.bundle.name == "rec.zarr"
    assert o.bundle.continuous_channels == N_CHANNELS
    assert o.bundle.level_arrays == N_CHANNELS * len(levels)
    assert o.bundle.float32_bytes == N_CHANNELS * 4 * sum(math.prod(shape) for shape in levels)
    assert o.bundle.unit_channels == 2
    assert found.series[0].bundle_levels == [list(shape) for shape in levels]

    out = convert(capsys, nwb, tmp_path / "out", "--formats", "bundle", "--bundle-layout", "legacy")
    assert chunk_output_bytes(out) == (0, 0, 0)
    shapes, units = written_bundle(out)
    assert sorted(shapes) == sorted([list(shape) for shape in levels] * N_CHANNELS)
    assert units == o.bundle.unit_channels
    assert sum(math.prod(s) for s in shapes) * 4 == o.bundle.float32_bytes


def test_chunks_only_says_nothing_of_a_bundle(capsys, nwb: Path) -> None:
    found = inspect_json(capsys, nwb, "--formats", "chunks")
    assert found.output.bundle is None and found.series[0].bundle_levels == []
    assert found.output.chunk_files > 0


@pytest.mark.parametrize("formats", ["chunks", "chunks,bundle"])
def test_at_gzip_level_0_the_chunk_bytes_are_what_convert_writes(
    capsys, nwb: Path, tmp_path: Path, formats: str
) -> None:
    found = inspect_json(capsys, nwb, "--formats", formats, "--gzip-level", "0")
    o = found.output
    assert o.bytes_exact and o.gzip_level == 0
    out = convert(capsys, nwb, tmp_path / "out", "--formats", formats, "--gzip-level", "0")
    assert chunk_output_bytes(out) == (o.chunk_files, o.metadata_files, o.bytes)
    assert o.files == o.chunk_files + o.metadata_files
    assert (o.bundle is not None) == ("bundle" in formats) == (out / "rec.zarr").is_dir()
    expected = {"chunks", "rec.zarr", "asset-properties.json"} if "bundle" in formats else {"chunks"}
    names = {p.name for p in out.iterdir() if p.name != MARKER_NAME}
    assert {"chunks" if n.startswith("channel-") else n for n in names} == expected


def test_above_gzip_level_0_the_chunk_bytes_are_an_upper_bound(capsys, nwb: Path, tmp_path: Path) -> None:
    found = inspect_json(capsys, nwb, "--gzip-level", "1")
    o = found.output
    assert (o.gzip_level, o.bytes_exact) == (1, False)
    assert o.bytes == inspect_json(capsys, nwb, "--gzip-level", "0").output.bytes  # the stored size
    out = convert(capsys, nwb, tmp_path / "out", "--gzip-level", "1")
    files, metadata, nbytes = chunk_output_bytes(out)
    assert (files, metadata) == (o.chunk_files, o.metadata_files)
    assert nbytes < o.bytes
    code, text, _ = run_cli(capsys, "inspect", str(nwb), "--gzip-level", "1")
    assert code == 0
    assert "at most " in text.splitlines()[0]
    assert "GZIP_LEVEL 1 compresses them" in text


def test_output_settings_reach_inspect_from_the_environment(capsys, nwb: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ENVIRONMENT", "IMPORTER_ENABLED", "GZIP_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OUTPUT_FORMATS", "bundle")
    found = inspect_json(capsys, nwb)
    assert found.output.formats == "bundle" and found.output.chunk_files == 0 and found.output.bundle is not None
    code, text, err = run_cli(capsys, "inspect", str(nwb))
    assert code == 0, err
    assert "chunk files" not in text
    assert "TS-Zarr viewer bundle rec.zarr: 3 channels + 1 event channel;" in text
    monkeypatch.setenv("BUNDLE_LAYOUT", "legacy")
    code, text, err = run_cli(capsys, "inspect", str(nwb))
    assert "viewer bundle rec.zarr: 3 channels + 2 unit channels, 9 level arrays" in text
    # Importing compresses by default: inspect predicts that convert's GZIP_LEVEL, as convert would use it.
    monkeypatch.setenv("OUTPUT_FORMATS", "chunks")
    monkeypatch.setenv("IMPORTER_ENABLED", "true")
    assert inspect_json(capsys, nwb).output.gzip_level == COMPRESSED_GZIP_LEVEL > 0
    monkeypatch.setenv("GZIP_LEVEL", "0")
    assert inspect_json(capsys, nwb).output.bytes_exact
