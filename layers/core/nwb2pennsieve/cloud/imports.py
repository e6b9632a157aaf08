"""The import steps and the cloud's link to the Pennsieve importer and to the credentials secret.

After Finalize's checks, prepare the Pennsieve import and write the upload Map's batches
(:func:`prepare_uploads`); upload one batch (:func:`upload_batch`, UploadFiles); check that every
chunk file is uploaded and complete the import (:func:`complete_import`, CompleteImport). Each
runs the flow the stack's settings choose (:class:`ImportContext`): the viewer-asset flow
(:mod:`.asset_steps`), or with ``LEGACY_IMPORT_FLOW`` the import manifest (here:
:func:`prepare_output`: target, channels, manifest; :func:`upload_names`: presign and PUT).
Plan chooses the import target before any conversion work (:func:`choose_import_target`).

Records of one object version, in its records folder (:mod:`.records`): the upload batches
(``upload-batches.json``, ``upload-batch-<n>.json``: the names of one upload batch) and
``upload-failed-<n>.json`` (the files a failed upload batch could not upload). The importer's own
import records live next to the output (:mod:`nwb2pennsieve.pennsieve.records`).

The credentials live in a Secrets Manager secret whose ARN the stack passes as
``PENNSIEVE_SECRET_ARN``; the secret is a JSON object with ``PENNSIEVE_API_KEY`` and
``PENNSIEVE_API_SECRET``, or ``SESSION_TOKEN`` (and ``REFRESH_TOKEN``). The target (an integration
id, or a dataset and a package id) is not a secret: it comes with each execution. They are
read at import time only (Powertools' parameters utility, cached for :data:`SECRET_MAX_AGE_SECONDS`
across warm invocations), go to the importer as an environment mapping and are never logged or
returned.

The Pennsieve package is imported when first needed: a conversion without import never loads it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from contextlib import closing
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aws_lambda_powertools.utilities import parameters
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from ..errors import ConfigurationError, InvalidInputError, Nwb2PennsieveError, StorageError
from ..output.storage import S3Store, Store
from ..pennsieve.target import TargetSpec
from ..plan.models import Plan
from ..settings import DEFAULT_ASSET_FINISHED_STATUS, DEFAULT_ASSET_NAME, DEFAULT_ASSET_TYPE
from .models import (
    AssetRef,
    CompleteImportInput,
    FinalizeOutput,
    ImportSummary,
    Overrides,
    S3Prefix,
    S3Ref,
    UploadBatch,
    UploadFilesInput,
    UploadFilesOutput,
    UploadPlan,
)
from .records import RecordsFolder, put_record, read_record
from .settings import DEFAULT_UPLOAD_BATCH_FILES

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from ..pennsieve.assets import AssetPolicy
    from ..pennsieve.http import RetryPolicy
    from ..pennsieve.importer import UploadReport
    from .settings import CloudSettings

log = logging.getLogger(__name__)

UPLOAD_WORKERS = 64  # threads of one UploadFiles invocation (what bench/bench_import.py measures)
SECRET_KEYS = ("PENNSIEVE_API_KEY", "PENNSIEVE_API_SECRET", "SESSION_TOKEN", "REFRESH_TOKEN")
# A warm function reads the secret again after this long: a rotated key is picked up within minutes.
SECRET_MAX_AGE_SECONDS = 300


def credentials_env(secret_arn: str, *, api_host: str, api_host2: str) -> dict[str, str]:
    """The importer's environment: API hosts plus the credentials read from the secret."""
    if not secret_arn:
        raise ConfigurationError("IMPORTER_ENABLED is true but PENNSIEVE_SECRET_ARN is not set")
    try:
        values: object = parameters.get_secret(secret_arn, transform="json", max_age=SECRET_MAX_AGE_SECONDS)
    except Exception as exc:
        # The exception text never holds the secret's value; its type and the ARN are enough.
        raise ConfigurationError(
            f"cannot read the Pennsieve credentials secret {secret_arn} ({type(exc).__name__})"
        ) from None
    if not isinstance(values, dict):
        raise ConfigurationError(f"the secret {secret_arn} is not a JSON object")
    env = {k: str(values[k]) for k in SECRET_KEYS if values.get(k)}
    if not env:
        raise ConfigurationError(f"the secret {secret_arn} holds none of {', '.join(SECRET_KEYS)}")
    env["PENNSIEVE_API_HOST"] = api_host
    env["PENNSIEVE_API_HOST2"] = api_host2
    return env


