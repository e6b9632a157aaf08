"""Publishing a version: the key's pointer ``@current.json`` and the version folders it chooses from
(:mod:`.layout`).

Each object version is written into its own version folder, so an execution of a replaced version
can never touch the newest output: its writers write into a folder nobody reads. Finalize, once
every file of its version is in place, **publishes** it: it moves the pointer to its folder with a
compare-and-swap (``If-None-Match: *`` for the first version, ``If-Match: <ETag>`` after that),
and only while its version is still the object's latest (checked between reading the pointer and
replacing it: a newer version that published in between makes the swap fail, and the next look
finds this version superseded). Then it removes the folders of the versions it replaced: it lists
them first and checks that it is still the latest after, so a folder it deletes belongs to a
version uploaded before its own (a later upload would have made it superseded).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.alias_generators import to_camel

from ..errors import StorageError
from ..output.storage import S3Store
from .layout import POINTER_NAME, VERSIONS, version_folder
from .models import S3Prefix, S3Ref
from .objects import delete_tree, superseded_by

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

# Compare-and-swap rounds before giving up (each lost round means another version published).
PUBLISH_ATTEMPTS = 10


class Pointer(BaseModel):
    """``@current.json``: the published version of one key (its version folder)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    token: str
    folder: str  # the version folder's key prefix in the output bucket
    source: S3Ref
    published_at: str


def read_pointer(s3: S3Client, folder: S3Prefix) -> Pointer | None:
    """The key's published version (None before the first publish, or when unreadable)."""
    found = _read_tagged(S3Store(folder.bucket, folder.prefix, s3))
    return _parse(found[0]) if found else None


def _read_tagged(store: S3Store) -> tuple[bytes, str] | None:
    """The pointer and its ETag, None when there is none. Listed first: without ``s3:ListBucket``
    on the whole bucket, S3 answers a GET of a missing key 403, not 404 (pointers are never deleted)."""
    return store.read_tagged(POINTER_NAME) if store.exists(POINTER_NAME) else None


def _parse(body: bytes) -> Pointer | None:
    try:
        return Pointer.model_validate_json(body)
    except ValidationError:
        return None


def publish(s3: S3Client, folder: S3Prefix, token: str, version_prefix: str, source: S3Ref) -> str | None:
    """Point ``folder``'s ``@current.json`` at the version folder ``version_prefix`` (``token``),
    while ``source`` is the object's latest version. None when published (or already was), else
    what superseded ``source`` (nothing is changed then)."""
    store = S3Store(folder.bucket, folder.prefix, s3)
    for _ in range(PUBLISH_ATTEMPTS):
        current = _read_tagged(store)
        pointer = _parse(current[0]) if current else None
        if pointer is not None and pointer.token == token:
            return None  # a rerun (or a redrive) of a version already published
        newer = superseded_by(s3, source)
        if newer:
            return newer
        body = Pointer(
            token=token, folder=version_prefix, source=source, published_at=datetime.now(UTC).isoformat()
        ).model_dump_json(by_alias=True, exclude_none=True)
        if current is None:
            done = store.create(POINTER_NAME, body.encode())
        else:
            done = store.replace_tagged(POINTER_NAME, body.encode(), current[1])
        if done:
            log.info("published %s as the current version of %s", token, folder.uri)
            return None
    raise StorageError(f"could not publish version {token}: {PUBLISH_ATTEMPTS} rounds lost", file=source.uri)


def version_tokens(s3: S3Client, folder: S3Prefix) -> list[str]:
    """The tokens of every version folder under ``folder`` (``@v/<token>/``)."""
    base = folder.prefix + VERSIONS
    tokens: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=folder.bucket, Prefix=base, Delimiter="/"):
        tokens.extend(p["Prefix"][len(base) :].rstrip("/") for p in page.get("CommonPrefixes", []))
    return tokens


def remove_superseded(s3: S3Client, folder: S3Prefix, token: str, source: S3Ref) -> int:
    """Delete the version folders of ``folder`` other than ``token``'s, while ``source`` is the
    latest version (listed first, checked after: a folder deleted is an older version's). Returns
    how many objects were deleted."""
    others = [t for t in version_tokens(s3, folder) if t != token]
    if not others or superseded_by(s3, source):
        return 0
    removed = sum(delete_tree(s3, folder.bucket, version_folder(folder.prefix, t)) for t in others)
    log.info("removed %d objects of %d superseded versions under %s", removed, len(others), folder.uri)
    return removed


def discard_unpublished(s3: S3Client, folder: S3Prefix, token: str) -> int:
    """Delete the version folder ``token`` of a superseded execution, unless it is the published
    one (the newer version's Finalize removes it then). Returns how many objects were deleted."""
    pointer = read_pointer(s3, folder)
    if pointer is not None and pointer.token == token:
        return 0
    return delete_tree(s3, folder.bucket, version_folder(folder.prefix, token))
