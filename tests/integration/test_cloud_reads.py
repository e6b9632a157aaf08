"""What the functions read from S3 (moto): exactly the bytes they need, counted.

- All writers together read at most 1.1 x the series' stored bytes.
- The direct chunk reader returns exactly what h5py returns.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from nwb2pennsieve.cloud.models import Batch, PlanInput, WriteChunksInput
from nwb2pennsieve.cloud.plan_step import plan_object
from nwb2pennsieve.cloud.settings import CloudSettings
from nwb2pennsieve.cloud.write_chunks_step import write_chunks
from nwb2pennsieve.errors import InvalidInputError
from nwb2pennsieve.options import ConversionOptions
from nwb2pennsieve.plan.survey import build_plan
from nwb2pennsieve.source.direct import DirectChunkReader, direct_readable
from nwb2pennsieve.source.nwb import open_nwb
from nwb2pennsieve.source.s3 import ReadStats, S3RangeReader
from tests.cloud_fixtures import INPUT_BUCKET, OUTPUT_BUCKET, function_environment, make_nwb


def test_writers_together_read_at_most_1_1x_the_stored_bytes(s3: Any, tmp_path: Path) -> None:
    path = make_nwb(tmp_path / "w.nwb", channels=32, samples=400_000, chunks=(16384, 32), second_series=False)
    with h5py.File(path) as f:
        stored = f["/acquisition/ElectricalSeries/data"].id.get_storage_size()
    s3.put_object(Bucket=INPUT_BUCKET, Key="w.nwb", Body=path.read_bytes())
    env = function_environment(output_bucket=OUTPUT_BUCKET, MAX_ITEM_MB="32", BATCH_MB="32")
    out = plan_object(s3, PlanInput.parse({"bucket": INPUT_BUCKET, "key": "w.nwb"}), CloudSettings.from_env(env))
    batches = json.loads(s3.get_object(Bucket=OUTPUT_BUCKET, Key=out.write_batches.key)["Body"].read())
    assert len(batches) >= 3
    stats = ReadStats()
    for batch in batches:
        event = WriteChunksInput(source=out.source, output=out.output, plan=out.plan, batch=Batch.model_validate(batch))
        write_chunks(s3, event, stats=stats)
    print(f"writers read {stats.bytes} of {stored} stored bytes ({stats.bytes / stored:.3f}x) in {stats.requests} GETs")
    assert stats.bytes <= 1.1 * stored, (stats.bytes, stored)


@pytest.mark.parametrize("fixture", ["example_nwb", "shuffled_nwb", "contiguous_nwb"])
def test_direct_chunk_reads_equal_h5py(s3: Any, fixture: str, request: pytest.FixtureRequest) -> None:
    path: Path = request.getfixturevalue(fixture)
    s3.put_object(Bucket=INPUT_BUCKET, Key="x.nwb", Body=path.read_bytes())
    source = S3RangeReader(s3, INPUT_BUCKET, "x.nwb")
    with open_nwb(source, name="x") as h5, h5py.File(path) as local:
        plan = build_plan(h5, source="x", options=ConversionOptions(chunk_size_mb=0.03))
        for series in plan.series:
            expected = local[series.data_path][()]
            assert direct_readable(h5[series.data_path])
            n_cols = series.n_columns
            for c0, c1 in [(0, n_cols), (n_cols // 2, n_cols), (min(1, n_cols - 1), n_cols)]:
                with DirectChunkReader(h5, series, c0, c1, source) as reader:
                    start = 0
                    for stop in [1000, 4096, 9999, series.n_samples]:
                        stop = min(stop, series.n_samples)
                        if stop <= start:
                            continue
                        shape = (stop - start, c1 - c0) if len(series.shape) == 2 else (stop - start,)
                        out = np.empty(shape, dtype=expected.dtype)
                        reader.read(start, stop, out)
                        want = expected[start:stop, c0:c1] if expected.ndim == 2 else expected[start:stop]
                        np.testing.assert_array_equal(out, want)
                        start = stop


def test_unwritten_chunks_read_as_the_fill_value(s3: Any, tmp_path: Path) -> None:
    path = make_nwb(tmp_path / "holes.nwb", channels=4, samples=10_000, chunks=(1000, 4), second_series=False)
    with h5py.File(path, "a") as f:
        old = f["/acquisition/ElectricalSeries/data"]
        attrs, values = dict(old.attrs), old[()]
        del f["/acquisition/ElectricalSeries/data"]
        data = f.create_dataset(
            "/acquisition/ElectricalSeries/data",
            shape=values.shape,
            dtype="<i2",
            chunks=(1000, 4),
            compression="gzip",
            fletcher32=True,
            fillvalue=-7,
        )
        data[:3000] = values[:3000]
        for k, v in attrs.items():
            data.attrs[k] = v
    s3.put_object(Bucket=INPUT_BUCKET, Key="holes.nwb", Body=path.read_bytes())
    source = S3RangeReader(s3, INPUT_BUCKET, "holes.nwb")
    with open_nwb(source, name="holes") as h5:
        series = build_plan(h5, source="holes", options=ConversionOptions()).series[0]
        out = np.empty((10_000, 4), dtype="<i2")
        with DirectChunkReader(h5, series, 0, 4, source) as reader:
            reader.read(0, 10_000, out)
    np.testing.assert_array_equal(out[:3000], values[:3000])
    assert np.all(out[3000:] == -7)


def test_range_reader_fails_loudly_when_the_object_changes(s3: Any) -> None:
    s3.create_bucket(Bucket="plain-bucket")
    s3.put_object(Bucket="plain-bucket", Key="k", Body=b"a" * 100_000)
    reader = S3RangeReader(s3, "plain-bucket", "k")
    assert reader.read(10) == b"a" * 10
    s3.put_object(Bucket="plain-bucket", Key="k", Body=b"b" * 100_000)
    reader.seek(70_000)
    with pytest.raises(InvalidInputError, match="changed"):
        reader.read(10)
