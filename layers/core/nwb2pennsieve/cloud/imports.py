"""The import steps: after Finalize's checks, prepare the Pennsieve import and write the upload
Map's batches (:func:`prepare_uploads`); upload one batch (:func:`upload_batch`, UploadFiles);
check that every chunk file is uploaded (:func:`complete_import`, CompleteImport).

Records of one object version, in its folder next to ``plan.json``: ``upload-batches.json`` (the
upload Map's item manifest), ``upload-batch-<n>.json`` (the names of one upload batch) and
``upload-failed-<n>.json`` (the files a failed upload batch could not upload). The importer's own
import records live next to the output (:mod:`nwb2pennsieve.pennsieve.records`).

The Pennsieve package is imported when first needed: a conversion without import never loads it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from ..errors import Nwb2PennsieveError, StorageError
from ..output.storage import S3Store, Store
from ..plan.models import Plan
from .importer import prepare_output, upload_names
from .models import (
    CompleteImportInput,
    FinalizeOutput,
    S3Prefix,
    S3Ref,
    UploadBatch,
    UploadFilesInput,
    UploadFilesOutput,
    UploadPlan,
)
from .records import RecordsFolder, put_record, read_record

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from ..pennsieve.importer import UploadReport
    from ..pennsieve.target import TargetSpec

log = logging.getLogger(__name__)

Uploader = Callable[[Store, Mapping[str, str], list[str]], "UploadReport"]

_NAMES = TypeAdapter(list[str])
_UPLOAD_BATCHES = TypeAdapter(list[UploadBatch])


class UploadFailedRecord(BaseModel):
    """``upload-failed-<batch>.json``: the files one upload batch could not upload, and why."""

    model_config = ConfigDict(extra="ignore")

    batch: int | None = None
    failed: list[str] = []
    error: str = ""


def prepare_uploads(
    s3: S3Client,
    plan: Plan,
    plan_ref: S3Ref,
    output: S3Prefix,
    env: Mapping[str, str],
    target: TargetSpec | None,
    *,
    batch_size: int,
) -> tuple[dict[str, Any], UploadPlan]:
    """Prepare the import of ``output`` (channels, import manifest) and write the upload batches.

    Returns (the prepared import's summary, the upload Map's plan).
    """
    store = S3Store(output.bucket, output.prefix, s3)
    summary = prepare_output(plan, store, env, target)
    return summary, plan_uploads(s3, store, plan_ref, summary, batch_size=batch_size)


def plan_uploads(
    s3: S3Client, store: S3Store, plan_ref: S3Ref, prepared: Mapping[str, Any], *, batch_size: int
) -> UploadPlan:
    """Write the upload Map's items: the chunk files not uploaded yet, ``batch_size`` names per
    batch object, and the manifest listing the batches. A rerun of a complete import writes none."""
    from ..pennsieve import upload_batches
    from ..pennsieve.records import remove_failed

    records = RecordsFolder.of_plan(plan_ref)
    # Records of an earlier execution of this version: this execution's Map writes its own.
    for ref in [*records.list_upload_failed(s3), *records.list_upload_batches(s3)]:
        s3.delete_object(Bucket=ref.bucket, Key=ref.key)
    remove_failed(store)
    batches = upload_batches(store, batch_size=batch_size)
    items = []
    for i, names in enumerate(batches):
        put_record(s3, records.upload_batch(i), _NAMES.dump_json(names))
        items.append(UploadBatch(batch=i, names=records.upload_batch(i), files=len(names)))
    put_record(s3, records.upload_batches, _UPLOAD_BATCHES.dump_json(items, by_alias=True))
    files = sum(b.files for b in items)
    log.info("%d chunk files to upload in %d batches", files, len(items))
    return UploadPlan(
        output=S3Prefix(bucket=store.bucket, prefix=store.key("")),
        manifest=records.upload_batches,
        records=records.as_prefix(),
        import_id=prepared.get("import_id"),
        batches=len(items),
        files=files,
        files_total=int(prepared.get("files", files)),
    )


def _read_names(s3: S3Client, ref: S3Ref) -> list[str]:
    try:
        return _NAMES.validate_json(read_record(s3, ref))
    except Exception as exc:
        raise StorageError(f"cannot read {ref.uri} ({exc})") from None


def upload_batch(
    s3: S3Client, event: UploadFilesInput, *, env: Mapping[str, str], uploader: Uploader | None = None
) -> UploadFilesOutput:
    """Presign and PUT one batch of chunk files (an upload-Map item); files already uploaded are
    skipped. A failed file fails the batch; its list goes to ``upload-failed-<batch>.json``.

    ``uploader`` (default :func:`~nwb2pennsieve.cloud.importer.upload_names`) does the uploads.
    """
    from ..pennsieve import UploadError

    started = time.perf_counter()
    store = S3Store(event.output.bucket, event.output.prefix, s3)
    try:
        names = _read_names(s3, event.batch.names)
        report = (uploader or upload_names)(store, env, names)
    except UploadError as exc:
        failed = RecordsFolder.at(event.records).upload_failed(event.batch.batch)
        record = UploadFailedRecord(batch=event.batch.batch, failed=exc.failed, error=exc.first_reason)
        put_record(s3, failed, record.model_dump_json(indent=1).encode())
        raise exc.with_file(event.source) from None
    except Nwb2PennsieveError as exc:
        raise exc.with_file(event.source) from None
    return UploadFilesOutput(
        batch=event.batch.batch,
        files=report.files,
        uploaded=report.uploaded,
        already_uploaded=report.already_uploaded,
        seconds=round(time.perf_counter() - started, 3),
    )


def _first_failure_reason(s3: S3Client, records: RecordsFolder) -> str:
    """The first reason an upload batch of this execution recorded ("" when none did)."""
    for ref in records.list_upload_failed(s3):
        try:
            reason = UploadFailedRecord.model_validate_json(read_record(s3, ref)).error
        except (ValidationError, StorageError):
            continue
        if reason:
            return reason
    return ""


def complete_import(s3: S3Client, event: CompleteImportInput) -> FinalizeOutput:
    """After the upload Map (or its failure): check that every chunk file is uploaded.

    Raises :class:`~nwb2pennsieve.pennsieve.UploadError` with the count and the list (also written
    to ``import-failed.json`` next to the output) when some are not; a rerun uploads only those.
    """
    from ..pennsieve import UploadError, upload_batches
    from ..pennsieve.records import write_failed

    up = event.upload
    done = FinalizeOutput.model_validate(event.model_dump(include=set(FinalizeOutput.model_fields)))
    if up is None:
        return done
    store = S3Store(up.output.bucket, up.output.prefix, s3)
    missing = [name for batch in upload_batches(store, batch_size=1_000_000_000) for name in batch]
    if missing:
        reason = _first_failure_reason(s3, RecordsFolder.at(up.records))
        if not reason and event.upload_error is not None:
            reason = f"{event.upload_error.error}: {event.upload_error.cause}"[:300]
        write_failed(store, up.import_id, sorted(missing), reason)
        raise UploadError(missing, up.files_total, first_reason=reason).with_file(event.source) from None
    summary = dict(event.import_summary or {})
    summary.update(files_uploaded=up.files, files_already_uploaded=up.files_total - up.files, upload_batches=up.batches)
    log.info(
        "import %s complete: %d files uploaded, %d already there", up.import_id, up.files, up.files_total - up.files
    )
    return done.model_copy(update={"imported": True, "import_summary": summary})