def _no_env() -> dict[str, str]:
    return {}


@dataclass(frozen=True)
class ImportContext:
    """What the import steps take from the stack's settings: the flow, the asset's name, type and
    finished status, the upload batch size; and ``env``, the credentials (read from the secret
    only when a step calls it, never kept in a payload)."""

    env: Callable[[], Mapping[str, str]] = _no_env
    legacy: bool = False
    asset: tuple[str, str, str] = (DEFAULT_ASSET_NAME, DEFAULT_ASSET_TYPE, DEFAULT_ASSET_FINISHED_STATUS)
    batch_files: int = DEFAULT_UPLOAD_BATCH_FILES

    @property
    def policy(self) -> AssetPolicy:
        """The asset's name, type and finished status (the importer is loaded only now)."""
        from ..pennsieve.assets import AssetPolicy

        return AssetPolicy(*self.asset)

    @classmethod
    def of(cls, settings: CloudSettings) -> ImportContext:
        def env() -> dict[str, str]:
            return credentials_env(
                settings.pennsieve_secret_arn,
                api_host=settings.pennsieve_api_host,
                api_host2=settings.pennsieve_api_host2,
            )

        return cls(
            env=env,
            legacy=settings.legacy_import_flow,
            asset=(settings.asset_name, settings.asset_type, settings.asset_finished_status),
            batch_files=settings.upload_batch_files,
        )


def choose_import_target(s3: S3Client, source: S3Ref, overrides: Overrides) -> TargetSpec:
    """The import target: the execution input's ids, else the NWB object's S3 user metadata
    (``x-amz-meta-integration-id``, or ``dataset-id`` + ``package-id``).

    Called by Plan before any conversion work; raises a one-line error when there is none.
    """
    from ..pennsieve.target import choose_target_spec, target_spec_from_s3_object

    given = TargetSpec(
        integration_id=overrides.integration_id, dataset_id=overrides.dataset_id, package_id=overrides.package_id
    )
    try:
        return choose_target_spec(given, target_spec_from_s3_object(s3, source.bucket, source.key))
    except Nwb2PennsieveError as exc:
        raise exc.with_file(source.uri) from None


def prepare_output(
    plan: Plan, store: Store, env: Mapping[str, str], target: TargetSpec | None, *, retry: RetryPolicy | None = None
) -> ImportSummary:
    """Resolve ``target``, then create or match the channels and register every chunk file in the
    import manifest (:func:`~nwb2pennsieve.pennsieve.prepare_import`); nothing is uploaded yet.

    Returns the small, secret-free summary of the :class:`~nwb2pennsieve.pennsieve.PreparedImport`.
    Rerun-safe: the importer records what it did in the store.
    """
    from ..pennsieve import PennsieveClient, prepare_import, resolve_target
    from ..settings import Settings

    if target is None:
        raise ConfigurationError("the importer is enabled but the plan has no import target", file=plan.source)
    settings = Settings.from_env({**env, "IMPORTER_ENABLED": "true"})
    try:
        with closing(PennsieveClient.from_settings(settings, retry=retry, pool_size=16)) as client:
            resolved = resolve_target(client, target)
            prepared = prepare_import(store, resolved, client)
    except Nwb2PennsieveError as exc:
        raise exc.with_file(plan.source) from None
    return ImportSummary.of_prepared(prepared)


