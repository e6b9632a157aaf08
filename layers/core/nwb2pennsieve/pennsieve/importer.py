"""Import a converter output (a :class:`~nwb2pennsieve.storage.Store`) into Pennsieve, rerun-safely.

Order (pennsieve-api.md §4): package properties → existing channels → match or create each
channel → batched import manifest → presign + PUT of every file, in parallel.

What was done is recorded in the store next to the output, so a rerun for the same target
reuses everything and only completes what is missing:

- ``import-state.json``: the target, channel index → channel node id, the import id;
  written as soon as channels exist and again as soon as the import exists.
- ``import-manifest-<run>-<n>.json``: upload keys registered in the manifest, one per batch sent.
- ``import-uploaded-<run>-<n>.json``: upload keys whose PUT succeeded, flushed every few
  thousand files and at the end (a crash loses at most one unflushed batch: re-PUT, harmless).
- ``import-failed.json``: the files of the last failed run (removed by a complete run).

Upload keys are derived from (the import's key namespace, remote file path), so they are the
same on every run of one import and need not be stored one by one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..models import ChannelMetadata
from ..storage import S3Store, Store
from .client import PennsieveClient
from .errors import ChannelError, PennsieveAuthError, PennsieveError, PennsieveHTTPError, UploadError, redact
from .http import SizedReader
from .models import Channel, ImportFile, NewChannel
from .target import ImportTarget

log = logging.getLogger("nwb2pennsieve.pennsieve.importer")

STATE_NAME = "import-state.json"
MANIFEST_PREFIX = "import-manifest-"
UPLOADED_PREFIX = "import-uploaded-"
FAILED_NAME = "import-failed.json"
STATE_FORMAT = 1

CHUNK_RE = re.compile(r"^channel-(\d+)_(\d+)_(\d+)\.bin\.gz$")
METADATA_RE = re.compile(r"^channel-(\d+)\.metadata\.json$")

RATE_TOLERANCE = 0.02  # §3.4: |1 - existing.rate / local.rate| < 0.02
MANIFEST_MAX_FILES = 5_000  # what the reference sends per request
MANIFEST_MAX_BYTES = 900_000  # API Gateway refuses bodies over ~1 MiB
CHANNELS_PER_REQUEST = 200
CHANNEL_ROUNDS = 4


# -- reading the output ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalChannel:
    """One channel of the output: its metadata and its chunk files (sorted by start time)."""

    index: int
    metadata: ChannelMetadata
    files: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The name sent to Pennsieve: never blank (a blank one becomes ``channel-<index>``)."""
        return self.metadata.name if self.metadata.name.strip() else f"channel-{self.index:05d}"

    def new_channel(self) -> NewChannel:
        m = self.metadata
        return NewChannel(
            name=self.name,
            start=m.start,
            end=m.end,
            unit=m.unit,
            rate=m.rate,
            channel_type=m.type,
            group=m.group or "default",
            last_annotation=m.last_annotation,
            properties=m.properties,
        )


def read_output(store: Store) -> list[LocalChannel]:
    """The channels of a converter output, read from the store's names and metadata files."""
    files: dict[int, list[tuple[int, str]]] = {}
    metadata_names: dict[int, str] = {}
    for name in store.list_names("channel-"):
        if m := CHUNK_RE.match(name):
            files.setdefault(int(m.group(1)), []).append((int(m.group(2)), name))
        elif m := METADATA_RE.match(name):
            metadata_names[int(m.group(1))] = name
    orphans = sorted(set(files) - set(metadata_names))
    if orphans:
        raise ChannelError(
            f"chunk files of channel(s) {', '.join(f'{i:05d}' for i in orphans[:10])} have no"
            " channel-<index>.metadata.json",
            file=store.describe(""),
        )
    channels = []
    for index in sorted(metadata_names):
        name = metadata_names[index]
        try:
            metadata = ChannelMetadata.model_validate_json(store.read_bytes(name))
        except ValidationError as exc:
            first = exc.errors()[0]
            raise ChannelError(
                f"invalid metadata ({first['loc']}: {first['msg']})", file=store.describe(name)
            ) from None
        if metadata.rate <= 0:
            raise ChannelError(f"invalid rate {metadata.rate}", file=store.describe(name))
        chunk_names = [n for _, n in sorted(files.get(index, []))]
        channels.append(LocalChannel(index=index, metadata=metadata, files=chunk_names))
    return channels


