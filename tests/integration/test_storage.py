"""One contract suite for every Store: a local directory and an S3 prefix (moto)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from nwb2pennsieve.storage import LocalStore, S3Store, Store


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path: Path) -> Iterator[Store]:
    if request.param == "local":
        yield LocalStore(tmp_path / "out")
        return
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="out")
        yield S3Store("out", "runs/x/", client)


def test_pending_object_appears_only_on_commit(store: Store) -> None:
    pending = store.open_pending("channel-00000_1_2.bin.gz")
    pending.write(b"abc")
    pending.writev([b"de", memoryview(b"fgh")[1:]])
    assert not store.exists("channel-00000_1_2.bin.gz")
    assert list(store.list_names()) == []
    pending.commit()
    assert store.read_bytes("channel-00000_1_2.bin.gz") == b"abcdegh"
    assert store.size("channel-00000_1_2.bin.gz") == 7


def test_abort_leaves_nothing(store: Store) -> None:
    pending = store.open_pending("a.bin")
    pending.write(b"x" * 1000)
    pending.abort()
    assert not store.exists("a.bin")
    assert list(store.list_names()) == []


def test_write_read_list_delete(store: Store) -> None:
    store.write_bytes("b.json", b"{}")
    store.write_bytes("a.json", b"[]")
    store.write_bytes("plan.json", b"1")
    assert list(store.list_names()) == ["a.json", "b.json", "plan.json"]
    assert list(store.list_names("p")) == ["plan.json"]
    with store.open_read("a.json") as fh:
        assert fh.read() == b"[]"
    store.delete("a.json")
    assert not store.exists("a.json")
    store.write_bytes("b.json", b"{1}")  # overwrite
    assert store.read_bytes("b.json") == b"{1}"
    assert store.describe("b.json").endswith("b.json")
