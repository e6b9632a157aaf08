"""The state machine's payloads: what each state receives and returns, as small typed models.

Field names are camelCase on the wire (Step Functions' and S3's own style) and snake_case in
Python. Every payload stays a few hundred bytes whatever the file's size: the plan, the write
batches and the upload batches live in S3 and states pass their keys (Step Functions' 256 KB
limit). "Manifest" is only Pennsieve's import manifest, never one of these lists.

An execution starts from either
- the EventBridge "Object Created" event of an ``*.nwb`` object (the rule's target input, parsed
  with Powertools' ``S3EventNotificationEventBridgeModel``), or
- a hand-written input (console "Start execution" or a rerun):
  ``{"bucket": ..., "key": ..., "versionId": ..., "chunkSizeMb": 2, "outputPrefix": "...",
  "importerEnabled": false, "skipInvalidSeries": true, "maxItemMb": 256, "gzipLevel": 0,
  "outputFormats": "chunks,bundle", "integrationId": "...",
  "datasetId": "...", "packageId": "..."}`` (all but bucket and key optional).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from aws_lambda_powertools.utilities.parser.models import S3EventNotificationEventBridgeModel
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from ..errors import InvalidInputError
from ..options import ConversionOptions
from ..pennsieve.target import TargetSpec
from ..plan.models import ChunkRecord
from ..source.s3 import no_version

if TYPE_CHECKING:
    from ..pennsieve.importer import PreparedImport


class _Payload(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True, extra="ignore")

    def dump(self) -> dict[str, Any]:
        """The JSON-ready dict a handler returns (camelCase, no nulls)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


def bare_etag(value: str | None) -> str | None:
    """An ETag without its quotes (S3 quotes it in answers, EventBridge does not)."""
    return value.strip('"') or None if value else None


class S3Ref(_Payload):
    """An S3 object (a record, or the input pinned to one version: its version id, or for an
    object without one, the ETag every read must match)."""

    bucket: str = Field(min_length=3)
    key: str = Field(min_length=1)
    version_id: str | None = None
    etag: str | None = Field(default=None, description="the pinned ETag (no quotes) when there is no version id")

    @field_validator("version_id", mode="before")
    @classmethod
    def _no_null_version(cls, value: Any) -> Any:
        return no_version(value) if isinstance(value, str) or value is None else value

    @field_validator("etag", mode="before")
    @classmethod
    def _bare_etag(cls, value: Any) -> Any:
        return bare_etag(value) if isinstance(value, str) or value is None else value

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


class S3Prefix(_Payload):
    bucket: str = Field(min_length=3)
    prefix: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


class Overrides(_Payload):
    """Per-execution settings a hand-started execution may give (else the stack's defaults)."""

    chunk_size_mb: float | None = Field(default=None, gt=0)
    max_item_mb: float | None = Field(default=None, gt=0)
    batch_mb: float | None = Field(default=None, gt=0)
    gzip_level: int | None = Field(default=None, ge=0, le=3, description="0: stored gzip blocks; 1-3: ISA-L deflate")
    output_prefix: str | None = None
    importer_enabled: bool | None = None
    skip_invalid_series: bool | None = None
    output_formats: str | None = Field(default=None, description="chunks, bundle or chunks,bundle")
    integration_id: str | None = Field(default=None, description="Pennsieve workflow run id (not a secret)")
    dataset_id: str | None = Field(default=None, description="Pennsieve dataset id, with package_id")
    package_id: str | None = Field(default=None, description="Pennsieve package id, with dataset_id")


class PlanInput(_Payload):
    """The Plan function's input: the execution input, in either of its two shapes, normalized."""

    source: S3Ref
    overrides: Overrides = Field(default_factory=Overrides)

    @model_validator(mode="before")
    @classmethod
    def _normalize(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        if "detail" in data and "detail-type" in data:
            if data.get("source") != "aws.s3" or data.get("detail-type") != "Object Created":
                raise ValueError(f"not an S3 Object Created event ({data.get('source')} / {data.get('detail-type')})")
            detail = S3EventNotificationEventBridgeModel.model_validate(data).detail
            obj = detail.object
            source = {"bucket": detail.bucket.name, "key": obj.key, "versionId": obj.version_id, "etag": obj.etag}
            return {"source": source}
        if "source" in data:
            return data
        named = ("bucket", "key", "versionId", "version_id", "etag")
        overrides = {k: v for k, v in data.items() if k not in named}
        return {
            "source": {
                "bucket": data.get("bucket"),
                "key": data.get("key"),
                "versionId": data.get("versionId", data.get("version_id")),
                "etag": data.get("etag"),
            },
            "overrides": overrides,
        }

    @classmethod
    def parse(cls, event: Any) -> PlanInput:
        """Parse an execution input; a malformed one is an :class:`InvalidInputError` saying why."""
        try:
            return cls.model_validate(event)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'input'}: {e['msg']}" for e in exc.errors())
            raise InvalidInputError(
                "the execution input is neither an S3 Object Created event nor "
                f'{{"bucket": ..., "key": ..., "versionId": ...}} ({problems})'
            ) from None


