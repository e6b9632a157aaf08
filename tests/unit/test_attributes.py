"""An attribute that cannot be read is not an absent attribute (issue 17 item 2).

h5py's ``attrs.get(name, default)`` returns the default when the attribute's message is damaged,
and ``name in attrs`` is false: a damaged ``neurodata_type`` dropped a whole series (6 channels
of 7, exit 0, no word) and a damaged ``conversion`` was read as 1.0. The damage here is placed on
the attribute found by name in a file written at test time (tests/corruption.py).
"""

from __future__ import annotations

import ast
from pathlib import Path

import h5py
import numpy as np
import pytest

import nwb2pennsieve
from nwb2pennsieve.errors import InvalidFileError, InvalidSeriesError
from nwb2pennsieve.local import convert_file
from nwb2pennsieve.local.inspect import inspect_file
from nwb2pennsieve.options import ConversionOptions
from nwb2pennsieve.source.nwb import read_attr
from tests.corruption import damage_attribute
from tests.factory import SeriesSpec, write_nwb

ES1 = "/acquisition/ES1"
DATA = "/acquisition/ElectricalSeries/data"


@pytest.fixture
def nwb(tmp_path: Path) -> Path:
    rng = np.random.default_rng(2)
    return write_nwb(
        tmp_path / "rec.nwb",
        [
            SeriesSpec(data=rng.integers(-3000, 3000, (2000, 6)).astype(np.int16), conversion=0.195e-6),
            SeriesSpec(name="ES1", data=rng.integers(-3000, 3000, (2000, 1)).astype(np.int16), electrodes=[6]),
        ],
    )


@pytest.mark.parametrize("how", ["header", "name"])
def test_a_damaged_neurodata_type_fails_naming_the_series(nwb: Path, tmp_path: Path, how: str) -> None:
    damage_attribute(nwb, ES1, "neurodata_type", how)
    with pytest.raises(InvalidFileError) as caught:
        convert_file(nwb, tmp_path / "out", ConversionOptions(), workers=1)
    line = str(caught.value)
    assert line.startswith(f"rec.nwb: series {ES1}: cannot be read, so it may be a series that would be lost"), line
    assert "neurodata_type" in line
    assert not (tmp_path / "out").exists()
    with pytest.raises(InvalidFileError, match=ES1):
        inspect_file(nwb, ConversionOptions())
    # Skipping invalid series converts the six others and names the one skipped.
    options = ConversionOptions(skip_invalid_series=True)
    convert_file(nwb, tmp_path / "skip", options, workers=1)
    assert len(list((tmp_path / "skip").glob("channel-*.metadata.json"))) == 6
    found = inspect_file(nwb, options)
    assert [n.path for n in found.not_converted] == [ES1]
    assert any(ES1 in w for w in found.warnings)


@pytest.mark.parametrize("attribute", ["conversion", "unit", "offset"])
def test_a_damaged_data_attribute_fails_naming_it(nwb: Path, tmp_path: Path, attribute: str) -> None:
    damage_attribute(nwb, DATA, attribute, "header")
    with pytest.raises(InvalidFileError) as caught:
        convert_file(nwb, tmp_path / "out", ConversionOptions(), workers=1)
    line = str(caught.value)
    assert line.startswith(
        f"rec.nwb: series /acquisition/ElectricalSeries: its data's {attribute} attribute cannot be read ("
    ), line
    assert "the file is damaged or truncated" in line
    assert "synchronously" not in line and "Unable to" not in line


def test_read_attr_tells_absent_from_unreadable(nwb: Path) -> None:
    with h5py.File(nwb) as f:
        assert read_attr(f[DATA], "no_such_attribute") is None
        assert read_attr(f[DATA], "conversion") == pytest.approx(0.195e-6)
    damage_attribute(nwb, DATA, "conversion", "header")
    with h5py.File(nwb) as f:
        assert f[DATA].attrs.get("conversion", 1.0) == 1.0  # what h5py says: the reason for read_attr
        with pytest.raises(InvalidSeriesError, match="its conversion attribute cannot be read"):
            read_attr(f[DATA], "conversion")


def test_the_core_reads_attributes_only_through_read_attr() -> None:
    """``attrs.get`` and ``name in x.attrs`` take an unreadable attribute for an absent one."""
    package = Path(nwb2pennsieve.__file__).parent
    found = []
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "attrs":
                found.append(f"{path.relative_to(package)}:{node.lineno}")
    assert sorted(found) == ["source/nwb.py:" + str(_attrs_line(package / "source" / "nwb.py"))], found


def _attrs_line(path: Path) -> int:
    """The one line of the package that touches ``.attrs``: inside read_attr."""
    lines = [i for i, text in enumerate(path.read_text().splitlines(), 1) if ".attrs" in text and "``" not in text]
    assert len(lines) == 1, lines
    return lines[0]
