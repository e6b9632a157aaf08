"""The import manifest: every chunk file's remote path and upload key, registered with Pennsieve
in batches (pennsieve-api.md §1, §4).

Upload keys are derived from (the import's key namespace, remote file path), so they are the
same on every rerun of one import and need not be stored one by one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from ..output.storage import Store
from .channels import LocalChannel, chunk_channel_index
from .client import PennsieveClient
from .errors import PennsieveError
from .models import ImportFile
from .records import MANIFEST_PREFIX, ImportState, Recorder, recorded_keys, save_state

log = logging.getLogger(__name__)

MANIFEST_MAX_FILES = 5_000  # what the reference sends per request
MANIFEST_MAX_BYTES = 900_000  # API Gateway refuses bodies over ~1 MiB


@dataclass(frozen=True)
class FileEntry:
    """One chunk file of the import: its name in the output, its remote path, its upload key."""

    local: str
    remote: str
    upload_key: str

    def import_file(self) -> ImportFile:
        return ImportFile(upload_key=self.upload_key, file_path=self.remote)


def remote_file_path(node_id: str, local_name: str) -> str:
    """``channel-00003_<start>_<end>.bin.gz`` → ``N:channel:<uuid>_<start>_<end>.bin.gz`` (§1)."""
    return f"{node_id}_{local_name.split('_', 1)[1]}"


def upload_key(namespace: str, remote_path: str) -> str:
    """A UUID (version-4 form) derived from the import's key namespace and the file: stable across reruns."""
    digest = hashlib.sha256(f"{namespace}\n{remote_path}".encode()).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4))


def file_entry(node_id: str, name: str, namespace: str) -> FileEntry:
    remote = remote_file_path(node_id, name)
    return FileEntry(name, remote, upload_key(namespace, remote))


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


def file_entries(channels: Sequence[LocalChannel], state: ImportState, namespace: str) -> list[FileEntry]:
    """Every chunk file of ``channels``, each channel's files in order."""
    return [file_entry(state.channels[ch.index], name, namespace) for ch in channels for name in ch.files]


def named_entries(names: Iterable[str], state: ImportState, namespace: str) -> list[FileEntry]:
    """The entries of chunk files given by name (a file that does not exist fails its own upload)."""
    out = []
    unknown = []
    for name in dict.fromkeys(names):
        index = chunk_channel_index(name)
        node = state.channels.get(index) if index is not None else None
        if node is None:
            unknown.append(name)
            continue
        out.append(file_entry(node, name, namespace))
    if unknown:
        raise PennsieveError(
            f"{len(unknown)} files are not chunk files of a prepared channel of this output, e.g. {min(unknown)}"
        )
    return out


def register_files(
    store: Store,
    client: PennsieveClient,
    state: ImportState,
    channels: Sequence[LocalChannel],
    *,
    max_files: int = MANIFEST_MAX_FILES,
    max_bytes: int = MANIFEST_MAX_BYTES,
) -> int:
    """Put every chunk file of ``channels`` in the import manifest, creating the import with the
    first batch when there is none yet; files an earlier run registered are skipped.

    Every batch sent is recorded at once. Returns the number of files registered now.
    """
    target = state.target
    new_registrations = 0
    if state.import_id is None or state.key_namespace is None:
        # A new import gets a fresh key namespace, saved with the import id.
        state.key_namespace = uuid.uuid4().hex
        files = file_entries(channels, state, state.key_namespace)
        first = next(manifest_batches((f.import_file() for f in files), max_files, max_bytes))
        state.import_id = client.create_import(target.dataset_id, target.integration_id, target.package_id, first)
        save_state(store, state)
        Recorder(store, MANIFEST_PREFIX, state.import_id, 1, 0).add(f.upload_key for f in first)
        registered = {f.upload_key for f in first}
        new_registrations += len(first)
        log.info("created import %s", state.import_id)
    else:
        files = file_entries(channels, state, state.key_namespace)
        registered = recorded_keys(store, MANIFEST_PREFIX, state.import_id)
    import_id = state.import_id
    to_register = [f for f in files if f.upload_key not in registered]
    if to_register:
        recorder = Recorder(store, MANIFEST_PREFIX, import_id, 1, 0)
        for batch in manifest_batches((f.import_file() for f in to_register), max_files, max_bytes):
            client.append_import_files(target.dataset_id, import_id, batch)
            recorder.add(f.upload_key for f in batch)
            new_registrations += len(batch)
    log.info("manifest: %d files registered now, %d before", new_registrations, len(files) - new_registrations)
    return new_registrations
