"""The records folder of one conversion: the one place that knows its keys.

For an input object ``a/b.nwb``, in the output bucket, ``{RECORDS_PREFIX}a/b/@v/<version token>/``
(:mod:`.layout`) holds (one folder per object version: two executions of one key, an object
replaced while it converts, never read each other's records; a rerun of the same version rewrites
the same keys):

- ``plan.json``: the :class:`~nwb2pennsieve.plan.models.Plan` (Plan writes it);
- ``write-batches.json``: the write batches, which the WriteChunks map's ItemReader reads (Plan);
- ``written/batch-{n:05d}.json``: what one write batch put (:class:`~.models.WrittenBatch`,
  WriteChunks), checked by Finalize;
- ``bundle-partials/<work item id>.bin``: with the viewer bundle, one work item's partial results
  for the reduce (WriteChunks puts, Finalize reads);
- with the importer on, ``upload-batches.json`` (the upload batches, which the UploadFiles map's
  ItemReader reads), ``upload-batch-{n:05d}.json`` (the names of one upload batch: Finalize) and
  ``upload-failed-{n:05d}.json`` (the files a failed upload batch could not upload: UploadFiles).

Beside the folders, ``{RECORDS_PREFIX}map-results`` is where the maps' ResultWriter writes, one
folder per map run (:func:`map_results`; ``template.yaml`` says the same).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import TypeAdapter

from ..errors import StorageError
from ..plan.models import Plan
from .layout import records_folder
from .models import Batch, S3Prefix, S3Ref

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

PLAN_NAME = "plan.json"
WRITE_BATCHES_NAME = "write-batches.json"
UPLOAD_BATCHES_NAME = "upload-batches.json"
WRITTEN_FOLDER = "written"
PARTIALS_FOLDER = "bundle-partials"
UPLOAD_BATCH_PREFIX = "upload-batch-"
UPLOAD_FAILED_PREFIX = "upload-failed-"
MAP_RESULTS_FOLDER = "map-results"

# write-batches.json: a JSON array of write batches (the map's items as they are).
WRITE_BATCHES = TypeAdapter(list[Batch])


@dataclass(frozen=True)
class RecordsFolder:
    """``s3://bucket/prefix`` (``prefix`` ends with ``/``): one conversion's records; each method
    gives the key of one record."""

    bucket: str
    prefix: str

    @classmethod
    def of_version(cls, bucket: str, records_prefix: str, key: str, token: str) -> RecordsFolder:
        """The folder of the object version ``key`` at version token ``token`` (:mod:`.layout`)."""
        return cls(bucket, records_folder(records_prefix, key, token))

    @classmethod
    def of_plan(cls, plan: S3Ref) -> RecordsFolder:
        """The folder ``plan.json`` is in (every step after Plan finds the records so)."""
        folder, _, _ = plan.key.rpartition("/")
        return cls(plan.bucket, folder + "/" if folder else "")

    @classmethod
    def at(cls, prefix: S3Prefix) -> RecordsFolder:
        """The folder a payload names (the upload plan's ``records``)."""
        return cls(prefix.bucket, prefix.prefix)

    def ref(self, name: str) -> S3Ref:
        return S3Ref(bucket=self.bucket, key=self.prefix + name)

    def as_prefix(self) -> S3Prefix:
        return S3Prefix(bucket=self.bucket, prefix=self.prefix)

    @property
    def plan(self) -> S3Ref:
        return self.ref(PLAN_NAME)

    @property
    def write_batches(self) -> S3Ref:
        return self.ref(WRITE_BATCHES_NAME)

    def written(self, batch: int) -> S3Ref:
        return self.ref(f"{WRITTEN_FOLDER}/batch-{batch:05d}.json")

    def bundle_partial(self, item_id: str) -> S3Ref:
        return self.ref(f"{PARTIALS_FOLDER}/{item_id}.bin")

    @property
    def upload_batches(self) -> S3Ref:
        return self.ref(UPLOAD_BATCHES_NAME)

    def upload_batch(self, batch: int) -> S3Ref:
        return self.ref(f"{UPLOAD_BATCH_PREFIX}{batch:05d}.json")

    def upload_failed(self, batch: int) -> S3Ref:
        return self.ref(f"{UPLOAD_FAILED_PREFIX}{batch:05d}.json")

    def list_upload_failed(self, s3: S3Client) -> list[S3Ref]:
        """Every ``upload-failed-*`` record, in key order."""
        return self._list(s3, UPLOAD_FAILED_PREFIX)

    def list_upload_batches(self, s3: S3Client) -> list[S3Ref]:
        """Every ``upload-batch-*`` record (not ``upload-batches.json``), in key order."""
        return self._list(s3, UPLOAD_BATCH_PREFIX)

    def _list(self, s3: S3Client, start: str) -> list[S3Ref]:
        refs = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix + start):
            for obj in page.get("Contents", []):
                if "/" not in obj["Key"][len(self.prefix) :]:
                    refs.append(S3Ref(bucket=self.bucket, key=obj["Key"]))
        return sorted(refs, key=lambda ref: ref.key)


def map_results(bucket: str, records_prefix: str) -> S3Prefix:
    """Where the maps' ResultWriter writes (one folder per map run); template.yaml says the same."""
    return S3Prefix(bucket=bucket, prefix=f"{records_prefix}{MAP_RESULTS_FOLDER}")


def put_record(s3: S3Client, ref: S3Ref, body: bytes) -> None:
    s3.put_object(Bucket=ref.bucket, Key=ref.key, Body=body)


def read_record(s3: S3Client, ref: S3Ref) -> bytes:
    body: bytes = s3.get_object(Bucket=ref.bucket, Key=ref.key)["Body"].read()
    return body


def load_plan(s3: S3Client, ref: S3Ref) -> Plan:
    try:
        body = read_record(s3, ref)
    except Exception as exc:
        raise StorageError(f"cannot read the plan {ref.uri} ({exc})") from None
    return Plan.model_validate_json(body)
