"""A read-only, seekable file object over one S3 object version, made of ranged GETs.

The block cache, the file protocol and the read counting are
:class:`~nwb2pennsieve.source.ranges.RangeReader`'s; here is how S3 answers one range, pinned to
one object version.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NotRequired, TypedDict

from ..errors import InvalidInputError, StorageError
from .identity import InputChangedError, SourceIdentity, check_same
from .ranges import BLOCK_BYTES, CACHE_BLOCKS, DIRECT_BYTES, RangeReader, ReadStats

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = [
    "BLOCK_BYTES",
    "CACHE_BLOCKS",
    "DIRECT_BYTES",
    "ObjectChangedError",
    "ReadStats",
    "S3RangeReader",
    "no_version",
]


class _ObjectParams(TypedDict):
    """What names the object (and its version) in a HEAD or GET."""

    Bucket: str
    Key: str
    VersionId: NotRequired[str]
    IfMatch: NotRequired[str]


def no_version(value: str | None) -> str | None:
    """A version id as S3 gives it, ``null`` (an unversioned or versioning-suspended bucket) and ``""``
    read as none: every upload to such a key has the same ``null``, so it identifies nothing."""
    return None if value in (None, "", "null") else value


def key_versions(client: S3Client, bucket: str, key: str) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Every version of exactly ``key`` (not of the keys it is a prefix of), oldest or newest in any
    order, and the entry on top: the latest version, or a delete marker (no ``ETag``), or None."""
    versions: list[dict[str, Any]] = []
    on_top: dict[str, Any] | None = None
    for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=key):
        for entry in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
            if entry.get("Key") != key:
                continue
            if "ETag" in entry:
                versions.append(dict(entry))
            if entry.get("IsLatest"):
                on_top = dict(entry)
    return versions, on_top


def _client_error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


class ObjectChangedError(InputChangedError):
    """The object pinned by its ETag (no version id) was replaced while it was being read."""


class S3RangeReader(RangeReader):
    """``s3://bucket/key`` (at ``version_id`` when given) as a seekable binary file.

    The object's size and ETag are read once (HEAD); every later GET names the same version (or,
    for unversioned buckets, carries ``IfMatch`` with the ETag), so a file replaced while it is
    being read fails loudly instead of mixing two files' bytes. Without a version id, ``etag``
    pins the object from the start (the HEAD carries ``IfMatch`` too): a reader of a later step
    reads the bytes the first one planned, or fails. ``expect`` (the version a plan recorded) is
    compared after the HEAD and names what changed.
    """

    def __init__(
        self,
        client: S3Client,
        bucket: str,
        key: str,
        *,
        version_id: str | None = None,
        etag: str | None = None,
        stats: ReadStats | None = None,
        block_bytes: int = BLOCK_BYTES,
        cache_blocks: int = CACHE_BLOCKS,
        expect: SourceIdentity | None = None,
    ) -> None:
        super().__init__(stats=stats, block_bytes=block_bytes, cache_blocks=cache_blocks)
        self.client = client
        self.bucket = bucket
        self.key = key
        self.version_id = no_version(version_id or (expect.version_id if expect else None))
        # Quoted, as S3 gives it and as If-Match wants it.
        self.etag: str = f'"{etag.strip(chr(34))}"' if etag and not self.version_id else ""
        params = self._params()
        if self.etag:
            params["IfMatch"] = self.etag
        try:
            head = client.head_object(**params)
        except Exception as exc:
            code = _client_error_code(exc)
            if code in ("PreconditionFailed", "412"):
                raise ObjectChangedError("the object changed since it was planned", file=self.uri) from None
            if code in ("404", "NoSuchKey", "NotFound", "NoSuchVersion"):
                raise InvalidInputError("the object does not exist (or that version is gone)", file=self.uri) from None
            if code in ("403", "AccessDenied"):
                raise InvalidInputError("access to the object is denied", file=self.uri) from None
            raise StorageError(f"cannot read the object ({exc})", file=self.uri) from None
        self.size = int(head["ContentLength"])
        self.etag = str(head.get("ETag", ""))
        if self.version_id is None:
            self.version_id = no_version(head.get("VersionId"))
        self.identity = SourceIdentity(size=self.size, etag=self.etag or None, version_id=self.version_id)
        check_same(expect, self.identity, self.uri)

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def _params(self) -> _ObjectParams:
        params: _ObjectParams = {"Bucket": self.bucket, "Key": self.key}
        if self.version_id:
            params["VersionId"] = self.version_id
        return params

    def get(self, start: int, stop: int) -> bytes:
        """Bytes [start, stop) of the object version, in one GET."""
        params = self._params()
        if not self.version_id and self.etag:
            params["IfMatch"] = self.etag
        try:
            body = self.client.get_object(Range=f"bytes={start}-{stop - 1}", **params)["Body"].read()
        except Exception as exc:
            code = _client_error_code(exc)
            if code in ("PreconditionFailed", "412"):
                raise ObjectChangedError("the object changed while it was being read", file=self.uri) from None
            raise StorageError(f"reading bytes {start}-{stop - 1} failed ({exc})", file=self.uri) from None
        return bytes(body)
