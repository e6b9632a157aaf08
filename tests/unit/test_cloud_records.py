"""The records folder of a conversion (nwb2pennsieve.cloud.records): every key it gives, pinned to
the layout docs/cloud.md describes and to the keys the event fixtures carry."""

from __future__ import annotations

from typing import Any

from nwb2pennsieve.cloud.models import S3Prefix, S3Ref
from nwb2pennsieve.cloud.records import RecordsFolder, map_results
from tests.cloud_fixtures import OUTPUT_BUCKET, load_event


def test_every_key_of_the_folder_of_an_object_version() -> None:
    records = RecordsFolder.of_version("out", "records/", "a/b.nwb", "v1")
    assert records.prefix == "records/a/b/@v/v1/"
    keys = [
        records.plan,
        records.write_batches,
        records.written(3),
        records.bundle_partial("000-0000001-00002"),
        records.upload_batches,
        records.upload_batch(7),
        records.upload_failed(7),
    ]
    assert {r.bucket for r in keys} == {"out"}
    assert [r.key.removeprefix(records.prefix) for r in keys] == [
        "plan.json",
        "write-batches.json",
        "written/batch-00003.json",
        "bundle-partials/000-0000001-00002.bin",
        "upload-batches.json",
        "upload-batch-00007.json",
        "upload-failed-00007.json",
    ]
    assert map_results("out", "records/") == S3Prefix(bucket="out", prefix="records/map-results")


def test_the_fixtures_keys_are_the_folders() -> None:
    """Plan's output (finalize.json) and the upload plan (upload_files.json, complete_import.json)
    name keys of one folder, found again from plan.json's key by every later step."""
    planned = load_event("finalize.json")
    source = planned["source"]
    records = RecordsFolder.of_version(OUTPUT_BUCKET, "records/", source["key"], "v" + source["versionId"])
    assert RecordsFolder.of_plan(S3Ref.model_validate(planned["plan"])) == records
    assert records.plan.dump() == planned["plan"]
    assert records.write_batches.dump() == planned["writeBatches"]
    assert map_results(OUTPUT_BUCKET, "records/").dump() == planned["results"]
    upload = load_event("upload_files.json")
    assert RecordsFolder.at(S3Prefix.model_validate(upload["upload"]["records"])) == records
    assert records.upload_batch(0).dump() == upload["batch"]["names"]
    complete = load_event("complete_import.json")["upload"]
    assert records.as_prefix().dump() == complete["records"]
    assert records.upload_batches.dump() == complete["uploadBatches"]


class FakeListing:
    """An S3 client whose ``list_objects_v2`` pages list ``keys`` under the asked prefix."""

    def __init__(self, keys: list[str]) -> None:
        self.keys = keys

    def get_paginator(self, name: str) -> FakeListing:
        assert name == "list_objects_v2"
        return self

    def paginate(self, *, Bucket: str, Prefix: str) -> list[dict[str, Any]]:
        return [{"Contents": [{"Key": k} for k in sorted(self.keys, reverse=True) if k.startswith(Prefix)]}]


def test_the_upload_records_are_listed_by_kind_in_key_order() -> None:
    records = RecordsFolder("out", "records/a/v/")
    s3: Any = FakeListing(
        [
            "records/a/v/upload-batches.json",
            "records/a/v/upload-batch-00001.json",
            "records/a/v/upload-batch-00000.json",
            "records/a/v/upload-failed-00002.json",
            "records/a/v/written/batch-00000.json",
            "records/a/v/upload-failed-x/deeper.json",
        ]
    )
    assert records.list_upload_batches(s3) == [records.upload_batch(0), records.upload_batch(1)]
    assert records.list_upload_failed(s3) == [records.upload_failed(2)]
