"""``inspect`` with the TS-Zarr bundle: every channel of every kind, as the conversion writes it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nwb2pennsieve.local.cli import main
from nwb2pennsieve.local.inspect import inspect_file
from nwb2pennsieve.options import ConversionOptions
from tests.events_factory import Everything, write_everything


@pytest.fixture(scope="module")
def nwb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 50 s: the 100 Hz LFP has a level group, so its NaN sample means valid counts
    return write_everything(tmp_path_factory.mktemp("inspect") / "rec.nwb", Everything(seconds=50.0))


def test_inspect_lists_the_channels_convert_writes(
    nwb: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    found = inspect_file(nwb, ConversionOptions(formats="chunks,bundle"))
    assert found.output.bundle is not None and found.output.bundle.tszarr is not None
    info = found.output.bundle.tszarr
    assert info.onset == "2023-05-06T07:08:08.623456Z" and info.onset_from == "/intervals/sleep_stages"
    kinds = [(c.kind, c.source) for c in info.channels]
    assert kinds[:2] == [("continuous", "/acquisition/ElectricalSeries"), ("continuous", "/processing/ecephys/LFP/lfp")]
    assert (
        ("event", "/intervals/trials") in kinds
        and ("event", "/units") in kinds
        and ("event", "/acquisition/notes") in kinds
    )
    lfp = info.channels[1].what
    assert "valid if a sample is not finite" in lfp  # float data: counts only if a sample is not finite
    temp = next(c for c in info.channels if c.source == "/acquisition/Temp")
    assert "1 gap as NaN" in temp.what and "degC" in temp.what
    assert any("in the viewer bundle only: /acquisition/SpO2" in n for n in found.notes)
    assert main(["convert", str(nwb), "--output", str(tmp_path / "out"), "--formats", "bundle", "--workers", "1"]) == 0
    root = json.loads((tmp_path / "out" / "rec.zarr" / "zarr.json").read_text())["consolidated_metadata"]["metadata"]
    for c in info.channels:
        for group, ident in zip(c.groups, c.ids, strict=True):
            assert root[str(group)]["attributes"]["id"] == ident
    assert main(["inspect", str(nwb), "--formats", "chunks,bundle"]) == 0
    text = capsys.readouterr().out
    assert "bundle channels:" in text and "intervals.trials <- /intervals/trials: 4 annotations" in text
    assert "note: rec.nwb: in the viewer bundle only: /units: spike events (event channel units)" in text


def test_without_the_ts_zarr_bundle_the_tables_are_notes_not_silence(nwb: Path) -> None:
    found = inspect_file(nwb, ConversionOptions(formats="chunks"))
    reasons = {n.path: n.reason for n in found.not_converted}
    assert "TS-Zarr viewer bundle only" in reasons["/intervals/trials"]
    assert "viewer bundle only" in reasons["/units"]
