"""Import records: what the importer keeps in the store next to the output so reruns are safe.

- ``import-state.json`` (:class:`ImportState`): the target, channel index → channel node id, the
  import id and the key namespace; written as soon as channels exist and again as soon as the
  import exists.
- ``import-manifest-<recorder>-<n>.json`` (:class:`KeyRecord`): upload keys registered in the
  import manifest, one record per batch sent.
- ``import-uploaded-<recorder>-<n>.json`` (:class:`KeyRecord`): upload keys whose PUT succeeded,
  flushed every few thousand files and at the end (a crash loses at most one unflushed batch:
  re-PUT, harmless).
- ``import-failed.json`` (:class:`FailedRecord`): the files of the last failed import (removed
  by a complete one).
- ``import-claim.json`` (:class:`ImportClaim`): held while one run prepares the import (channels,
  manifest; with the asset flow, the asset and its channels), so two runs racing on one output
  (a duplicate event, a hand-started rerun) never create an asset, channels or files twice:
  created with a conditional write (S3 ``If-None-Match: *``), taken over when stale with a
  compare-and-swap (``If-Match: <ETag>``), deleted when done.
- ``import-asset.json`` (:class:`AssetState`), the viewer-asset flow's record: the target, the
  asset this output's import created, the output's fingerprint and channel index → channel node
  id; written as soon as the asset exists and again when channels are created or it is finished.

No secret ever goes into a record.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from pydantic import BaseModel, ConfigDict, ValidationError

from ..output.storage import Store
from .errors import ImportBusyError, PennsieveError
from .target import ImportTarget

log = logging.getLogger(__name__)

STATE_NAME = "import-state.json"
MANIFEST_PREFIX = "import-manifest-"
UPLOADED_PREFIX = "import-uploaded-"
FAILED_NAME = "import-failed.json"
CLAIM_NAME = "import-claim.json"
ASSET_STATE_NAME = "import-asset.json"
# Longer than any run can hold it (a Lambda ends after 15 minutes): an older claim is abandoned.
CLAIM_LEASE_SECONDS = 20 * 60
STATE_FORMAT = 1


class ImportState(BaseModel):
    """``import-state.json``."""

    model_config = ConfigDict(extra="forbid")

    format: int = STATE_FORMAT
    target: ImportTarget
    channels: dict[int, str] = {}
    import_id: str | None = None
    key_namespace: str | None = None


class KeyRecord(BaseModel):
    """One ``import-manifest-*`` or ``import-uploaded-*`` record: upload keys of one import."""

    model_config = ConfigDict(extra="ignore")

    import_id: str | None = None
    upload_keys: list[str] = []


class FailedRecord(BaseModel):
    """``import-failed.json``: the files a failed import did not upload, and the first reason."""

    model_config = ConfigDict(extra="forbid")

    import_id: str | None
    failed: list[str]
    error: str


class ImportClaim(BaseModel):
    """``import-claim.json``: who prepares the import, since when (epoch seconds)."""

    model_config = ConfigDict(extra="ignore")

    owner: str
    claimed_at: float


@contextmanager
def import_claim(
    store: Store, *, lease_seconds: float = CLAIM_LEASE_SECONDS, clock: Callable[[], float] = time.time
) -> Iterator[str]:
    """Hold the import's claim for the ``with`` block; raise :class:`ImportBusyError` when another
    run holds it. A claim older than ``lease_seconds`` (its run died) is taken over, by one run only."""
    owner = uuid.uuid4().hex
    body = ImportClaim(owner=owner, claimed_at=clock()).model_dump_json().encode()
    if not store.create(CLAIM_NAME, body):
        current = store.read_tagged(CLAIM_NAME)
        if current is None:  # released in between: claim it now (or lose to a third run)
            taken = store.create(CLAIM_NAME, body)
        else:
            data, tag = current
            try:
                age = clock() - ImportClaim.model_validate_json(data).claimed_at
            except ValidationError:
                age = float("inf")
            if age < lease_seconds:
                raise ImportBusyError(
                    f"another run is preparing this import (claimed {max(0, age):.0f} s ago); "
                    "it is retried when that run is done",
                    file=store.describe(""),
                )
            taken = store.replace_tagged(CLAIM_NAME, body, tag)
            if taken:
                log.warning("took over an abandoned import claim %.0f s old at %s", age, store.describe(CLAIM_NAME))
        if not taken:
            raise ImportBusyError("another run claimed this import at the same moment", file=store.describe(""))
    try:
        yield owner
    finally:
        current = store.read_tagged(CLAIM_NAME)
        if current is not None and ImportClaim.model_validate_json(current[0]).owner == owner:
            store.delete(CLAIM_NAME)


def load_state(store: Store, target: ImportTarget) -> ImportState:
    """The state of an earlier import to ``target``, or a new one (dropping another target's records)."""
    if store.exists(STATE_NAME):
        try:
            state = ImportState.model_validate_json(store.read_bytes(STATE_NAME))
        except ValidationError:
            log.warning("%s is unreadable; starting a new import", store.describe(STATE_NAME))
        else:
            if state.target == target:
                return state
            log.warning(
                "the previous import went to dataset %s package %s; starting a new import for %s %s",
                state.target.dataset_id, state.target.package_id, target.dataset_id, target.package_id,
            )  # fmt: skip
        for name in [*store.list_names(MANIFEST_PREFIX), *store.list_names(UPLOADED_PREFIX)]:
            store.delete(name)
    return ImportState(target=target)


def read_prepared_state(store: Store) -> ImportState:
    """The state :func:`~.importer.prepare_import` left; an error when the store was never prepared."""
    if not store.exists(STATE_NAME):
        raise PennsieveError("not prepared: no import-state.json (run prepare_import first)", file=store.describe(""))
    return ImportState.model_validate_json(store.read_bytes(STATE_NAME))


def save_state(store: Store, state: ImportState) -> None:
    store.write_bytes(STATE_NAME, state.model_dump_json(indent=1).encode())


def recorded_keys(store: Store, prefix: str, import_id: str | None) -> set[str]:
    """Every upload key the records under ``prefix`` hold for ``import_id``."""
    keys: set[str] = set()
    if import_id is None:
        return keys
    for name in store.list_names(prefix):
        try:
            record = KeyRecord.model_validate_json(store.read_bytes(name))
        except ValidationError:
            log.warning("ignoring unreadable record %s", store.describe(name))
            continue
        if record.import_id == import_id:
            keys.update(record.upload_keys)
    return keys


def write_failed(store: Store, import_id: str | None, failed: list[str], error: str) -> None:
    store.write_bytes(
        FAILED_NAME, FailedRecord(import_id=import_id, failed=failed, error=error).model_dump_json(indent=1).encode()
    )


def remove_failed(store: Store) -> None:
    if store.exists(FAILED_NAME):
        store.delete(FAILED_NAME)


class Recorder:
    """Appends upload keys to numbered records (S3 has no append: one object per flush).

    Thread-safe. Every recorder writes under its own names, so several may record at once
    (parallel upload batches).
    """

    def __init__(self, store: Store, prefix: str, import_id: str, every: int, seconds: float) -> None:
        self.store = store
        self.prefix = prefix
        self.import_id = import_id
        self.every = every
        self.seconds = seconds
        self.recorder_id = uuid.uuid4().hex[:12]
        self.seq = 0
        self.pending: list[str] = []
        self.last = time.monotonic()
        self.lock = threading.Lock()

    def add(self, keys: Iterable[str]) -> None:
        with self.lock:
            self.pending.extend(keys)
            if len(self.pending) >= self.every or time.monotonic() - self.last > self.seconds:
                self._flush()

    def flush(self) -> None:
        with self.lock:
            self._flush()

    def _flush(self) -> None:
        self.last = time.monotonic()
        if not self.pending:
            return
        body = KeyRecord(import_id=self.import_id, upload_keys=self.pending).model_dump_json()
        # On a failed write the keys stay pending and go out with the next flush.
        self.store.write_bytes(f"{self.prefix}{self.recorder_id}-{self.seq:05d}.json", body.encode())
        self.seq += 1
        self.pending = []


class AssetState(BaseModel):
    """``import-asset.json``: which viewer asset this output's import created (so a rerun knows it
    is ours to resume), for which recording and output, and its channels. No credential."""

    model_config = ConfigDict(extra="forbid")

    format: int = STATE_FORMAT
    target: ImportTarget
    source: str
    fingerprint: str
    asset_id: str
    channels: dict[int, str] = {}
    finished: bool = False


def load_asset_state(store: Store, *, written: bool = False) -> AssetState | None:
    """The asset flow's record next to the output, or None (none, or unreadable: then a warning).

    ``written``: the caller knows it was written (the cloud's upload steps, after Finalize): it is
    read without a listing first (S3 answers a missing key 403 to a role that may not list).
    """
    if not written and not store.exists(ASSET_STATE_NAME):
        return None
    try:
        return AssetState.model_validate_json(store.read_bytes(ASSET_STATE_NAME))
    except ValidationError:
        log.warning("%s is unreadable; ignoring it", store.describe(ASSET_STATE_NAME))
        return None


def save_asset_state(store: Store, state: AssetState) -> None:
    store.write_bytes(ASSET_STATE_NAME, state.model_dump_json(indent=1).encode())
