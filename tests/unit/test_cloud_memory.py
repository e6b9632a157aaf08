"""WriteChunks' memory is one work item's budget plus a constant, however many items its batch has."""

from __future__ import annotations

import io
import json
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from nwb2pennsieve.cloud.models import Batch, PlanInput, WriteChunksInput
from nwb2pennsieve.cloud.plan_step import plan_object
from nwb2pennsieve.cloud.settings import CloudSettings
from nwb2pennsieve.cloud.write_chunks_step import write_chunks
from nwb2pennsieve.output import s3store
from tests.cloud_fixtures import make_nwb

MIB = 1024 * 1024


class DiscardingS3:
    """Serves one local file by range; keeps small objects (plan, write batches), counts and drops chunk files."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.small: dict[str, bytes] = {}
        self.chunk_files = 0

    def head_object(self, **kw: Any) -> dict[str, Any]:
        return {"ContentLength": self.path.stat().st_size, "ETag": '"e"'}

    def get_object(self, Key: str, Range: str | None = None, **kw: Any) -> dict[str, Any]:
        if Range is None:
            return {"Body": io.BytesIO(self.small[Key])}
        start, end = (int(x) for x in Range.removeprefix("bytes=").split("-"))
        with open(self.path, "rb") as fh:
            fh.seek(start)
            return {"Body": io.BytesIO(fh.read(end - start + 1))}

    def put_object(self, Key: str, Body: Any, **kw: Any) -> dict[str, Any]:
        if Key.endswith(".bin.gz"):
            self.chunk_files += 1
        else:
            self.small[Key] = bytes(Body)
        return {}

    def get_paginator(self, name: str) -> DiscardingS3:
        assert name == "list_object_versions"  # is the version still the latest? (it is: one, unversioned)
        return self

    def paginate(self, Bucket: str, Prefix: str) -> list[dict[str, Any]]:
        return [{"Versions": [{"Key": Prefix, "VersionId": "null", "IsLatest": True, "ETag": '"e"'}]}]


@pytest.mark.parametrize("gzip_level", ["0", "1"])
def test_a_batch_of_many_items_needs_the_memory_of_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gzip_level: str
) -> None:
    monkeypatch.setattr(s3store, "MAX_IN_FLIGHT_BYTES", 8 * MIB)
    path = make_nwb(tmp_path / "m.nwb", channels=32, samples=32_768 * 8, chunks=(4096, 32), second_series=False)
    fake = DiscardingS3(path)
    env = {
        "OUTPUT_BUCKET": "out-bucket",
        "CHUNK_SIZE_MB": "0.25",
        "MAX_ITEM_MB": "8",
        "BATCH_MB": "1000",
        "GZIP_LEVEL": gzip_level,
    }
    out = plan_object(fake, PlanInput.parse({"bucket": "in-bucket", "key": "m.nwb"}), CloudSettings.from_env(env))
    (batch,) = json.loads(fake.small[out.write_batches.key])
    assert len(batch["items"]) == 8 and batch["outputBytes"] == 64 * MIB  # 8 items of 8 MiB in one batch
    event = WriteChunksInput(source=out.source, output=out.output, plan=out.plan, batch=Batch.model_validate(batch))
    tracemalloc.start()
    try:
        write_chunks(fake, event)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert fake.chunk_files == 8 * 32
    # One item's chunk files (8 MiB) + PUTs in flight (8 MiB) + the writer's block buffers (10 MiB)
    # + decoded HDF5 chunks (a few MiB): far below the batch's 64 MiB. (At level 1 the files are
    # smaller; ISA-L's compressors, ~0.1 MiB per open file, are C memory tracemalloc does not see.)
    print(f"peak {peak / MIB:.1f} MiB for a batch of 64 MiB in items of 8 MiB")
    assert peak < 8 * MIB + 8 * MIB + 20 * MIB, peak / MIB


def test_a_failed_put_fails_the_batch_with_the_object_named(tmp_path: Path) -> None:
    from nwb2pennsieve.errors import StorageError

    class FailingPuts(DiscardingS3):
        def put_object(self, Key: str, Body: Any, **kw: Any) -> dict[str, Any]:
            if Key.endswith("_0.bin.gz") or "channel-00003_" in Key:
                raise OSError("connection reset")
            return super().put_object(Key=Key, Body=Body, **kw)

    path = make_nwb(tmp_path / "p.nwb", channels=8, samples=20_000, chunks=(4096, 8), second_series=False)
    fake = FailingPuts(path)
    out = plan_object(fake, PlanInput.parse({"bucket": "in-bucket", "key": "p.nwb"}),
                      CloudSettings.from_env({"OUTPUT_BUCKET": "out-bucket"}))  # fmt: skip
    (batch,) = json.loads(fake.small[out.write_batches.key])
    event = WriteChunksInput(source=out.source, output=out.output, plan=out.plan, batch=Batch.model_validate(batch))
    with pytest.raises(StorageError, match="connection reset"):
        write_chunks(fake, event)
