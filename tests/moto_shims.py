"""moto where it is not AWS, for the admission and burst tests: each shim makes moto behave as AWS
documents it where a test depends on the difference (docs/cloud.md, "moto and AWS").

- :func:`atomic_transactions`: AWS serializes DynamoDB transactions; moto checks and writes without
  a lock;
- :func:`version_listings_as_aws`: ListObjectVersions lists the prefix; moto deep-copies every
  version of the bucket (the bytes too) on every call, and races concurrent PUTs;
- :func:`suspended_versioning_as_aws`: in a versioning-suspended bucket earlier versions stay; moto
  drops them, and refuses a HEAD by version id.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest


@contextmanager
def atomic_transactions() -> Iterator[None]:
    """moto's TransactWriteItems checks and writes without a lock: serialize them, as AWS does."""
    from moto.dynamodb.models import DynamoDBBackend

    real = DynamoDBBackend.transact_write_items
    lock = threading.Lock()

    def serialized(self: Any, transact_items: Any) -> Any:
        with lock:
            return real(self, transact_items)

    DynamoDBBackend.transact_write_items = serialized  # type: ignore[method-assign]
    try:
        yield
    finally:
        DynamoDBBackend.transact_write_items = real  # type: ignore[method-assign]


# Serializes the S3 shims below with moto's PUTs (moto's own S3 is not safe for it).
S3_LOCK = threading.RLock()


def version_listings_as_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    """ListObjectVersions lists the prefix (AWS). moto deep-copies every version of every key of the
    bucket on each call, the bytes included: hundreds of megabytes per call once a burst's inputs
    are in, and a deepcopy racing a concurrent PUT fails with SystemError. Here it copies only the
    keys under the prefix, and not while a PUT changes them."""
    from moto.s3.models import S3Backend
    from moto.s3.utils import _VersionedKeyStore

    real_list = S3Backend.list_object_versions
    real_put = S3Backend.put_object

    class Backend:
        """The backend, whose bucket shows only the keys under the prefix."""

        def __init__(self, backend: Any, bucket: Any) -> None:
            self._backend, self._bucket = backend, bucket

        def get_bucket(self, name: str) -> Any:
            return self._bucket

        def __getattr__(self, name: str) -> Any:
            return getattr(self._backend, name)

    class Bucket:
        def __init__(self, bucket: Any, keys: Any) -> None:
            self._bucket, self.keys = bucket, keys

        def __getattr__(self, name: str) -> Any:
            return getattr(self._bucket, name)

    def list_object_versions(self: Any, bucket_name: str, *args: Any, **kwargs: Any) -> Any:
        prefix = kwargs.get("prefix") or ""
        with S3_LOCK:
            bucket = self.get_bucket(bucket_name)
            under = _VersionedKeyStore()
            for key, versions in bucket.keys.iterlists():
                if key.startswith(prefix):
                    dict.__setitem__(under, key, list(versions))
            return real_list(Backend(self, Bucket(bucket, under)), bucket_name, *args, **kwargs)

    def put_object(self: Any, *args: Any, **kwargs: Any) -> Any:
        with S3_LOCK:
            return real_put(self, *args, **kwargs)

    monkeypatch.setattr(S3Backend, "list_object_versions", list_object_versions)
    monkeypatch.setattr(S3Backend, "put_object", put_object)


def suspended_versioning_as_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    """A versioning-suspended bucket as AWS documents it ("Adding objects to versioning-suspended
    buckets"): a PUT replaces the key's ``null`` version only, and earlier versions stay readable by
    their version id. moto drops every earlier version of the key on such a PUT, and answers 400
    to a HEAD naming a version in a bucket whose versioning is not Enabled."""
    from moto.s3.models import S3Backend
    from moto.s3.responses import S3Response

    real_put = S3Backend.put_object
    real_head = S3Response.head_object
    lock = S3_LOCK  # the HEAD below flips the bucket's status for a moment: no PUT then

    def put_object(self: Any, bucket_name: str, key_name: str, *args: Any, **kwargs: Any) -> Any:
        with lock:
            bucket = self.get_bucket(bucket_name)
            if bucket.versioning_status != "Suspended":
                return real_put(self, bucket_name, key_name, *args, **kwargs)
            before = list(bucket.keys.getlist(key_name, []))
            kept = [k for k in before if k._version_id not in (None, "null")]
            # Hidden from moto's put (which disposes of what it replaces), then put back under the new one.
            dict.__setitem__(bucket.keys, key_name, [k for k in before if k not in kept])
            new = real_put(self, bucket_name, key_name, *args, **kwargs)
            dict.__setitem__(bucket.keys, key_name, [*kept, new])
            return new

    def head_object(self: Any, bucket_name: str, query: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        bucket = self.backend.get_bucket(bucket_name)
        if not query.get("versionId") or bucket.versioning_status != "Suspended":
            return real_head(self, bucket_name, query, *args, **kwargs)
        with lock:
            bucket.versioning_status = "Enabled"
            try:
                return real_head(self, bucket_name, query, *args, **kwargs)
            finally:
                bucket.versioning_status = "Suspended"

    monkeypatch.setattr(S3Backend, "put_object", put_object)
    monkeypatch.setattr(S3Response, "head_object", head_object)
