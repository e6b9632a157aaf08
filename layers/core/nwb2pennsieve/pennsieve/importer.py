"""Import a converter output (a :class:`~nwb2pennsieve.output.storage.Store`) into Pennsieve, rerun-safely.

Order (pennsieve-api.md §4): package properties → existing channels → match or create each
channel (:mod:`.channels`) → batched import manifest (:mod:`.manifest`) → presign + PUT of every
file, in parallel (:mod:`.uploads`).

What was done is kept in the store next to the output (the import records, :mod:`.records`), so
a rerun for the same target reuses everything and only completes what is missing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, Field

from ..output.storage import Store
from .channels import LocalChannel, read_output, sync_channels
from .client import PennsieveClient
from .errors import PennsieveError, UploadError
from .manifest import MANIFEST_MAX_BYTES, MANIFEST_MAX_FILES, file_entries, named_entries, register_files
from .records import (
    UPLOADED_PREFIX,
    import_claim,
    load_state,
    read_prepared_state,
    recorded_keys,
    remove_failed,
    write_failed,
)
from .target import ImportTarget
from .uploads import upload_all

log = logging.getLogger(__name__)


class PreparedImport(BaseModel):
    """Channels exist and every file is in the import manifest; uploads may start (also in parallel
    Lambdas: see :func:`upload_files`). Small and secret-free: fit for a state-machine payload."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    target: ImportTarget
    import_id: str | None
    channels: int
    channels_created: int
    channels_reused: int
    files: int
    files_registered: int


class ImportResult(PreparedImport):
    """A small summary, safe for logs and state-machine payloads (no secret, no file list)."""

    files_uploaded: int
    files_already_uploaded: int
    seconds: float

    @property
    def files_per_second(self) -> float:
        return self.files_uploaded / self.seconds if self.seconds > 0 else 0.0

    def summary_line(self) -> str:
        return (
            f"imported {self.files} files of {self.channels} channels into {self.target.package_id} "
            f"({self.channels_created} channels created, {self.channels_reused} reused; "
            f"{self.files_uploaded} files uploaded, {self.files_already_uploaded} already there) "
            f"in {self.seconds:.1f} s"
        )