class ConversionSettings(_Payload):
    """The settings one execution runs with (the stack's defaults with the input's overrides):
    the conversion options, which the plan stores, and what only the cloud steps need."""

    options: ConversionOptions
    batch_mb: float
    importer_enabled: bool


class Superseded(_Payload):
    """What a step returns when the object version it converts is no longer the latest: the newer
    version's own execution converts it. A normal outcome (the execution succeeds), not an error."""

    outcome: Literal["superseded"] = "superseded"
    source: S3Ref
    latest: str = Field(description="what replaced it: a newer version id or ETag")
    step: str = Field(description="the step that noticed: Plan, WriteChunks or Finalize")
    removed: int = Field(default=0, description="objects of its own unpublished version folder removed")


class PlanOutput(_Payload):
    """Plan's result: the state the Map and Finalize run on (small: keys, not content)."""

    outcome: Literal["planned"] = "planned"
    source: S3Ref
    output: S3Prefix = Field(description="the version folder: where the chunk files and channel metadata go")
    folder: S3Prefix = Field(description="the key's output folder, where Finalize publishes (@current.json)")
    plan: S3Ref = Field(description="plan.json")
    write_batches: S3Ref = Field(description="write-batches.json, which the WriteChunks map's ItemReader reads")
    results: S3Prefix = Field(description="where the Map's ResultWriter writes")
    importer_enabled: bool = Field(description="the import steps follow Finalize")
    work_items: int
    batches: int
    chunk_files: int
    channels: int
    output_bytes: int
    target: TargetSpec | None = Field(default=None, description="the import target, when the importer is on")
    warnings: list[str] = Field(default_factory=list)


class Batch(_Payload):
    """One write batch (an item of ``write-batches.json``): the work items one WriteChunks invocation executes."""

    batch: int
    items: list[str] = Field(min_length=1)
    output_bytes: int


class WriteChunksInput(_Payload):
    """What the Map's ItemSelector hands each WriteChunks invocation."""

    source: S3Ref
    output: S3Prefix
    plan: S3Ref
    batch: Batch


class WriteChunksOutput(_Payload):
    superseded: bool = Field(default=False, description="a newer version exists: nothing was written")
    batch: int
    items: int
    files: int = 0
    payload_bytes: int = 0
    stored_bytes: int = Field(default=0, description="bytes of the chunk files put (after gzip)")
    bytes_read: int = 0
    requests: int = 0
    seconds: float = 0.0


class WrittenBatch(_Payload):
    """``written/batch-{n:05d}.json`` in the records folder: what one WriteChunks invocation put.

    Written after every PUT of the batch succeeded. Finalize checks each chunk file's listed size
    against ``files`` (a compressed file's size is known only once written), and the CRC-32 of the
    decompressed bytes identifies the content whatever CPU compressed it.
    """

    batch: int
    items: list[str]
    gzip_level: int
    files: list[ChunkRecord]


class MapRunResult(_Payload):
    """What the Distributed Map leaves in ``$.writeChunks`` (ResultWriter details)."""

    map_run_arn: str | None = Field(default=None, alias="MapRunArn")
    result_writer_details: dict[str, str] | None = Field(default=None, alias="ResultWriterDetails")


class FinalizeInput(PlanOutput):
    write_chunks: MapRunResult | None = None


class UploadBatch(_Payload):
    """One upload batch (an item of ``upload-batches.json``): where the names of its chunk files are.

    The names live in their own S3 object (a JSON array): 5,000 names are ~300 KB, more than a
    state payload may hold.
    """

    batch: int
    names: S3Ref
    files: int


