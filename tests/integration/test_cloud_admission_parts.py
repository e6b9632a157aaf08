"""The parts of admission and of a safe import that need no state machine: execution names, the
cap, the import claim under two racing threads (moto S3 and a local directory), DeleteObjects
batches and the clients' retry mode and pool size (the Starter itself: test_cloud_starter.py)."""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Any

import pytest

from nwb2pennsieve.cloud.admission import NAME_MAX, admission_cap, execution_name
from nwb2pennsieve.output.storage import LocalStore, S3Store, Store
from nwb2pennsieve.pennsieve.errors import ImportBusyError
from nwb2pennsieve.pennsieve.records import CLAIM_NAME, import_claim
from tests.cloud_fixtures import OUTPUT_BUCKET


def test_execution_names_are_valid_stable_and_distinct() -> None:
    long_key = "a/" + "x" * 300 + " (copy) ü.nwb"
    names = {
        execution_name("b", "k.nwb", "v1"),
        execution_name("b", "k.nwb", "v2"),
        execution_name("b2", "k.nwb", "v1"),
        execution_name("b", long_key, "v1"),
        execution_name("b", "!!!.nwb", "v1"),
    }
    assert len(names) == 5
    assert all(0 < len(n) <= NAME_MAX and all(c.isascii() and (c.isalnum() or c in "-_") for c in n) for n in names)
    assert execution_name("b", "k.nwb", "v1") == execution_name("b", "k.nwb", "v1")
    assert execution_name("b", "dir/sub-01_ses-01.nwb", "v").startswith("sub-01_ses-01-")


def test_the_cap_keeps_the_maps_inside_80_percent_of_the_writers_reserve() -> None:
    assert admission_cap(5, 0, 100) == 5  # no reserve (the default): MaxRunningExecutions
    assert admission_cap(10, 600, 120) == 4  # 4 x 120 = 480 <= 0.8 x 600; 5 x 120 = 600 is the whole reserve
    assert admission_cap(10, 625, 100) == 5
    assert admission_cap(3, 600, 120) == 3
    assert admission_cap(10, 100, 1000) == 1  # never zero: one file still converts (its writers wait)


def race(store: Store) -> tuple[int, list[Exception]]:
    """Two threads claim the import at the same moment; returns (how many got in, the errors).

    A thread that gets in holds the claim until both threads have tried (not for a fixed time: on
    a loaded machine the other may try late), or 30 s when both got in (the bug this catches).
    """
    barrier = threading.Barrier(2)
    tried = threading.Semaphore(0)
    entered: list[str] = []
    errors: list[Exception] = []

    def run() -> None:
        barrier.wait()
        try:
            with import_claim(store) as owner:
                entered.append(owner)
                tried.release()
                for _ in range(2):  # both attempts, this one included
                    if not tried.acquire(timeout=30):
                        break
                tried.release()
                tried.release()
        except ImportBusyError as exc:
            errors.append(exc)
            tried.release()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(entered), errors


@pytest.fixture(params=["s3", "local"])
def claim_store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "local":
        return LocalStore(tmp_path / "out")
    s3 = request.getfixturevalue("s3")
    return S3Store(OUTPUT_BUCKET, "converted/a/", s3)


def test_two_runs_racing_for_one_import_let_one_in(claim_store: Store) -> None:
    entered, errors = race(claim_store)
    assert entered == 1 and len(errors) == 1
    assert "another run is preparing this import" in str(errors[0])
    assert not claim_store.exists(CLAIM_NAME)  # released
    with import_claim(claim_store):  # and the next run gets in
        assert claim_store.exists(CLAIM_NAME)


