"""Both slab readers keep the :class:`~nwb2pennsieve.source.slabs.SlabReader` contract.

The h5py reader (local files, and the cloud's fallback) and the direct S3 chunk reader must be
interchangeable for the writer: the same column groups covering the item, ``select`` narrowing
the reads to the chosen columns, refusing columns outside the item, and closing on ``with``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from nwb2pennsieve.options import ConversionOptions
from nwb2pennsieve.output.storage import LocalStore
from nwb2pennsieve.plan.models import SeriesPlan
from nwb2pennsieve.plan.survey import build_plan
from nwb2pennsieve.source.direct import DirectChunkReader, slab_reader
from nwb2pennsieve.source.nwb import open_nwb
from nwb2pennsieve.source.s3 import S3RangeReader
from nwb2pennsieve.source.slabs import H5SlabReader, SlabReader
from nwb2pennsieve.write.chunks import write_work_item
from tests.cloud_fixtures import INPUT_BUCKET

Opener = Callable[[h5py.File, SeriesPlan, int, int], SlabReader]


@contextmanager
def opened(s3: Any, path: Path) -> Iterator[tuple[h5py.File, S3RangeReader, np.ndarray, SeriesPlan]]:
    """The file over S3 ranges, its first series' plan and its data as h5py reads it locally."""
    s3.put_object(Bucket=INPUT_BUCKET, Key="x.nwb", Body=path.read_bytes())
    source = S3RangeReader(s3, INPUT_BUCKET, "x.nwb")
    with open_nwb(source, name="x") as h5, h5py.File(path) as local:
        series = build_plan(h5, source="x", options=ConversionOptions(chunk_size_mb=0.03)).series[0]
        yield h5, source, local[series.data_path][()], series


def readers(source: S3RangeReader) -> dict[str, Opener]:
    return {
        "h5py": lambda h5, series, c0, c1: H5SlabReader(h5, series, c0, c1),
        "s3-chunks": lambda h5, series, c0, c1: DirectChunkReader(h5, series, c0, c1, source),
    }


@pytest.mark.parametrize("kind", ["h5py", "s3-chunks"])
@pytest.mark.parametrize("fixture", ["example_nwb", "contiguous_nwb"])
def test_select_narrows_reads_to_the_chosen_columns(
    s3: Any, kind: str, fixture: str, request: pytest.FixtureRequest
) -> None:
    path: Path = request.getfixturevalue(fixture)
    with opened(s3, path) as (h5, source, expected, series):
        c0, c1 = 1, series.n_columns  # an item not aligned to the HDF5 chunk columns
        with readers(source)[kind](h5, series, c0, c1) as reader:
            assert isinstance(reader, SlabReader)
            groups = reader.column_groups
            assert groups[0][0] == c0 and groups[-1][1] == c1
            assert all(a[1] == b[0] for a, b in itertools.pairwise(groups))
            assert reader.columns == (c0, c1)
            for g0, g1 in [*groups, (c1 - 2, c1 - 1)]:
                reader.select(g0, g1)
                assert reader.columns == (g0, g1)
                out = np.empty((5000 - 1000, g1 - g0), dtype=expected.dtype)
                reader.read(1000, 5000, out)
                np.testing.assert_array_equal(out, expected[1000:5000, g0:g1])


@pytest.mark.parametrize("kind", ["h5py", "s3-chunks"])
def test_select_refuses_columns_outside_the_item(s3: Any, kind: str, example_nwb: Path) -> None:
    with opened(s3, example_nwb) as (h5, source, _, series), readers(source)[kind](h5, series, 2, 6) as reader:
        for bad in [(0, 3), (5, 7), (4, 4), (5, 3)]:
            with pytest.raises(ValueError, match="not inside the item's"):
                reader.select(*bad)
        assert reader.columns == (2, 6)


def test_h5py_reader_closes_its_dataset_on_exit(s3: Any, example_nwb: Path) -> None:
    with opened(s3, example_nwb) as (h5, _, _, series):
        with H5SlabReader(h5, series, 0, series.n_columns) as reader:
            assert reader.dataset.id.valid
        assert not reader.dataset.id.valid
        reader.close()  # a second close is harmless
        assert h5[series.data_path].shape == tuple(series.shape)  # the file itself stays open


def test_s3_chunk_reader_stops_fetching_on_exit(s3: Any, example_nwb: Path) -> None:
    with opened(s3, example_nwb) as (h5, source, expected, series):
        out = np.empty((100, series.n_columns), dtype=expected.dtype)
        with DirectChunkReader(h5, series, 0, series.n_columns, source) as reader:
            reader.read(0, 100, out)
        with pytest.raises(RuntimeError, match="shutdown"):
            reader.read(series.n_samples - 100, series.n_samples, out)


def test_the_reader_the_cloud_picks_writes_what_the_h5py_reader_writes(
    s3: Any, example_nwb: Path, tmp_path: Path
) -> None:
    with opened(s3, example_nwb) as (h5, source, _, _):
        plan = build_plan(h5, source="x", options=ConversionOptions(chunk_size_mb=0.03))
        for item in plan.work_items:
            series = plan.series[item.series]
            with slab_reader(h5, series, item.column_start, item.column_stop, source) as reader:
                write_work_item(plan, item, LocalStore(tmp_path / "given"), reader)
            with H5SlabReader(h5, series, item.column_start, item.column_stop) as own:
                write_work_item(plan, item, LocalStore(tmp_path / "own"), own)
    given = {p.name: p.read_bytes() for p in (tmp_path / "given").iterdir()}
    own = {p.name: p.read_bytes() for p in (tmp_path / "own").iterdir()}
    assert len(given) == len(plan.file_names()) and given == own