def upload_names(
    store: Store,
    env: Mapping[str, str],
    names: list[str],
    *,
    workers: int = UPLOAD_WORKERS,
    retry: RetryPolicy | None = None,
) -> UploadReport:
    """Presign and PUT the chunk files ``names`` of a prepared store (one upload-Map item).

    Returns the :class:`~nwb2pennsieve.pennsieve.UploadReport`; raises
    :class:`~nwb2pennsieve.pennsieve.UploadError` listing the files that failed.
    """
    from ..pennsieve import PennsieveClient, upload_files
    from ..settings import Settings

    settings = Settings.from_env({**env, "IMPORTER_ENABLED": "true"})
    with closing(PennsieveClient.from_settings(settings, retry=retry, pool_size=max(workers, 16))) as client:
        return upload_files(store, client, names=names, workers=workers)


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
    context: ImportContext,
    target: TargetSpec | None,
    *,
    source: S3Ref,
) -> tuple[ImportSummary, UploadPlan | None]:
    """Prepare the import of ``output`` and write the upload batches: (the prepared import's
    summary, the upload Map's plan; None when the asset was finished already: nothing to do)."""
    env = context.env()
    if target is None:
        raise ConfigurationError("the importer is enabled but the plan has no import target", file=plan.source)
    if context.legacy:
        store = S3Store(output.bucket, output.prefix, s3)
        summary = prepare_output(plan, store, env, target)
        return summary, plan_uploads(s3, store, plan_ref, summary, batch_size=context.batch_files)
    from .asset_steps import prepare_asset_uploads

    try:
        summary, asset, names, largest = prepare_asset_uploads(s3, output, env, target, context.policy, source=source)
    except Nwb2PennsieveError as exc:
        raise exc.with_file(plan.source) from None
    if asset is None:
        return summary, None
    records = RecordsFolder.of_plan(plan_ref)
    batches = [names[i : i + context.batch_files] for i in range(0, len(names), context.batch_files)]
    plan_out = write_upload_batches(s3, records, batches, output=output, files_total=summary.files)
    return summary, plan_out.model_copy(update={"asset": asset, "max_file_bytes": largest})


def plan_uploads(
    s3: S3Client, store: S3Store, plan_ref: S3Ref, prepared: ImportSummary, *, batch_size: int
) -> UploadPlan:
    """The legacy flow's upload Map items: the chunk files not uploaded yet, ``batch_size`` names
    per upload batch. A rerun of a complete import writes none."""
    from ..pennsieve import upload_batches
    from ..pennsieve.records import remove_failed

    remove_failed(store)
    batches = upload_batches(store, batch_size=batch_size)
    output = S3Prefix(bucket=store.bucket, prefix=store.key(""))
    plan_out = write_upload_batches(
        s3, RecordsFolder.of_plan(plan_ref), batches, output=output, files_total=prepared.files
    )
    return plan_out.model_copy(update={"import_id": prepared.import_id})


def write_upload_batches(
    s3: S3Client, records: RecordsFolder, batches: list[list[str]], *, output: S3Prefix, files_total: int
) -> UploadPlan:
    """Write ``upload-batch-<n>.json`` for each batch and ``upload-batches.json`` listing them (the
    ItemReader's list), replacing those of an earlier execution of this version."""
    for ref in [*records.list_upload_failed(s3), *records.list_upload_batches(s3)]:
        s3.delete_object(Bucket=ref.bucket, Key=ref.key)
    items = []
    for i, names in enumerate(batches):
        put_record(s3, records.upload_batch(i), _NAMES.dump_json(names))
        items.append(UploadBatch(batch=i, names=records.upload_batch(i), files=len(names)))
    put_record(s3, records.upload_batches, _UPLOAD_BATCHES.dump_json(items, by_alias=True))
    files = sum(b.files for b in items)
    log.info("%d chunk files to upload in %d batches", files, len(items))
    return UploadPlan(
        output=output,
        upload_batches=records.upload_batches,
        records=records.as_prefix(),
        batches=len(items),
        files=files,
        files_total=files_total,
    )


def _read_names(s3: S3Client, ref: S3Ref) -> list[str]:
    try:
        return _NAMES.validate_json(read_record(s3, ref))
    except Exception as exc:
        raise StorageError(f"cannot read {ref.uri} ({exc})") from None


