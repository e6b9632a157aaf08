"""What the Plan reads of a 1 GB file (a file-backed fake S3, no moto), and the shuffle inverse.

The moto-backed read counts are in ``tests/integration/test_cloud_reads.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from nwb2pennsieve.cloud.models import PlanInput
from nwb2pennsieve.cloud.plan_step import plan_object
from nwb2pennsieve.cloud.settings import CloudSettings
from nwb2pennsieve.source.direct import unshuffle
from nwb2pennsieve.source.s3 import ReadStats
from tests.cloud_fixtures import INPUT_BUCKET, OUTPUT_BUCKET, function_environment, make_nwb

GB = 1024**3


class FileBackedS3:
    """A fake S3 client serving one big local file by byte range (moto would copy 1 GB around)."""

    class exceptions:
        ClientError = KeyError

    def __init__(self, bucket: str, key: str, path: Path) -> None:
        self.objects = {(bucket, key): path}
        self.written: dict[tuple[str, str], bytes] = {}
        self.bytes_served = 0

    def head_object(self, Bucket: str, Key: str, **kw: Any) -> dict[str, Any]:
        return {"ContentLength": self.objects[(Bucket, Key)].stat().st_size, "ETag": '"e"'}

    def get_object(self, Bucket: str, Key: str, Range: str, **kw: Any) -> dict[str, Any]:
        import io

        start, end = (int(x) for x in Range.removeprefix("bytes=").split("-"))
        with open(self.objects[(Bucket, Key)], "rb") as fh:
            fh.seek(start)
            data = fh.read(end - start + 1)
        self.bytes_served += len(data)
        return {"Body": io.BytesIO(data)}

    def put_object(self, Bucket: str, Key: str, Body: bytes, **kw: Any) -> dict[str, Any]:
        self.written[(Bucket, Key)] = Body
        return {}


@pytest.fixture(scope="module")
def one_gb_nwb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real NWB file of 1 GB: a 384-channel int16 Neuropixels-like series, contiguous (sparse on disk)."""
    path = make_nwb(
        tmp_path_factory.mktemp("big") / "big.nwb",
        channels=384,
        samples=10,
        chunks=None,
        compression=None,
        second_series=False,
    )
    rows = GB // (384 * 2)
    with h5py.File(path, "a") as f:
        old = f["/acquisition/ElectricalSeries/data"]
        attrs = dict(old.attrs)
        del f["/acquisition/ElectricalSeries/data"]
        data = f.create_dataset("/acquisition/ElectricalSeries/data", shape=(rows, 384), dtype="<i2")
        data[-1] = np.arange(384)  # allocates the whole contiguous extent
        data[:4096] = np.random.default_rng(0).normal(0, 300, (4096, 384)).astype("<i2")
        for k, v in attrs.items():
            data.attrs[k] = v
    assert path.stat().st_size > GB
    return path


def test_plan_reads_a_few_mb_of_a_1_gb_file(one_gb_nwb: Path) -> None:
    fake = FileBackedS3(INPUT_BUCKET, "big.nwb", one_gb_nwb)
    settings = CloudSettings.from_env(function_environment(output_bucket=OUTPUT_BUCKET))
    stats = ReadStats()
    out = plan_object(fake, PlanInput.parse({"bucket": INPUT_BUCKET, "key": "big.nwb"}), settings, stats=stats)
    assert out.channels == 384 and out.output_bytes == (GB // 768) * 384 * 8
    assert fake.bytes_served == stats.bytes
    # Metadata plus the planner's 4,096-row sanity slab (3 MiB here): a few MB, never the file.
    print(f"plan read {stats.bytes} bytes of {one_gb_nwb.stat().st_size} in {stats.requests} GETs")
    assert stats.bytes < 6 * 1024 * 1024, stats.bytes
    assert stats.requests < 40


def test_unshuffle_inverts_hdf5_shuffle() -> None:
    values = np.arange(1000, dtype="<i4")
    raw = values.tobytes()
    shuffled = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 4).T.tobytes()
    assert unshuffle(shuffled, 4) == raw
