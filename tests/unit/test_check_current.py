"""superseded_by: is the version an execution converts still the object's latest? By version id, or,
without one (an unversioned or versioning-suspended bucket: every upload's version id is ``null``),
by the pinned ETag. Only a listing without the key (or a delete marker on top) means the input is
gone; access denied and throttling are errors, never taken for "deleted" or "current"."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from nwb2pennsieve.cloud.models import S3Ref
from nwb2pennsieve.cloud.objects import latest_version, superseded_by
from nwb2pennsieve.errors import StorageError

SOURCE = S3Ref(bucket="in-bucket", key="a/b.nwb", version_id="v1")


class FakeVersions:
    """An S3 client whose version listing of one prefix is ``pages`` (or raises ``error``)."""

    def __init__(self, pages: list[dict[str, Any]] | None = None, error: Exception | None = None) -> None:
        self.pages = pages or [{}]
        self.error = error
        self.calls: list[dict[str, Any]] = []

    def get_paginator(self, name: str) -> FakeVersions:
        assert name == "list_object_versions"
        return self

    def paginate(self, **params: Any) -> list[dict[str, Any]]:
        self.calls.append(params)
        if self.error:
            raise self.error
        return self.pages


def version(key: str, vid: str, latest: bool, etag: str = "e1") -> dict[str, Any]:
    return {"Key": key, "VersionId": vid, "IsLatest": latest, "Size": 10, "ETag": f'"{etag}"'}


def marker(key: str, vid: str, latest: bool) -> dict[str, Any]:
    return {"Key": key, "VersionId": vid, "IsLatest": latest}


def client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "X")


def test_the_latest_version_passes_and_a_newer_one_supersedes() -> None:
    assert superseded_by(FakeVersions([{"Versions": [version("a/b.nwb", "v1", True)]}]), SOURCE) is None  # type: ignore[arg-type]
    newer = FakeVersions([{"Versions": [version("a/b.nwb", "v2", True), version("a/b.nwb", "v1", False)]}])
    assert superseded_by(newer, SOURCE) == "version v2"  # type: ignore[arg-type]
    assert newer.calls == [{"Bucket": "in-bucket", "Prefix": "a/b.nwb"}]


def test_without_a_version_id_the_pinned_etag_is_compared() -> None:
    """A versioning-suspended bucket: every upload is version "null", the ETag tells them apart."""
    pinned = S3Ref(bucket="in-bucket", key="a/b.nwb", version_id="null", etag='"e1"')
    assert pinned.version_id is None and pinned.etag == "e1"
    same = FakeVersions([{"Versions": [version("a/b.nwb", "null", True, etag="e1")]}])
    assert superseded_by(same, pinned) is None  # type: ignore[arg-type]
    overwritten = FakeVersions([{"Versions": [version("a/b.nwb", "null", True, etag="e2")]}])
    assert superseded_by(overwritten, pinned) == "ETag e2"  # type: ignore[arg-type]


def test_a_longer_key_with_the_same_prefix_is_not_the_object() -> None:
    pages = [{"Versions": [version("a/b.nwb", "v1", False), version("a/b.nwb.bak", "v9", True)]}]
    assert latest_version(FakeVersions(pages), "in-bucket", "a/b.nwb") is None  # type: ignore[arg-type]
    pages = [{"Versions": [version("a/b.nwb", "null", True, etag="e7")]}]
    assert latest_version(FakeVersions(pages), "in-bucket", "a/b.nwb") == (None, "e7")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "pages",
    [
        [{}],  # no version left
        [{"Versions": [version("a/b.nwb", "v1", False)], "DeleteMarkers": [marker("a/b.nwb", "d1", True)]}],
    ],
    ids=["no-versions", "delete-marker"],
)
def test_a_deleted_object_is_gone_and_nothing_newer_is_protected(pages: list[dict[str, Any]]) -> None:
    assert superseded_by(FakeVersions(pages), SOURCE) is None  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("code", "status"), [("AccessDenied", 403), ("SlowDown", 503), ("ThrottlingException", 400), ("InternalError", 500)]
)
def test_access_denied_and_throttling_are_errors_not_deleted(code: str, status: int) -> None:
    with pytest.raises(StorageError, match=code) as err:
        superseded_by(FakeVersions(error=client_error(code, status)), SOURCE)  # type: ignore[arg-type]
    assert str(err.value).startswith("s3://in-bucket/a/b.nwb: cannot check that version v1 is still the latest")


def test_a_source_pinned_to_nothing_is_not_checked() -> None:
    fake = FakeVersions(error=client_error("AccessDenied", 403))
    assert superseded_by(fake, S3Ref(bucket="in-bucket", key="a/b.nwb")) is None  # type: ignore[arg-type]
    assert fake.calls == []
