"""The viewer-asset import (pennsieve-api.md §5), rerun-safe, in steps the cloud can run apart:

:func:`prepare_asset` (AWS: Finalize): package properties, find/decide/create or resume the
asset (:mod:`.assets`), its channels; :func:`files_to_upload` (Finalize): what the asset's prefix
lacks or holds different; :func:`upload_asset_files` (each UploadFiles item): PUT them with the
asset's credentials; :func:`complete_asset` (CompleteImport): register every chunk's range, mark
the asset finished. :func:`import_store_assets` runs them all in one process (``nwb2pennsieve
import``, ``run``).

A failure after the asset exists ends in one :class:`AssetImportError` line saying what became
of the asset: left unfinished for a rerun to resume (network, 5xx, credentials Pennsieve could
not renew, failed uploads, an interruption), or, when a rerun could not resume it (Pennsieve
refused the channels or the ranges), cleaned up: the channels this import created, then the asset.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict

from ..errors import Nwb2PennsieveError
from ..output.storage import Store
from .asset_s3 import AssetCredentials, AssetS3, ListingRefusedError, RemoteObject
from .assets import (
    AssetDecision,
    AssetPolicy,
    channel_owners,
    cleanup_asset,
    create_asset,
    decide,
    find_assets,
    fingerprint,
    finish_asset,
    marker,
)
from .channels import LocalChannel, ensure_channels, match_channels, read_output
from .client import PennsieveClient
from .errors import (
    AssetImportError,
    ChannelConflictError,
    ChannelCreateError,
    ChannelError,
    CredentialsUnavailableError,
    PennsieveError,
    PennsieveHTTPError,
    RangesRejectedError,
    UploadError,
    redact,
)
from .http import RetryPolicy
from .manifest import remote_file_path
from .models import RangeChunk
from .ranges import range_chunks, register_ranges
from .records import (
    ASSET_STATE_NAME,
    AssetState,
    import_claim,
    load_asset_state,
    remove_failed,
    save_asset_state,
    write_failed,
)
from .target import ImportTarget
from .uploads import QUEUED_PER_THREAD, Tally, bounded

log = logging.getLogger(__name__)

MEMORY_BUDGET = 512 * 1_048_576  # bytes of chunk files held by the upload threads at once
MD5_THREADS = 16


@dataclass(frozen=True)
class AssetFile:
    """A chunk file to upload: its name in the output, its name under the asset's prefix, its size."""

    local: str
    remote: str
    size: int = 0


@dataclass
class PreparedAsset:
    """The asset exists (or was finished already) and so do its channels. Holds the asset's
    credentials, so it never goes into a payload or a record: the cloud steps pass ids."""

    target: ImportTarget
    asset_id: str
    status: Literal["created", "resumed", "already finished"]
    channels: list[LocalChannel]
    mapping: dict[int, str] = field(default_factory=dict)
    channels_created: int = 0
    credentials: AssetCredentials | None = None

    def files(self) -> list[AssetFile]:
        return [AssetFile(n, remote_file_path(self.mapping[c.index], n)) for c in self.channels for n in c.files]

    def chunks(self) -> list[RangeChunk]:
        return range_chunks(self.channels, self.mapping)


