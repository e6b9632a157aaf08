"""A slab reader's memory stays at its chunk cache while it reads a column group narrower than the
HDF5 chunk, however many chunks it reads (HDF5 kept every partly read chunk at preemption weight 1.0)."""

from __future__ import annotations

import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from nwb2pennsieve.options import ConversionOptions
from nwb2pennsieve.plan.survey import build_plan
from nwb2pennsieve.source.slabs import H5SlabReader
from tests.cloud_fixtures import make_nwb

MIB = 1024 * 1024


def anonymous_rss() -> int:
    status = Path("/proc/self/status").read_text()
    return int(status.split("RssAnon:")[1].split()[0]) * 1024


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads RssAnon from /proc")
def test_reading_part_of_each_chunk_does_not_keep_the_chunks(tmp_path: Path) -> None:
    rows, width, chunks = 8192, 64, 48  # 1 MiB HDF5 chunks, 48 of them down the file
    path = make_nwb(
        tmp_path / "wide.nwb",
        channels=width,
        samples=rows * chunks,
        chunks=(rows, width),
        compression=None,
        second_series=False,
    )
    with h5py.File(path, "r") as h5:
        plan = build_plan(h5, source=path.name, options=ConversionOptions())
        series = plan.series[0]
        out = np.empty((rows, 37), dtype=np.int16)
        with H5SlabReader(h5, series, 0, 37) as reader:
            reader.read(0, rows, out)  # the cache (about 2.25 chunks) fills
            before = anonymous_rss()
            for start in range(rows, rows * chunks, rows):
                reader.read(start, start + rows, out)
            grown = anonymous_rss() - before
            # every row read, the right values: the first column group of the last chunk
            np.testing.assert_array_equal(out, h5[series.data_path][rows * (chunks - 1) :, :37])
    # 47 more chunks read: kept, they would be 47 MiB
    assert grown < 8 * MIB, f"reading grew the process by {grown / MIB:.1f} MiB"