def test_an_abandoned_claim_is_taken_over_by_one_run_only(claim_store: Store) -> None:
    now = [1_000_000.0]
    held = import_claim(claim_store, clock=lambda: now[0])
    held.__enter__()  # a run that died holding it (never released)
    with pytest.raises(ImportBusyError), import_claim(claim_store, clock=lambda: now[0] + 60):
        pass
    now[0] += 21 * 60
    stale = claim_store.read_tagged(CLAIM_NAME)
    assert stale is not None
    with import_claim(claim_store, clock=lambda: now[0]):
        # A second taker holding the old tag loses the compare-and-swap.
        assert not claim_store.replace_tagged(CLAIM_NAME, b"{}", stale[1])


def test_stale_files_go_in_batches_of_1000_and_errors_are_not_ignored(s3: Any) -> None:
    from nwb2pennsieve.cloud.objects import delete_objects
    from nwb2pennsieve.errors import StorageError

    keys = [f"p/channel-{i:05d}.bin.gz" for i in range(2_345)]
    for k in keys[:50]:
        s3.put_object(Bucket=OUTPUT_BUCKET, Key=k, Body=b"x")
    calls: list[int] = []
    real = s3.delete_objects

    def counted(**kw: Any) -> Any:
        calls.append(len(kw["Delete"]["Objects"]))
        return real(**kw)

    s3.delete_objects = counted
    delete_objects(s3, OUTPUT_BUCKET, keys)
    assert sorted(calls) == [345, 1000, 1000]
    assert "Contents" not in s3.list_objects_v2(Bucket=OUTPUT_BUCKET, Prefix="p/")

    s3.delete_objects = lambda **kw: {"Errors": [{"Key": kw["Delete"]["Objects"][0]["Key"], "Code": "AccessDenied"}]}
    with pytest.raises(StorageError, match=r"3 of 2345 objects were not deleted .*AccessDenied"):
        delete_objects(s3, OUTPUT_BUCKET, keys)


def test_every_handler_client_retries_adaptively_with_a_connection_per_thread() -> None:
    import importlib

    from nwb2pennsieve.cloud.finalize_step import LIST_THREADS
    from nwb2pennsieve.cloud.imports import UPLOAD_WORKERS
    from nwb2pennsieve.cloud.objects import DELETE_THREADS
    from nwb2pennsieve.output.s3store import PUT_THREADS
    from nwb2pennsieve.source.direct import FETCH_THREADS
    from tests.cloud_fixtures import FUNCTIONS

    threads = {
        "functions.write_chunks.app": PUT_THREADS + FETCH_THREADS,
        "functions.finalize.app": max(LIST_THREADS, DELETE_THREADS, PUT_THREADS),
        "functions.upload_files.app": UPLOAD_WORKERS,
    }
    checked = 0
    for module_name in FUNCTIONS.values():
        module = importlib.import_module(module_name)
        for attr in ("s3", "sfn", "sqs", "dynamodb"):
            client = getattr(module, attr, None)
            if client is None:
                continue
            config = client.meta.config
            assert config.retries["mode"] == "adaptive", (module_name, attr)
            assert config.max_pool_connections >= threads.get(module_name, 1), module_name
            checked += 1
    assert checked == len(FUNCTIONS) + 3  # the Starter has four (s3, sfn, sqs, dynamodb)


def test_a_created_local_object_is_never_seen_empty(tmp_path: Path) -> None:
    """LocalStore.create publishes the whole content at once: a claim read while it is being
    created is absent or complete, never empty (an empty claim read as abandoned let two runs in)."""
    store = LocalStore(tmp_path / "out")
    body = b'{"owner": "x", "claimed_at": 1.0}'
    seen: set[bytes] = set()
    stop = threading.Event()

    def watch() -> None:
        path = tmp_path / "out" / CLAIM_NAME
        while not stop.is_set():
            with contextlib.suppress(FileNotFoundError):
                seen.add(path.read_bytes())

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for _ in range(300):
            assert store.create(CLAIM_NAME, body)
            assert not store.create(CLAIM_NAME, b"other")
            store.delete(CLAIM_NAME)
    finally:
        stop.set()
        watcher.join()
    assert seen <= {body}