class AssetImportResult(BaseModel):
    """A small summary of an asset-flow import (no secret, no file list)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    target: ImportTarget
    asset_id: str
    asset: Literal["created", "resumed", "already finished"]
    channels: int
    channels_created: int
    files: int
    files_uploaded: int
    files_already_uploaded: int
    ranges_registered: int
    ranges_known: int
    seconds: float

    def summary_line(self) -> str:
        if self.asset == "already finished":
            return f"already imported into {self.target.package_id}: viewer asset {self.asset_id} is finished"
        return (
            f"imported {self.files} files of {self.channels} channels into {self.target.package_id} (viewer asset"
            f" {self.asset_id} {self.asset}; {self.channels_created} channels created,"
            f" {self.channels - self.channels_created} reused; {self.files_uploaded} files uploaded,"
            f" {self.files_already_uploaded} already there; {self.ranges_registered} ranges registered,"
            f" {self.ranges_known} already known) in {self.seconds:.1f} s"
        )


def credentials_of(client: PennsieveClient, target: ImportTarget, asset_id: str) -> AssetCredentials:
    """The asset's credentials, each renewal a call of Pennsieve's refresh route."""
    return AssetCredentials(lambda: client.refresh_asset_credentials(asset_id, target.dataset_id), asset_id=asset_id)


def prepare_asset(
    store: Store,
    target: ImportTarget,
    lookup: Sequence[str],
    client: PennsieveClient,
    policy: AssetPolicy,
    *,
    source: str,
    sleep_s: float = 1.0,
) -> PreparedAsset:
    """Properties, the asset (found finished, resumed or created) and its channels; under the
    import's claim, so two runs on one output never create two assets.

    Everything that can be checked before creating anything is: the output, the assets found,
    channels of the package that would clash.
    """
    channels = read_output(store)
    if not any(ch.files for ch in channels):
        raise PennsieveError("nothing to import: no chunk files and channel metadata", file=store.describe(""))
    output = fingerprint(channels)
    with import_claim(store):
        client.set_timeseries_properties(target.package_id)
        state = load_asset_state(store)
        found = find_assets(client, target.dataset_id, lookup, policy)
        if state is not None and (state.target.dataset_id, state.target.package_id) != (
            target.dataset_id,
            target.package_id,
        ):
            log.warning("this output was imported into %s before; now into %s", state.target.package_id,
                        target.package_id)  # fmt: skip
            state = None  # that import is not this one's to resume or clean up
        elif state is not None and state.asset_id not in {a.id for a in found}:
            # Deleted by someone: the channels this output's import tied to it are ours to remove.
            log.warning("viewer asset %s of an earlier run is gone: removing its channels", state.asset_id)
            cleanup_asset(client, state.target, state.asset_id)
            state = None
        decision = decide(found, state, source=source, output=output, policy=policy, package=target.package_id)
        if decision.action == "finished":
            assert decision.asset is not None
            log.info("viewer asset %s is %s: nothing to do", decision.asset.id, decision.asset.status)
            return PreparedAsset(target, decision.asset.id, "already finished", channels)
        asset_id, credentials, decision = _open_asset(store, target, lookup, client, policy, channels, decision,
                                                      source=source, output=output, state=state)  # fmt: skip
        state = load_asset_state(store)
        assert state is not None
        try:
            mapping, created = _asset_channels(store, client, state, channels, sleep_s)
        except BaseException as exc:
            raise stopped(exc, store, client, target, asset_id) from None
    status: Literal["created", "resumed"] = "created" if decision.action == "create" else "resumed"
    return PreparedAsset(target, asset_id, status, channels, mapping, created, credentials)


def _open_asset(
    store: Store,
    target: ImportTarget,
    lookup: Sequence[str],
    client: PennsieveClient,
    policy: AssetPolicy,
    channels: list[LocalChannel],
    decision: AssetDecision,
    *,
    source: str,
    output: str,
    state: AssetState | None,
) -> tuple[str, AssetCredentials, AssetDecision]:
    """Resume the decided asset (its credentials renewed) or create one; record it."""
    for stale in decision.replace:
        log.warning("cleaning up viewer asset %s (%s)", stale.id, decision.why)
        cleanup_asset(client, target, stale.id)
    if decision.action == "resume":
        asset_id = decision.asset.id if decision.asset is not None else ""
        credentials = credentials_of(client, target, asset_id)
        try:
            credentials.current()
        except CredentialsUnavailableError as exc:
            if not exc.unsupported:
                raise AssetImportError(f"{exc.reason}; {left_unfinished(asset_id)}", resumable=True) from None
            log.warning("%s: viewer asset %s cannot be resumed; cleaning it up and starting over", exc.reason, asset_id)
            cleanup_asset(client, target, asset_id)
            decision = AssetDecision("create")
        else:
            if state is None or state.asset_id != asset_id:
                state = AssetState(target=target, source=source, fingerprint=output, asset_id=asset_id)
            save_asset_state(store, state)
            return asset_id, credentials, decision
    remote = client.list_channels(target.package_id)
    channel_owners(None, target.package_id)(match_channels(channels, remote)[0], remote)
    asset, initial = create_asset(client, target, lookup, policy, marker(source, output))
    save_asset_state(store, AssetState(target=target, source=source, fingerprint=output, asset_id=asset.id))
    credentials = credentials_of(client, target, asset.id)
    if initial is not None:
        credentials = AssetCredentials(credentials._fetch, initial, asset_id=asset.id)
    return asset.id, credentials, decision


def _asset_channels(
    store: Store, client: PennsieveClient, state: AssetState, channels: list[LocalChannel], sleep_s: float
) -> tuple[dict[int, str], int]:
    def save(mapping: dict[int, str]) -> None:
        state.channels = dict(mapping)
        save_asset_state(store, state)

    package = state.target.package_id
    return ensure_channels(client, package, channels, state.channels, save, sleep_s, asset_id=state.asset_id,
                           check=channel_owners(state.asset_id, package))  # fmt: skip


def left_unfinished(asset_id: str) -> str:
    return f"viewer asset {asset_id} is left unfinished: rerun to resume"


def resumable(exc: BaseException) -> bool:
    """Whether a rerun can resume the asset after ``exc`` (else it is cleaned up)."""
    if isinstance(exc, ChannelConflictError):
        return True  # once that channel is dealt with, the asset can be resumed
    if isinstance(exc, RangesRejectedError):
        return False
    if isinstance(exc, ChannelCreateError):
        return exc.retryable
    if isinstance(exc, ChannelError):
        return False
    if isinstance(exc, PennsieveHTTPError) and exc.status is not None:
        return exc.retryable or exc.status in (401, 403, 404, 408, 409)
    return True


def stopped(
    exc: BaseException, store: Store, client: PennsieveClient, target: ImportTarget, asset_id: str
) -> BaseException:
    """The error that ends an import stopped by ``exc`` once the asset exists: resumable ones
    leave the asset unfinished, the others clean up what this import created."""
    if isinstance(exc, AssetImportError | UploadError):
        return exc  # it says already what became of the asset
    if not isinstance(exc, Exception):
        log.warning("interrupted: viewer asset %s is left unfinished: rerun to resume", asset_id)
        return exc
    reason = exc.one_line() if isinstance(exc, Nwb2PennsieveError) else redact(f"{type(exc).__name__}: {exc}")
    if resumable(exc):
        return AssetImportError(
            f"{reason}; viewer asset {asset_id} is left unfinished: rerun to resume", resumable=True
        )
    done = cleanup_asset(client, target, asset_id)
    if store.exists(ASSET_STATE_NAME):
        store.delete(ASSET_STATE_NAME)
    return AssetImportError(f"{reason}; cleaned up ({done}): rerun to import again", resumable=False)


def files_to_upload(
    files: Sequence[AssetFile],
    node_ids: Sequence[str],
    s3: AssetS3,
    *,
    local_md5: Callable[[str], str | None],
) -> tuple[list[AssetFile], int]:
    """(the files the asset's prefix lacks or holds different, the number it has already).

    "Different": another size, or an MD5 ETag unlike the local bytes' MD5. Where the bucket's
    ETags are no MD5 (KMS, multipart), equal sizes count as the same.
    """
    try:
        remote = s3.list_objects(f"{node}_" for node in sorted(set(node_ids)))
    except ListingRefusedError as exc:
        log.warning("%s: uploading every file", exc.reason)
        return list(files), 0
    to_compare = [f for f in files if f.remote in remote and remote[f.remote].size == f.size]
    with ThreadPoolExecutor(max_workers=MD5_THREADS) as pool:
        sums = dict(
            zip(
                (f.local for f in to_compare),
                pool.map(lambda f: _md5_if(remote[f.remote], f, local_md5), to_compare),
                strict=True,
            )
        )
    same = {f.local for f in to_compare if sums[f.local] is None or sums[f.local] == remote[f.remote].md5()}
    if any(remote[f.remote].md5() is None for f in to_compare):
        log.info("the asset's bucket does not return MD5 ETags: files already there are compared by size")
    todo = [f for f in files if f.local not in same]
    log.info("%d of %d files are already under the asset's prefix", len(files) - len(todo), len(files))
    return todo, len(files) - len(todo)


def _md5_if(remote: RemoteObject, f: AssetFile, local_md5: Callable[[str], str | None]) -> str | None:
    return local_md5(f.local) if remote.md5() is not None else None


def upload_asset_files(
    store: Store, s3: AssetS3, files: Sequence[AssetFile], *, workers: int = 64, max_consecutive_failures: int = 200
) -> tuple[list[str], str]:
    """PUT every file under the asset's prefix with ``workers`` threads (fewer for big files:
    their bytes are held in memory); returns (the local names that failed, the first error).
    Credentials Pennsieve cannot renew stop the pool: the files not attempted count as failed."""
    if not files:
        return [], ""
    largest = max((f.size for f in files), default=0)
    threads = max(1, min(workers, len(files), max(4, MEMORY_BUDGET // max(1, largest))))
    tally = Tally(len(files), max_consecutive_failures)

    def upload(f: AssetFile) -> bool:
        if tally.stop.is_set():
            return False
        try:
            s3.put(f.remote, store.read_bytes(f.local))
        except Exception as exc:  # every failure is counted and reported, none aborts the others
            tally.failure(f.local, exc)
            return True
        tally.success()
        return True

    entries = iter(files)
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="asset-upload") as pool:
        try:
            not_attempted = bounded(pool, upload, entries, threads * QUEUED_PER_THREAD, tally.stop)
        except BaseException:
            tally.stop.set()
            raise
    if tally.stop.is_set():
        tally.failed.extend([*not_attempted, *(f.local for f in entries)])
    return tally.failed, tally.errors[0] if tally.errors else ""


def complete_asset(
    client: PennsieveClient, target: ImportTarget, asset_id: str, chunks: Sequence[RangeChunk], policy: AssetPolicy
) -> tuple[int, int]:
    """Register every chunk's range (those known already are skipped), then mark the asset
    finished. Returns (ranges registered now, ranges already known)."""
    created, known = register_ranges(client, target.package_id, target.dataset_id, asset_id, chunks)
    finish_asset(client, target, asset_id, policy)
    log.info("viewer asset %s is %s", asset_id, policy.finished_status)
    return created, known


def _local_md5(store: Store) -> Callable[[str], str | None]:
    return lambda name: hashlib.md5(store.read_bytes(name)).hexdigest()


def import_store_assets(
    store: Store,
    target: ImportTarget,
    lookup: Sequence[str],
    client: PennsieveClient,
    policy: AssetPolicy,
    *,
    source: str,
    workers: int = 64,
    retry: RetryPolicy | None = None,
    sleep_s: float = 1.0,
) -> AssetImportResult:
    """The whole asset-flow import of ``store`` in this process; rerun-safe (see the module)."""
    t0 = time.monotonic()
    prepared = prepare_asset(store, target, lookup, client, policy, source=source, sleep_s=sleep_s)
    counts = {"files_uploaded": 0, "files_already_uploaded": 0, "ranges_registered": 0, "ranges_known": 0}
    if prepared.credentials is not None:
        try:
            counts = _upload_and_complete(store, prepared, client, policy, workers=workers, retry=retry)
        except BaseException as exc:
            raise stopped(exc, store, client, target, prepared.asset_id) from None
    return AssetImportResult(
        target=target, asset_id=prepared.asset_id, asset=prepared.status, channels=len(prepared.channels),
        channels_created=prepared.channels_created, files=sum(len(c.files) for c in prepared.channels),
        seconds=round(time.monotonic() - t0, 3), **counts,
    )  # fmt: skip


def _upload_and_complete(
    store: Store,
    prepared: PreparedAsset,
    client: PennsieveClient,
    policy: AssetPolicy,
    *,
    workers: int,
    retry: RetryPolicy | None,
) -> dict[str, int]:
    assert prepared.credentials is not None
    files = [AssetFile(f.local, f.remote, store.size(f.local)) for f in prepared.files()]
    s3 = AssetS3(prepared.credentials, threads=workers, retry=retry)
    try:
        if prepared.status == "created":  # a new asset's prefix is empty
            todo, already = files, 0
        else:
            todo, already = files_to_upload(files, list(prepared.mapping.values()), s3, local_md5=_local_md5(store))
        log.info("uploading %d files with %d threads (%d already there)", len(todo), workers, already)
        failed, first = upload_asset_files(store, s3, todo, workers=workers)
    finally:
        s3.close()
    if failed:
        write_failed(store, prepared.asset_id, failed, first)
        raise UploadError(failed, len(files), first_reason=first, then=left_unfinished(prepared.asset_id))
    remove_failed(store)
    created, known = complete_asset(client, prepared.target, prepared.asset_id, prepared.chunks(), policy)
    state = load_asset_state(store)
    if state is not None:
        save_asset_state(store, state.model_copy(update={"finished": True}))
    return {"files_uploaded": len(todo), "files_already_uploaded": already, "ranges_registered": created,
            "ranges_known": known}  # fmt: skip