# -- channels ---------------------------------------------------------------------------------------


def channel_matches(local: LocalChannel, remote: Channel) -> bool:
    """§3.4: same name and type (case-insensitive) and rates within 2 %."""
    c = remote.content
    if not c.rate or c.channel_type is None:
        return False
    return (
        c.name.casefold() == local.name.casefold()
        and c.channel_type.casefold() == local.metadata.type.casefold()
        and abs(1 - c.rate / local.metadata.rate) < RATE_TOLERANCE
    )


def match_channels(
    local: Sequence[LocalChannel], remote: Sequence[Channel], known: dict[int, str] | None = None
) -> tuple[dict[int, str], list[LocalChannel]]:
    """Pair local channels with existing remote ones; each remote channel is used at most once.

    ``known`` (from a previous run's state) wins when that channel still exists and still matches
    (it tells same-named channels apart). Returns
    (channel index → node id, local channels still to create).
    """
    by_id = {r.content.id: r for r in remote}
    claimed: set[str] = set()
    mapping: dict[int, str] = {}
    for ch in local:
        node = (known or {}).get(ch.index)
        if node is not None and node in by_id and node not in claimed and channel_matches(ch, by_id[node]):
            mapping[ch.index] = node
            claimed.add(node)
    missing = []
    for ch in local:
        if ch.index in mapping:
            continue
        found = next((r for r in remote if r.content.id not in claimed and channel_matches(ch, r)), None)
        if found is None:
            missing.append(ch)
        else:
            mapping[ch.index] = found.content.id
            claimed.add(found.content.id)
    return mapping, missing


# -- state ------------------------------------------------------------------------------------------


class ImportState(BaseModel):
    """``import-state.json``: no secret ever goes in here."""

    model_config = ConfigDict(extra="forbid")

    format: int = STATE_FORMAT
    target: ImportTarget
    channels: dict[int, str] = {}
    import_id: str | None = None
    key_namespace: str | None = None


def _load_state(store: Store, target: ImportTarget) -> ImportState:
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


def _save_state(store: Store, state: ImportState) -> None:
    store.write_bytes(STATE_NAME, state.model_dump_json(indent=1).encode())


def _recorded_keys(store: Store, prefix: str, import_id: str | None) -> set[str]:
    keys: set[str] = set()
    if import_id is None:
        return keys
    for name in store.list_names(prefix):
        try:
            record = json.loads(store.read_bytes(name))
        except ValueError:
            log.warning("ignoring unreadable record %s", store.describe(name))
            continue
        if record.get("import_id") == import_id:
            keys.update(record.get("upload_keys", []))
    return keys


class _Recorder:
    """Appends upload keys to numbered record objects (S3 has no append: one object per flush)."""

    def __init__(self, store: Store, prefix: str, import_id: str, every: int, seconds: float) -> None:
        self.store = store
        self.prefix = prefix
        self.import_id = import_id
        self.every = every
        self.seconds = seconds
        self.run = uuid.uuid4().hex[:12]
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
        body = {"import_id": self.import_id, "upload_keys": self.pending}
        # On a failed write the keys stay pending and go out with the next flush.
        self.store.write_bytes(f"{self.prefix}{self.run}-{self.seq:05d}.json", json.dumps(body).encode())
        self.seq += 1
        self.pending = []


# -- files --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileEntry:
    local: str
    remote: str
    upload_key: str


def remote_file_path(node_id: str, local_name: str) -> str:
    """``channel-00003_<start>_<end>.bin.gz`` → ``N:channel:<uuid>_<start>_<end>.bin.gz`` (§1)."""
    return f"{node_id}_{local_name.split('_', 1)[1]}"


def upload_key(namespace: str, remote_path: str) -> str:
    """A UUID (version-4 form) derived from the import's key namespace and the file: stable across reruns."""
    digest = hashlib.sha256(f"{namespace}\n{remote_path}".encode()).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4))


