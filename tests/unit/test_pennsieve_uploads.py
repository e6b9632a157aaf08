"""The upload pool: bounded submission, early stop, every file counted (a fake client, local files)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from nwb2pennsieve.output.storage import LocalStore
from nwb2pennsieve.pennsieve.errors import PennsieveAuthError
from nwb2pennsieve.pennsieve.manifest import FileEntry
from nwb2pennsieve.pennsieve.records import UPLOADED_PREFIX, recorded_keys
from nwb2pennsieve.pennsieve.target import ImportTarget
from nwb2pennsieve.pennsieve.uploads import QUEUED_PER_THREAD, upload_all

TARGET = ImportTarget(dataset_id="N:dataset:1", package_id="N:package:1")


class _Http:
    def __init__(self) -> None:
        self.released = 0
        self.lock = threading.Lock()

    def release_thread_session(self) -> None:
        with self.lock:
            self.released += 1


class FakeClient:
    """Presigns by echoing the key; ``put_file`` reads the body and calls ``on_put`` (which may raise)."""

    def __init__(self, on_put: Callable[[str], None] = lambda key: None) -> None:
        self.http = _Http()
        self.on_put = on_put
        self.lock = threading.Lock()
        self.puts: list[str] = []

    def presign(self, dataset_id: str, import_id: str, key: str) -> str:
        return key

    def put_file(self, url: str, open_body: Callable[[], Any]) -> None:
        body = open_body()
        body.read()
        body.close()
        with self.lock:
            self.puts.append(url)
        self.on_put(url)


class CountingEntries(Sequence[FileEntry]):
    """The files to upload, counting how many the pool has taken so far."""

    def __init__(self, entries: list[FileEntry]) -> None:
        self.entries = entries
        self.taken = 0

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: Any) -> Any:
        return self.entries[i]

    def __iter__(self) -> Iterator[FileEntry]:
        for entry in self.entries:
            self.taken += 1
            yield entry


def _entries(tmp_path: Path, n: int) -> tuple[LocalStore, list[FileEntry]]:
    store = LocalStore(tmp_path)
    entries = []
    for i in range(n):
        name = f"channel-00000_{i}_{i + 1}.bin.gz"
        store.write_bytes(name, b"x" * 10)
        entries.append(FileEntry(name, f"N:channel:c_{i}_{i + 1}.bin.gz", f"key-{i:05d}"))
    return store, entries


def test_the_pool_takes_files_a_few_at_a_time_and_uploads_each_once(tmp_path: Path) -> None:
    store, entries = _entries(tmp_path, 300)
    todo = CountingEntries(entries)
    workers = 4
    taken_at_first_put: list[int] = []
    client = FakeClient(lambda key: taken_at_first_put.append(todo.taken) if not taken_at_first_put else None)

    failed, first_error = upload_all(store, client, TARGET, "imp", todo, workers, 50, 200)  # type: ignore[arg-type]

    assert (failed, first_error) == ([], "")
    assert sorted(client.puts) == sorted(e.upload_key for e in entries)
    assert taken_at_first_put[0] <= workers * QUEUED_PER_THREAD + workers  # never all 300 at once
    assert recorded_keys(store, UPLOADED_PREFIX, "imp") == {e.upload_key for e in entries}
    assert 1 <= client.http.released <= workers


def test_an_auth_failure_stops_the_pool_and_counts_every_file_not_uploaded(tmp_path: Path) -> None:
    store, entries = _entries(tmp_path, 500)
    workers = 4

    def refuse(key: str) -> None:
        raise PennsieveAuthError("the session token was refused")

    client = FakeClient(refuse)

    failed, first_error = upload_all(store, client, TARGET, "imp", entries, workers, 50, 200)  # type: ignore[arg-type]

    assert sorted(failed) == sorted(e.local for e in entries)  # attempted or not, each is missing
    assert "the session token was refused" in first_error
    assert len(client.puts) <= workers * QUEUED_PER_THREAD  # stopped: the queued ones never started
    assert recorded_keys(store, UPLOADED_PREFIX, "imp") == set()


def test_failures_in_a_row_stop_the_pool_but_a_success_resets_the_count(tmp_path: Path) -> None:
    store, entries = _entries(tmp_path, 200)
    bad = {e.upload_key for e in entries[::2]}

    def every_other(key: str) -> None:
        if key in bad:
            raise OSError("connection reset")

    client = FakeClient(every_other)

    failed, _ = upload_all(store, client, TARGET, "imp", entries, 1, 50, 3)  # type: ignore[arg-type]

    assert sorted(failed) == sorted(e.local for e in entries[::2])  # never 3 in a row: all attempted
    assert len(client.puts) == len(entries)
