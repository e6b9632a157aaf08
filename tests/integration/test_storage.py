"""One contract suite for every Store: a local directory, an S3 prefix and the parallel S3 store (moto).

The parallel S3 store puts committed objects in the background; ``settle`` waits for them (its
``flush``), as its users do before they read back (for the other stores it has nothing to do).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from nwb2pennsieve.output.s3store import ParallelS3Store
from nwb2pennsieve.output.storage import LocalStore, S3Store, Store


@pytest.fixture(params=["local", "s3", "parallel-s3"])
def store_and_settle(request, tmp_path: Path) -> Iterator[tuple[Store, Callable[[], None]]]:
    if request.param == "local":
        yield LocalStore(tmp_path / "out"), lambda: None
        return
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="out")
        if request.param == "s3":
            yield S3Store("out", "records/x/", client), lambda: None
            return
        parallel = ParallelS3Store("out", "records/x/", client, threads=4, max_in_flight_bytes=2 * 1024 * 1024)
        try:
            yield parallel, parallel.flush
        finally:
            parallel.close()


@pytest.fixture
def store(store_and_settle: tuple[Store, Callable[[], None]]) -> Store:
    return store_and_settle[0]


@pytest.fixture
def settle(store_and_settle: tuple[Store, Callable[[], None]]) -> Callable[[], None]:
    return store_and_settle[1]


def test_pending_object_appears_only_on_commit(store: Store, settle: Callable[[], None]) -> None:
    pending = store.open_pending("channel-00000_1_2.bin.gz")
    pending.write(b"abc")
    pending.writev([b"de", memoryview(b"fgh")[1:]])
    assert not store.exists("channel-00000_1_2.bin.gz")
    assert list(store.list_names()) == []
    pending.commit()
    settle()
    assert store.read_bytes("channel-00000_1_2.bin.gz") == b"abcdegh"
    assert store.size("channel-00000_1_2.bin.gz") == 7


def test_abort_leaves_nothing(store: Store, settle: Callable[[], None]) -> None:
    pending = store.open_pending("a.bin")
    pending.write(b"x" * 1000)
    pending.abort()
    settle()
    assert not store.exists("a.bin")
    assert list(store.list_names()) == []


def test_write_read_list_delete(store: Store, settle: Callable[[], None]) -> None:
    store.write_bytes("b.json", b"{}")
    store.write_bytes("a.json", b"[]")
    store.write_bytes("plan.json", b"1")
    settle()
    assert list(store.list_names()) == ["a.json", "b.json", "plan.json"]
    assert list(store.list_names("p")) == ["plan.json"]
    with store.open_read("a.json") as fh:
        assert fh.read() == b"[]"
    store.delete("a.json")
    assert not store.exists("a.json")
    store.write_bytes("b.json", b"{1}")  # overwrite
    settle()
    assert store.read_bytes("b.json") == b"{1}"
    assert store.describe("b.json").endswith("b.json")


def test_many_commits_larger_than_the_in_flight_budget_all_arrive(store: Store, settle: Callable[[], None]) -> None:
    # 24 objects of 0.25-1.5 MiB: more than the parallel store's 2 MiB in flight, so commits wait their turn.
    written = {f"channel-{i:05d}_0_1.bin.gz": bytes([i]) * ((i % 6 + 1) * 256 * 1024) for i in range(24)}
    for name, data in written.items():
        pending = store.open_pending(name)
        pending.writev([data[:1000], memoryview(data)[1000:]])
        pending.commit()
    settle()
    assert list(store.list_names("channel-")) == sorted(written)
    for name, data in written.items():
        assert store.size(name) == len(data)
        assert store.read_bytes(name) == data


@pytest.mark.parametrize("atomic_names", [True, False])
def test_a_local_folder_removed_after_a_write_is_made_again(tmp_path: Path, atomic_names: bool) -> None:
    # A local store remembers the folders it made (a bundle writes into thousands): one removed
    # behind its back is made again on the next write, not a failure.
    root = LocalStore(tmp_path / "out", atomic_names=atomic_names)
    leaf = root.child("3/0/c")
    leaf.write_bytes("1", b"one")
    assert (tmp_path / "out" / "3" / "0" / "c" / "1").read_bytes() == b"one"
    shutil.rmtree(tmp_path / "out")
    again = root.child("3/0/c")  # a new child of the same store: it shares what the store made
    again.write_bytes("2", b"two")
    leaf.write_bytes("3", b"three")
    assert sorted(again.list_names()) == ["2", "3"]
    assert [p.name for p in (tmp_path / "out" / "3" / "0" / "c").iterdir() if p.name.startswith(".")] == []
