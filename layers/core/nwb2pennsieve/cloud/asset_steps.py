"""The import steps of the viewer-asset flow (pennsieve-api.md §5; :mod:`nwb2pennsieve.pennsieve.asset_import`).

- Finalize (:func:`prepare_asset_uploads`): package properties, the asset (found finished,
  resumed or created) and its channels, then the chunk files the asset's prefix lacks or holds
  different (its listing's ETags against the output's: both are the bytes' MD5) as upload batches.
- UploadFiles (:func:`upload_asset_batch`): one batch, read from the output bucket with the
  function's role and written to the asset's prefix with the asset's upload credentials, which
  the invocation obtains itself from Pennsieve.
- CompleteImport (:func:`complete_asset_import`): lists the asset's prefix; anything missing fails
  the execution (``import-failed.json``; the asset stays unfinished, a new execution resumes it);
  else registers every chunk's range and marks the asset finished.

The upload credentials never leave the invocation that obtained them: no payload, record or log
holds them. Each step renews them through Pennsieve as they near expiry.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from typing import TYPE_CHECKING

from ..output.storage import S3Store
from ..pennsieve.asset_import import (
    AssetFile,
    PreparedAsset,
    complete_asset,
    credentials_of,
    files_to_upload,
    left_unfinished,
    prepare_asset,
    stopped,
    upload_asset_files,
)
from ..pennsieve.asset_s3 import AssetS3, RemoteObject
from ..pennsieve.assets import AssetPolicy, cleanup_asset
from ..pennsieve.channels import LocalChannel, read_output
from ..pennsieve.client import PennsieveClient
from ..pennsieve.errors import AssetImportError, CredentialsUnavailableError, PennsieveError, UploadError
from ..pennsieve.manifest import remote_file_path
from ..pennsieve.records import load_asset_state, remove_failed, write_failed
from ..pennsieve.target import ImportTarget, TargetSpec, resolve_asset_target
from ..settings import Settings
from .models import AssetRef, CompleteImportInput, FinalizeOutput, ImportSummary, S3Prefix, S3Ref, UploadFilesInput

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from ..pennsieve.http import RetryPolicy

log = logging.getLogger(__name__)

UPLOAD_WORKERS = 64  # threads of one UploadFiles invocation
LIST_THREADS = 16


def pennsieve_client(env: Mapping[str, str], retry: RetryPolicy | None = None, threads: int = 16) -> PennsieveClient:
    """A client with the credentials of ``env`` (the secret's values and the API hosts)."""
    settings = Settings.from_env({**env, "IMPORTER_ENABLED": "true"})
    return PennsieveClient.from_settings(settings, retry=retry, pool_size=threads)


def output_objects(s3: S3Client, output: S3Prefix, channels: list[LocalChannel]) -> dict[str, RemoteObject]:
    """The output's chunk files with their sizes and ETags, listed channel by channel, side by side."""

    def listing(index: int) -> dict[str, RemoteObject]:
        found = {}
        pages = s3.get_paginator("list_objects_v2").paginate(
            Bucket=output.bucket, Prefix=f"{output.prefix}channel-{index:05d}_"
        )
        for page in pages:
            for obj in page.get("Contents", []):
                found[obj["Key"][len(output.prefix) :]] = RemoteObject(int(obj["Size"]), str(obj["ETag"]).strip('"'))
        return found

    out: dict[str, RemoteObject] = {}
    with ThreadPoolExecutor(max_workers=LIST_THREADS) as pool:
        for part in pool.map(listing, [c.index for c in channels]):
            out.update(part)
    return out


def summary_of(prepared: PreparedAsset, **counts: int) -> ImportSummary:
    files = sum(len(c.files) for c in prepared.channels)
    return ImportSummary(
        target=TargetSpec(dataset_id=prepared.target.dataset_id, package_id=prepared.target.package_id,
                          integration_id=prepared.target.integration_id),
        channels=len(prepared.channels), channels_created=prepared.channels_created,
        channels_reused=len(prepared.channels) - prepared.channels_created, files=files, files_registered=0,
        asset_id=prepared.asset_id, asset=prepared.status, **counts,
    )  # fmt: skip


def prepare_asset_uploads(
    s3: S3Client,
    output: S3Prefix,
    env: Mapping[str, str],
    spec: TargetSpec,
    policy: AssetPolicy,
    *,
    source: S3Ref,
    retry: RetryPolicy | None = None,
) -> tuple[ImportSummary, AssetRef | None, list[str], int]:
    """Finalize's part: (the summary, the asset (None: finished already), the chunk files to
    upload, the biggest one's size)."""
    store = S3Store(output.bucket, output.prefix, s3)
    name = source.key[: -len(".nwb")] if source.key.lower().endswith(".nwb") else source.key
    remove_failed(store)  # the list of an earlier execution's missing files
    with closing(pennsieve_client(env, retry)) as client:
        target, lookup = resolve_asset_target(client, spec)
        prepared = prepare_asset(store, target, lookup, client, policy, source=name)
        if prepared.credentials is None:
            return summary_of(prepared), None, [], 0
        try:
            todo, largest = _missing(s3, output, prepared, client)
        except BaseException as exc:
            raise stopped(exc, store, client, target, prepared.asset_id) from None
    asset = AssetRef(id=prepared.asset_id, dataset_id=target.dataset_id, package_id=target.package_id)
    return summary_of(prepared), asset, todo, largest


def _missing(s3: S3Client, output: S3Prefix, prepared: PreparedAsset, client: PennsieveClient) -> tuple[list[str], int]:
    assert prepared.credentials is not None
    if prepared.status == "created":
        _check_renewal(prepared, client)
    local = output_objects(s3, output, prepared.channels)
    files = [AssetFile(f.local, f.remote, local[f.local].size) for f in prepared.files()]
    if prepared.status == "created":
        todo = files
    else:
        asset_s3 = AssetS3(prepared.credentials, threads=LIST_THREADS)
        try:
            todo, _ = files_to_upload(files, list(prepared.mapping.values()), asset_s3,
                                      local_md5=lambda name: local[name].md5())  # fmt: skip
        finally:
            asset_s3.close()
    return [f.local for f in todo], max((f.size for f in files), default=0)


def _check_renewal(prepared: PreparedAsset, client: PennsieveClient) -> None:
    """Each upload map item renews the asset's credentials: fail before any upload when Pennsieve
    cannot, and clean up (a rerun could not do better). A resumed asset's were renewed already."""
    assert prepared.credentials is not None
    try:
        prepared.credentials.refresh(prepared.credentials.current().access_key_id.get_secret_value())
    except CredentialsUnavailableError as exc:
        if not exc.unsupported:
            raise
        done = cleanup_asset(client, prepared.target, prepared.asset_id)
        raise AssetImportError(
            f"{exc.reason}: each upload map item needs it; set LegacyImportFlow=true to import through the"
            f" import manifest; cleaned up ({done})",
            resumable=False,
        ) from None


def upload_asset_batch(
    s3: S3Client,
    event: UploadFilesInput,
    names: list[str],
    env: Mapping[str, str],
    *,
    workers: int = UPLOAD_WORKERS,
    retry: RetryPolicy | None = None,
) -> tuple[int, list[str], str]:
    """PUT the chunk files ``names`` into the asset's prefix: (files, the names that failed, the
    first error)."""
    asset = event.upload.asset
    assert asset is not None
    store = S3Store(event.output.bucket, event.output.prefix, s3)
    state = load_asset_state(store, written=True)
    if state is None or state.asset_id != asset.id:
        raise PennsieveError(f"{store.describe('import-asset.json')} does not name viewer asset {asset.id}")
    files = [AssetFile(n, remote_file_path(state.channels[int(n[8:13])], n), event.upload.max_file_bytes or 0)
             for n in names]  # fmt: skip
    with closing(pennsieve_client(env, retry)) as client:
        target = ImportTarget(dataset_id=asset.dataset_id, package_id=asset.package_id)
        asset_s3 = AssetS3(credentials_of(client, target, asset.id), threads=workers, retry=retry)
        # Where the files go (no credential): deploy.md's Region check reads this line.
        log.info("uploading %d files to viewer asset %s in bucket %s (Region %s)", len(files), asset.id,
                 asset_s3.bucket, asset_s3.region)  # fmt: skip
        try:
            failed, first = upload_asset_files(store, asset_s3, files, workers=workers)
        finally:
            asset_s3.close()
    return len(files), failed, first


def complete_asset_import(
    s3: S3Client,
    event: CompleteImportInput,
    env: Mapping[str, str],
    policy: AssetPolicy,
    *,
    reason: str = "",
    retry: RetryPolicy | None = None,
) -> FinalizeOutput:
    """CompleteImport's part: every chunk file under the asset's prefix (else ``UploadError``,
    ``reason`` its first error), then the ranges and the finished status."""
    up = event.upload
    assert up is not None and up.asset is not None and event.import_summary is not None
    asset = up.asset
    target = ImportTarget(dataset_id=asset.dataset_id, package_id=asset.package_id)
    store = S3Store(up.output.bucket, up.output.prefix, s3)
    state = load_asset_state(store, written=True)
    if state is None or state.asset_id != asset.id:
        raise PennsieveError(f"{store.describe('import-asset.json')} does not name viewer asset {asset.id}")
    channels = read_output(store)
    prepared = PreparedAsset(target, asset.id, "resumed", channels, state.channels)
    local = output_objects(s3, up.output, channels)
    started = time.monotonic()
    with closing(pennsieve_client(env, retry)) as client:
        try:
            asset_s3 = AssetS3(credentials_of(client, target, asset.id), threads=LIST_THREADS, retry=retry)
            try:
                remote = asset_s3.list_objects(f"{node}_" for node in sorted(set(state.channels.values())))
            finally:
                asset_s3.close()
            files = prepared.files()
            missing = [f.local for f in files if f.remote not in remote or remote[f.remote].size != local[f.local].size]
            if missing:
                write_failed(store, asset.id, missing, reason)
                raise UploadError(missing, len(files), first_reason=reason, then=left_unfinished(asset.id))
            created, known = complete_asset(client, target, asset.id, prepared.chunks(), policy)
        except BaseException as exc:
            raise stopped(exc, store, client, target, asset.id) from None
    log.info("viewer asset %s finished in %.1f s: %d ranges registered, %d known", asset.id,
             time.monotonic() - started, created, known)  # fmt: skip
    summary = event.import_summary.model_copy(
        update={"files_uploaded": up.files, "files_already_uploaded": up.files_total - up.files,
                "upload_batches": up.batches, "ranges_registered": created, "ranges_known": known}
    )  # fmt: skip
    done = FinalizeOutput.model_validate(event.model_dump(include=set(FinalizeOutput.model_fields)))
    return done.model_copy(update={"imported": True, "import_summary": summary})
