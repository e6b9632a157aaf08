"""Bad input from the shared corpus: one clear line naming the file and the problem, no chunk written."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from nwb2pennsieve.errors import InvalidInputError, NothingToConvertError
from nwb2pennsieve.local import plan_file
from nwb2pennsieve.options import ConversionOptions
from tests.cli_checks import assert_fails_cleanly


def test_truncated_file(tmp_path: Path, capsys, corpus: Path) -> None:
    whole = (corpus / "metricproof-nwb__synthetic_ecephys_session.nwb").read_bytes()
    bad = tmp_path / "cut.nwb"
    bad.write_bytes(whole[: len(whole) // 2])
    assert_fails_cleanly(capsys, bad, tmp_path / "out", "truncated")


def test_not_nwb(tmp_path: Path, capsys, corpus: Path) -> None:
    bad = tmp_path / "foo.h5"
    shutil.copy(corpus / "hdmf-backcompat__1.0.5.h5", bad)
    assert_fails_cleanly(capsys, bad, tmp_path / "out", "not an NWB file")
    with pytest.raises(InvalidInputError):
        plan_file(bad, ConversionOptions())


@pytest.mark.parametrize(
    ("name", "holds"),
    [
        ("dandi-000009__sub_anm00239123_ses_20170627T093549_ecephys_and_ogen.nwb", "Units"),
        ("pynapple-phy__A8604-211122.nwb", "ElectrodeGroup"),
        ("pynwb-backcompat__1.0.2_nwbfile.nwb", "no neurodata objects"),
    ],
)
def test_nothing_to_convert_says_what_the_file_holds(corpus: Path, tmp_path: Path, capsys, name, holds) -> None:
    with pytest.raises(NothingToConvertError):
        plan_file(corpus / name, ConversionOptions())
    assert_fails_cleanly(capsys, corpus / name, tmp_path / "out", "no ElectricalSeries to convert", holds)