def manifest_batches(
    files: Iterable[ImportFile], max_files: int = MANIFEST_MAX_FILES, max_bytes: int = MANIFEST_MAX_BYTES
) -> Iterator[list[ImportFile]]:
    """Split the manifest lazily so each request body stays under ``max_bytes`` and ``max_files``."""
    current: list[ImportFile] = []
    size = 200  # the envelope: {"integration_id": ..., "package_id": ..., "files": []}
    for f in files:
        # '{"upload_key": "<key>", "file_path": <json string>}, ' is exactly this long, plus 1
        entry = len(f.upload_key) + len(json.dumps(f.file_path)) + 36
        if current and (len(current) >= max_files or size + entry > max_bytes):
            yield current
            current, size = [], 200
        current.append(f)
        size += entry
    if current:
        yield current


def _open_sized(store: Store, name: str) -> tuple[BinaryIO, int]:
    if isinstance(store, S3Store):
        # One GET gives both the stream and its length (no HEAD per file).
        answer = store.client.get_object(Bucket=store.bucket, Key=store.key(name))
        return answer["Body"], int(answer["ContentLength"])
    return store.open_read(name), store.size(name)


# -- the import ----------------------------------------------------------------------------------------


def _upload_one(store: Store, client: PennsieveClient, target: ImportTarget, import_id: str, f: FileEntry) -> None:
    def open_body() -> SizedReader:
        stream, size = _open_sized(store, f.local)
        if size <= 0:
            stream.close()
            raise PennsieveError("empty file", file=store.describe(f.local))
        return SizedReader(stream, size, f.local)

    url = client.presign(target.dataset_id, import_id, f.upload_key)
    try:
        client.put_file(url, open_body)
    except PennsieveHTTPError as exc:
        if exc.status not in (400, 403):
            raise
        # An expired or refused presigned URL: ask for a new one, once.
        client.put_file(client.presign(target.dataset_id, import_id, f.upload_key), open_body)


def _upload_all(
    store: Store,
    client: PennsieveClient,
    target: ImportTarget,
    import_id: str,
    todo: Sequence[FileEntry],
    workers: int,
    record_every: int,
    max_consecutive_failures: int,
) -> tuple[list[str], str]:
    """Presign + PUT every file with ``workers`` threads; returns (failed local names, first error)."""
    if not todo:
        return [], ""
    recorder = _Recorder(store, UPLOADED_PREFIX, import_id, record_every, 10.0)
    lock = threading.Lock()
    next_index = 0
    failed: list[str] = []
    errors: list[str] = []
    stop = threading.Event()
    counters = {"ok": 0, "consecutive_failures": 0}
    t0 = last_log = time.monotonic()

    def take() -> FileEntry | None:
        nonlocal next_index
        with lock:
            if stop.is_set() or next_index >= len(todo):
                return None
            f = todo[next_index]
            next_index += 1
            return f

    def work() -> None:
        try:
            work_loop()
        finally:
            client.http.release_thread_session()

    def work_loop() -> None:
        nonlocal last_log
        while (f := take()) is not None:
            try:
                _upload_one(store, client, target, import_id, f)
            except Exception as exc:  # every failure is counted and reported, none aborts the others
                reason = exc.one_line() if isinstance(exc, PennsieveError) else redact(f"{type(exc).__name__}: {exc}")
                with lock:
                    failed.append(f.local)
                    errors.append(reason)
                    counters["consecutive_failures"] += 1
                    if (
                        isinstance(exc, PennsieveAuthError)
                        or counters["consecutive_failures"] >= max_consecutive_failures
                    ):
                        stop.set()
                log.warning("upload of %s failed: %s", f.local, reason)
                continue
            try:
                recorder.add((f.upload_key,))
            except Exception as exc:  # the upload itself succeeded; only its record is late
                log.warning("could not record progress yet (%s); will try again", type(exc).__name__)
            with lock:
                counters["ok"] += 1
                counters["consecutive_failures"] = 0
                now = time.monotonic()
                if now - last_log > 10:
                    last_log = now
                    done = counters["ok"]
                    log.info("uploaded %d/%d files (%.0f files/s)", done, len(todo), done / (now - t0))

    threads = [
        threading.Thread(target=work, name=f"upload-{i}", daemon=True) for i in range(max(1, min(workers, len(todo))))
    ]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        try:
            recorder.flush()
        except Exception as exc:
            # Uploaded but not recorded: a rerun would PUT these files again (same keys), nothing worse.
            log.error("could not record the last %d uploads (%s)", len(recorder.pending), type(exc).__name__)
    if stop.is_set():
        # Never attempted: they are missing just the same and the rerun will do them.
        failed.extend(f.local for f in todo[next_index:])
        log.error(
            "uploads stopped early after %d failures in a row: %s",
            counters["consecutive_failures"],
            errors[-1],
        )
    return failed, errors[0] if errors else ""


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


