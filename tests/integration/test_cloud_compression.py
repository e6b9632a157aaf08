"""The cloud reads every HDF5 filter neuroconv writes, and damaged chunks, exactly as the local pool does.

Deflate, shuffle and Fletcher-32 are decoded by the direct S3 chunk reader; any other filter
(hdf5plugin's Blosc, Zstd, LZ4, Bitshuffle, ..., LZF, scale-offset) falls back to h5py over the
ranged S3 reader. Either way the chunk files are the local pool's, byte for byte, and a damaged
chunk fails with the local pool's reason.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import pytest

from nwb2pennsieve.cloud.models import Batch, PlanInput, WriteChunksInput
from nwb2pennsieve.cloud.plan_step import plan_object
from nwb2pennsieve.cloud.settings import CloudSettings
from nwb2pennsieve.cloud.write_chunks_step import write_chunks
from nwb2pennsieve.errors import InvalidSeriesError
from nwb2pennsieve.local import convert_file
from nwb2pennsieve.options import ConversionOptions
from nwb2pennsieve.source.direct import direct_readable
from tests.cloud_fixtures import INPUT_BUCKET, OUTPUT_BUCKET, function_environment
from tests.expected import differing_objects
from tests.factory import DATA, compression_filters, corrupt_chunk, filtered_series, write_nwb

FILTERS = compression_filters()
CHUNK_MB = "0.004"


def convert_in_the_cloud(s3: Any, path: Path) -> dict[str, bytes]:
    """Plan and execute every write batch under moto; return the chunk files written."""
    s3.put_object(Bucket=INPUT_BUCKET, Key=path.name, Body=path.read_bytes())
    env = function_environment(output_bucket=OUTPUT_BUCKET, CHUNK_SIZE_MB=CHUNK_MB, BATCH_MB="0.01")
    out = plan_object(s3, PlanInput.parse({"bucket": INPUT_BUCKET, "key": path.name}), CloudSettings.from_env(env))
    batches = json.loads(s3.get_object(Bucket=OUTPUT_BUCKET, Key=out.write_batches.key)["Body"].read())
    for batch in batches:
        event = WriteChunksInput(source=out.source, output=out.output, plan=out.plan, batch=Batch.model_validate(batch))
        write_chunks(s3, event)
    listed = s3.list_objects_v2(Bucket=OUTPUT_BUCKET, Prefix=out.output.prefix)["Contents"]
    return {
        o["Key"][len(out.output.prefix) :]: s3.get_object(Bucket=OUTPUT_BUCKET, Key=o["Key"])["Body"].read()
        for o in listed
        if o["Key"].endswith(".bin.gz")
    }


def convert_locally(path: Path, out: Path) -> dict[str, bytes]:
    # The cloud compresses at level 1 by default: the local conversion at the same level.
    convert_file(path, out, ConversionOptions(chunk_size_mb=float(CHUNK_MB), gzip_level=1), workers=1)
    return {p.name: p.read_bytes() for p in out.iterdir() if p.name.endswith(".bin.gz")}


@pytest.mark.parametrize("name", sorted(FILTERS))
def test_cloud_output_equals_local_output_for_every_filter(s3: Any, tmp_path: Path, name: str) -> None:
    nwb = write_nwb(tmp_path / "f.nwb", [filtered_series(FILTERS[name])])
    with h5py.File(nwb) as f:
        direct = direct_readable(f[DATA])
    # Only the filters the direct reader decodes itself take that path; the rest (Blosc2, LZF,
    # scale-offset) fall back to h5py.
    assert direct == (not name.startswith("blosc2") and name not in {"lzf", "scale-offset"})
    local = convert_locally(nwb, tmp_path / "out")
    cloud = convert_in_the_cloud(s3, nwb)
    assert len(local) >= 9 and differing_objects(cloud, local) == []


@pytest.mark.parametrize(
    "filters",
    [
        {"fletcher32": True},  # the direct reader verifies the checksum
        {"fletcher32": True, "compression": "gzip", "shuffle": True},
        {"compression": "gzip"},  # the direct reader: the chunk does not inflate
        # Blosc has no checksum of its own (a flipped byte may decode to wrong values silently,
        # through any decoder): Fletcher-32 is what catches it.
        {**FILTERS["blosc-zstd"], "fletcher32": True},
    ],
    ids=["fletcher32", "gzip+shuffle+fletcher32", "gzip", "blosc-zstd+fletcher32"],
)
def test_a_corrupted_chunk_fails_in_the_cloud_as_locally(s3: Any, tmp_path: Path, filters: dict) -> None:
    spec = filtered_series({**filters, "chunks": (300, 2)}, samples=9000, channels=2)
    nwb = write_nwb(tmp_path / "f.nwb", [spec])
    corrupt_chunk(nwb, 6000)
    with pytest.raises(InvalidSeriesError) as local:
        convert_locally(nwb, tmp_path / "out")
    with pytest.raises(InvalidSeriesError) as cloud:
        convert_in_the_cloud(s3, nwb)
    assert str(local.value).startswith("f.nwb: series /acquisition/ElectricalSeries: samples ")
    assert str(cloud.value) == str(local.value).replace("f.nwb", f"s3://{INPUT_BUCKET}/f.nwb", 1)
    assert "damaged or truncated" in str(cloud.value)