class UploadReport(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    files: int = Field(description="files asked for")
    uploaded: int
    already_uploaded: int
    seconds: float


def prepare_import(
    store: Store,
    target: ImportTarget,
    client: PennsieveClient,
    *,
    manifest_max_files: int = MANIFEST_MAX_FILES,
    manifest_max_bytes: int = MANIFEST_MAX_BYTES,
    retry_sleep_s: float = 1.0,
) -> PreparedImport:
    """Package properties, channels (matched or created) and the batched manifest; rerun-safe.

    Holds the import's claim (:func:`~.records.import_claim`) throughout: a second run preparing
    the same output at the same time gets :class:`ImportBusyError` instead of creating channels
    or registering files twice; once the first is done, it reuses what the first created.
    """
    channels = read_output(store)
    if not channels:
        raise PennsieveError("nothing to import: no channel-*.metadata.json", file=store.describe(""))
    with import_claim(store):
        return _prepare_claimed(
            store, target, client, channels, manifest_max_files=manifest_max_files,
            manifest_max_bytes=manifest_max_bytes, retry_sleep_s=retry_sleep_s,
        )  # fmt: skip


def _prepare_claimed(
    store: Store,
    target: ImportTarget,
    client: PennsieveClient,
    channels: list[LocalChannel],
    *,
    manifest_max_files: int,
    manifest_max_bytes: int,
    retry_sleep_s: float,
) -> PreparedImport:
    state = load_state(store, target)
    n_files = sum(len(c.files) for c in channels)
    log.info(
        "importing %d channels, %d files from %s into dataset %s package %s",
        len(channels), n_files, store.describe(""), target.dataset_id, target.package_id,
    )  # fmt: skip

    client.set_timeseries_properties(target.package_id)
    created, reused = sync_channels(store, client, state, channels, retry_sleep_s)
    log.info("channels: %d created, %d reused", created, reused)

    registered = 0
    if n_files:
        registered = register_files(
            store, client, state, channels, max_files=manifest_max_files, max_bytes=manifest_max_bytes
        )
    return PreparedImport(
        target=target, import_id=state.import_id, channels=len(channels), channels_created=created,
        channels_reused=reused, files=n_files, files_registered=registered,
    )  # fmt: skip


def upload_files(
    store: Store,
    client: PennsieveClient,
    *,
    names: Iterable[str] | None = None,
    workers: int = 64,
    record_every: int = 2_000,
    max_consecutive_failures: int = 200,
) -> UploadReport:
    """Presign and PUT ``names`` (default: every chunk file) that are not uploaded yet.

    Needs a prepared store (:func:`prepare_import`). Several calls may run at once on disjoint
    ``names`` (a Map over upload batches): each records its progress under its own names.
    Raises :class:`UploadError` listing the files that failed.
    """
    t0 = time.monotonic()
    state = read_prepared_state(store)
    if state.import_id is None or state.key_namespace is None:
        return UploadReport(files=0, uploaded=0, already_uploaded=0, seconds=0.0)
    if names is None:
        channels = read_output(store)
        missing_channels = [c.index for c in channels if c.index not in state.channels]
        if missing_channels:
            raise PennsieveError(f"channels {missing_channels[:5]} have no Pennsieve channel: prepare again")
        files = file_entries(channels, state, state.key_namespace)
    else:
        # A Map item: its names say everything (channel index, times), so the output is not
        # listed again (380,000 names are ~380 LIST pages, longer than uploading one batch).
        files = named_entries(names, state, state.key_namespace)
    uploaded = recorded_keys(store, UPLOADED_PREFIX, state.import_id)
    todo = [f for f in files if f.upload_key not in uploaded]
    already = len(files) - len(todo)
    log.info("uploading %d files with %d workers (%d already uploaded)", len(todo), workers, already)
    failed, first_error = upload_all(
        store, client, state.target, state.import_id, todo, workers, record_every, max_consecutive_failures
    )
    if failed:
        raise UploadError(failed, len(files), first_reason=first_error)
    seconds = round(time.monotonic() - t0, 3)
    log.info("uploaded %d files in %.1fs (%d already there)", len(todo), seconds, already)
    return UploadReport(files=len(files), uploaded=len(todo), already_uploaded=already, seconds=seconds)


def upload_batches(store: Store, *, batch_size: int = 5_000) -> list[list[str]]:
    """The chunk files not uploaded yet, in batches of ``batch_size`` names: the items of a Map
    whose iterations each call :func:`upload_files` with one batch (after :func:`prepare_import`)."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    state = read_prepared_state(store)
    if state.import_id is None or state.key_namespace is None:
        return []
    uploaded = recorded_keys(store, UPLOADED_PREFIX, state.import_id)
    files = file_entries(read_output(store), state, state.key_namespace)
    todo = [f.local for f in files if f.upload_key not in uploaded]
    return [todo[i : i + batch_size] for i in range(0, len(todo), batch_size)]


def import_store(
    store: Store,
    target: ImportTarget,
    client: PennsieveClient,
    *,
    workers: int = 64,
    manifest_max_files: int = MANIFEST_MAX_FILES,
    manifest_max_bytes: int = MANIFEST_MAX_BYTES,
    record_every: int = 2_000,
    max_consecutive_failures: int = 200,
    retry_sleep_s: float = 1.0,
) -> ImportResult:
    """Import every channel and chunk file of ``store`` into ``target``: :func:`prepare_import`
    then :func:`upload_files`. Rerun-safe.

    Raises :class:`UploadError` (listing every failed file, also written to ``import-failed.json``)
    when some files were not uploaded; a rerun uploads only those.
    """
    t0 = time.monotonic()
    prepared = prepare_import(
        store, target, client, manifest_max_files=manifest_max_files,
        manifest_max_bytes=manifest_max_bytes, retry_sleep_s=retry_sleep_s,
    )  # fmt: skip
    try:
        report = upload_files(
            store, client, workers=workers, record_every=record_every,
            max_consecutive_failures=max_consecutive_failures,
        )  # fmt: skip
    except UploadError as exc:
        write_failed(store, prepared.import_id, exc.failed, exc.first_reason)
        raise
    remove_failed(store)
    result = ImportResult(
        target=target, import_id=prepared.import_id, channels=prepared.channels,
        channels_created=prepared.channels_created, channels_reused=prepared.channels_reused,
        files=prepared.files, files_registered=prepared.files_registered, files_uploaded=report.uploaded,
        files_already_uploaded=report.already_uploaded, seconds=round(time.monotonic() - t0, 3),
    )  # fmt: skip
    log.info(
        "import %s complete: %d files uploaded (%.0f files/s), %d already there",
        result.import_id, result.files_uploaded, result.files_per_second, result.files_already_uploaded,
    )  # fmt: skip
    return result