def _sync_channels(
    store: Store, client: PennsieveClient, state: ImportState, channels: list[LocalChannel], sleep_s: float
) -> tuple[int, int]:
    """Match or create every channel; the state is saved right after each creation."""
    package = state.target.package_id
    created_total = 0
    for round_ in range(1, CHANNEL_ROUNDS + 1):
        remote = client.list_channels(package)
        mapping, missing = match_channels(channels, remote, state.channels)
        if state.channels != mapping:
            state.channels = mapping
            _save_state(store, state)
        if not missing:
            return created_total, len(channels) - created_total
        try:
            for start in range(0, len(missing), CHANNELS_PER_REQUEST):
                part = missing[start : start + CHANNELS_PER_REQUEST]
                created = client.create_channels(package, [ch.new_channel() for ch in part])
                for ch, remote_ch in zip(part, created, strict=True):
                    if remote_ch.content.name.casefold() != ch.name.casefold():
                        raise ChannelError(
                            f"created channel {remote_ch.content.id} is named {remote_ch.content.name!r},"
                            f" not {ch.name!r}"
                        )
                    state.channels[ch.index] = remote_ch.content.id
                created_total += len(part)
                _save_state(store, state)
            return created_total, len(channels) - created_total
        except PennsieveHTTPError as exc:
            # The server may have created them before failing: list again and match, never blindly re-POST.
            if not exc.retryable or round_ == CHANNEL_ROUNDS:
                raise ChannelError(f"creating channels on {package} failed: {exc.reason}") from None
            log.warning("creating channels failed (%s); listing again before retrying", exc.reason)
            time.sleep(sleep_s * round_)
    raise ChannelError(f"creating channels on {package} did not converge")  # pragma: no cover


def _named_entries(names: Iterable[str], state: ImportState, namespace: str) -> list[FileEntry]:
    """The entries of chunk files given by name (a file that does not exist fails its own upload)."""
    out = []
    unknown = []
    for name in dict.fromkeys(names):
        m = CHUNK_RE.match(name)
        node = state.channels.get(int(m.group(1))) if m else None
        if node is None:
            unknown.append(name)
            continue
        remote = remote_file_path(node, name)
        out.append(FileEntry(name, remote, upload_key(namespace, remote)))
    if unknown:
        raise PennsieveError(
            f"{len(unknown)} files are not chunk files of a prepared channel of this output, e.g. {min(unknown)}"
        )
    return out


def _entries(channels: Sequence[LocalChannel], state: ImportState, namespace: str) -> list[FileEntry]:
    out = []
    for ch in channels:
        node = state.channels[ch.index]
        for name in ch.files:
            remote = remote_file_path(node, name)
            out.append(FileEntry(name, remote, upload_key(namespace, remote)))
    return out