class AssetRef(_Payload):
    """The viewer asset an import writes into (ids only: each step obtains the asset's upload
    credentials itself, from Pennsieve; they are never in a payload)."""

    id: str
    dataset_id: str
    package_id: str = Field(description="where the channels and chunk ranges are")


class UploadPlan(_Payload):
    """What Finalize leaves for the upload Map (when the importer is on): the import is prepared
    (the legacy flow: channels exist, every file is in the import manifest; the asset flow: the
    viewer asset and its channels exist); ``files`` still have to be PUT."""

    output: S3Prefix = Field(description="the chunk files and the importer's records (import-state.json...)")
    upload_batches: S3Ref = Field(description="upload-batches.json, which the UploadFiles map's ItemReader reads")
    records: S3Prefix = Field(description="this conversion's records folder: the upload batches and failure records")
    import_id: str | None = None
    batches: int
    files: int = Field(description="chunk files not uploaded yet (0 on a rerun of a complete import)")
    files_total: int
    asset: AssetRef | None = Field(default=None, description="the viewer asset (absent: the legacy flow)")
    max_file_bytes: int | None = Field(default=None, description="the biggest chunk file (memory of an upload)")


class ImportSummary(_Payload):
    """The import in Finalize's and CompleteImport's output (small, secret-free): what Finalize
    prepared (Pennsieve's :class:`~nwb2pennsieve.pennsieve.PreparedImport`: the resolved target,
    the channels, the files in the import manifest) and, once CompleteImport has checked every
    upload, what the upload map did."""

    target: TargetSpec = Field(description="the resolved target: dataset, package (and the integration, if any)")
    import_id: str | None = None
    channels: int
    channels_created: int
    channels_reused: int
    files: int
    files_registered: int
    files_uploaded: int | None = Field(default=None, description="by this execution's upload map (CompleteImport)")
    files_already_uploaded: int | None = Field(default=None, description="by an earlier execution (CompleteImport)")
    upload_batches: int | None = Field(default=None, description="of this execution's upload map (CompleteImport)")
    asset_id: str | None = Field(default=None, description="the viewer asset (the asset flow)")
    asset: str | None = Field(default=None, description="created, resumed or already finished (the asset flow)")
    ranges_registered: int | None = Field(default=None, description="chunk ranges registered now (CompleteImport)")
    ranges_known: int | None = Field(default=None, description="chunk ranges Pennsieve had already (CompleteImport)")

    @classmethod
    def of_prepared(cls, prepared: PreparedImport) -> ImportSummary:
        """Finalize's summary: every field of the prepared import, its target as a :class:`TargetSpec`."""
        return cls.model_validate(prepared.model_dump())


class FinalizeOutput(_Payload):
    outcome: Literal["converted"] = "converted"
    source: str
    output: str = Field(description="the version folder, now published by the key's @current.json")
    channels: int
    chunk_files: int
    metadata_files: int
    output_bytes: int
    stored_bytes: int = Field(default=0, description="bytes of the chunk files (after gzip)")
    stale_removed: int
    superseded_removed: int = Field(default=0, description="objects of the replaced versions' folders removed")
    imported: bool
    import_summary: ImportSummary | None = Field(default=None, description="present when the importer is on")
    upload: UploadPlan | None = Field(default=None, description="present when the upload Map must run")
    warnings: list[str] = Field(default_factory=list)


class UploadFilesInput(_Payload):
    """What the UploadFiles Map's ItemSelector hands each UploadFiles invocation: Finalize's
    upload plan (the output, the records, the asset) and one item of ``upload-batches.json``."""

    source: str
    upload: UploadPlan
    batch: UploadBatch

    @property
    def output(self) -> S3Prefix:
        return self.upload.output

    @property
    def records(self) -> S3Prefix:
        return self.upload.records


class UploadFilesOutput(_Payload):
    batch: int
    files: int
    uploaded: int
    already_uploaded: int
    seconds: float


class MapError(_Payload):
    """A Catch's ``$.error``-style result: the error name and its cause."""

    error: str | None = Field(default=None, alias="Error")
    cause: str | None = Field(default=None, alias="Cause")


class CompleteImportInput(FinalizeOutput):
    """Finalize's output plus the upload Map's result (or its error, when the Map failed)."""

    upload_files: MapRunResult | None = None
    upload_error: MapError | None = None