def upload_batch(
    s3: S3Client, event: UploadFilesInput, context: ImportContext, *, uploader: Uploader | None = None
) -> UploadFilesOutput:
    """Upload one batch of chunk files (an upload-Map item): into the viewer asset's prefix, or in
    the legacy flow presigned and PUT (``uploader``, default :func:`upload_names`; files already
    uploaded are skipped). A failed file fails the batch; its list goes to ``upload-failed-<batch>.json``.
    """
    from ..pennsieve import UploadError

    started = time.perf_counter()
    store = S3Store(event.output.bucket, event.output.prefix, s3)
    try:
        names = _read_names(s3, event.batch.names)
        if event.upload.asset is not None:
            from .asset_steps import upload_asset_batch

            files, failed, first = upload_asset_batch(s3, event, names, context.env())
            if failed:
                raise UploadError(failed, files, first_reason=first, then=_rerun(event.upload.asset))
            report = (files, files, 0)
        else:
            done = (uploader or upload_names)(store, context.env(), names)
            report = (done.files, done.uploaded, done.already_uploaded)
    except UploadError as exc:
        failed_ref = RecordsFolder.at(event.records).upload_failed(event.batch.batch)
        record = UploadFailedRecord(batch=event.batch.batch, failed=exc.failed, error=exc.first_reason)
        put_record(s3, failed_ref, record.model_dump_json(indent=1).encode())
        raise exc.with_file(event.source) from None
    except Nwb2PennsieveError as exc:
        raise exc.with_file(event.source) from None
    return UploadFilesOutput(
        batch=event.batch.batch,
        files=report[0],
        uploaded=report[1],
        already_uploaded=report[2],
        seconds=round(time.perf_counter() - started, 3),
    )


def _rerun(asset: AssetRef) -> str:
    return f"viewer asset {asset.id} is left unfinished: rerun to resume"


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


def complete_import(s3: S3Client, event: CompleteImportInput, context: ImportContext | None = None) -> FinalizeOutput:
    """After the upload Map (or its failure): check that every chunk file is uploaded; in the asset
    flow then register the chunks' ranges and finish the asset.

    Raises :class:`~nwb2pennsieve.pennsieve.UploadError` with the count and the list (also written
    to ``import-failed.json`` next to the output) when some are not; a rerun uploads only those.
    """
    from ..pennsieve import UploadError, upload_batches
    from ..pennsieve.records import write_failed

    up = event.upload
    done = FinalizeOutput.model_validate(event.model_dump(include=set(FinalizeOutput.model_fields)))
    if up is None:
        return done
    if event.import_summary is None:
        raise InvalidInputError("CompleteImport's input has an upload plan but no importSummary", file=event.source)
    reason = _first_failure_reason(s3, RecordsFolder.at(up.records))
    if not reason and event.upload_error is not None:
        reason = f"{event.upload_error.error}: {event.upload_error.cause}"[:300]
    if up.asset is not None:
        from .asset_steps import complete_asset_import

        context = context or ImportContext()
        try:
            return complete_asset_import(s3, event, context.env(), context.policy, reason=reason)
        except Nwb2PennsieveError as exc:
            raise exc.with_file(event.source) from None
    store = S3Store(up.output.bucket, up.output.prefix, s3)
    missing = [name for batch in upload_batches(store, batch_size=1_000_000_000) for name in batch]
    if missing:
        write_failed(store, up.import_id, sorted(missing), reason)
        raise UploadError(missing, up.files_total, first_reason=reason).with_file(event.source) from None
    summary = event.import_summary.model_copy(
        update={
            "files_uploaded": up.files,
            "files_already_uploaded": up.files_total - up.files,
            "upload_batches": up.batches,
        }
    )
    log.info(
        "import %s complete: %d files uploaded, %d already there", up.import_id, up.files, up.files_total - up.files
    )
    return done.model_copy(update={"imported": True, "import_summary": summary})