def prepare_import(
    store: Store,
    target: ImportTarget,
    client: PennsieveClient,
    *,
    manifest_max_files: int = MANIFEST_MAX_FILES,
    manifest_max_bytes: int = MANIFEST_MAX_BYTES,
    retry_sleep_s: float = 1.0,
) -> PreparedImport:
    """Package properties, channels (matched or created) and the batched manifest; rerun-safe."""
    channels = read_output(store)
    if not channels:
        raise PennsieveError("nothing to import: no channel-*.metadata.json", file=store.describe(""))
    state = _load_state(store, target)
    n_files = sum(len(c.files) for c in channels)
    log.info(
        "importing %d channels, %d files from %s into dataset %s package %s",
        len(channels), n_files, store.describe(""), target.dataset_id, target.package_id,
    )  # fmt: skip

    client.set_timeseries_properties(target.package_id)
    created, reused = _sync_channels(store, client, state, channels, retry_sleep_s)
    log.info("channels: %d created, %d reused", created, reused)

    new_registrations = 0
    if n_files and (state.import_id is None or state.key_namespace is None):
        # A new import gets a fresh key namespace, saved with the import id.
        state.key_namespace = uuid.uuid4().hex
        files = _entries(channels, state, state.key_namespace)
        first = next(
            manifest_batches(
                (ImportFile(upload_key=f.upload_key, file_path=f.remote) for f in files),
                manifest_max_files, manifest_max_bytes,
            )
        )  # fmt: skip
        state.import_id = client.create_import(target.dataset_id, target.integration_id, target.package_id, first)
        _save_state(store, state)
        _Recorder(store, MANIFEST_PREFIX, state.import_id, 1, 0).add(f.upload_key for f in first)
        registered = {f.upload_key for f in first}
        new_registrations += len(first)
        log.info("created import %s", state.import_id)
    elif n_files:
        assert state.key_namespace is not None
        files = _entries(channels, state, state.key_namespace)
        registered = _recorded_keys(store, MANIFEST_PREFIX, state.import_id)
    if n_files:
        assert state.import_id is not None
        to_register = [f for f in files if f.upload_key not in registered]
        if to_register:
            recorder = _Recorder(store, MANIFEST_PREFIX, state.import_id, 1, 0)
            for batch in manifest_batches(
                (ImportFile(upload_key=f.upload_key, file_path=f.remote) for f in to_register),
                manifest_max_files, manifest_max_bytes,
            ):  # fmt: skip
                client.append_import_files(target.dataset_id, state.import_id, batch)
                recorder.add(f.upload_key for f in batch)
                new_registrations += len(batch)
        log.info("manifest: %d files registered now, %d before", new_registrations, n_files - new_registrations)
    return PreparedImport(
        target=target, import_id=state.import_id, channels=len(channels), channels_created=created,
        channels_reused=reused, files=n_files, files_registered=new_registrations,
    )  # fmt: skip


class UploadReport(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    files: int = Field(description="files asked for")
    uploaded: int
    already_uploaded: int
    seconds: float


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
    if not store.exists(STATE_NAME):
        raise PennsieveError("not prepared: no import-state.json (run prepare_import first)", file=store.describe(""))
    state = ImportState.model_validate_json(store.read_bytes(STATE_NAME))
    if state.import_id is None or state.key_namespace is None:
        return UploadReport(files=0, uploaded=0, already_uploaded=0, seconds=0.0)
    if names is None:
        channels = read_output(store)
        missing_channels = [c.index for c in channels if c.index not in state.channels]
        if missing_channels:
            raise PennsieveError(f"channels {missing_channels[:5]} have no Pennsieve channel: prepare again")
        files = _entries(channels, state, state.key_namespace)
    else:
        # A Map item: its names say everything (channel index, times), so the output is not
        # listed again (380,000 names are ~380 LIST pages, longer than uploading one batch).
        files = _named_entries(names, state, state.key_namespace)
    uploaded = _recorded_keys(store, UPLOADED_PREFIX, state.import_id)
    todo = [f for f in files if f.upload_key not in uploaded]
    already = len(files) - len(todo)
    log.info("uploading %d files with %d workers (%d already uploaded)", len(todo), workers, already)
    failed, first_error = _upload_all(
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
    if not store.exists(STATE_NAME):
        raise PennsieveError("not prepared: no import-state.json (run prepare_import first)", file=store.describe(""))
    state = ImportState.model_validate_json(store.read_bytes(STATE_NAME))
    if state.import_id is None or state.key_namespace is None:
        return []
    uploaded = _recorded_keys(store, UPLOADED_PREFIX, state.import_id)
    todo = [f.local for f in _entries(read_output(store), state, state.key_namespace) if f.upload_key not in uploaded]
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
        body = {"import_id": prepared.import_id, "failed": exc.failed, "error": exc.first_reason}
        store.write_bytes(FAILED_NAME, json.dumps(body, indent=1).encode())
        raise
    if store.exists(FAILED_NAME):
        store.delete(FAILED_NAME)
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
