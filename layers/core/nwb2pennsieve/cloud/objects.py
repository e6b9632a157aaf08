"""The S3 objects every conversion step handles alike: the input object (is the version planned
still the latest? opened through h5py with a cache for metadata only) and deleting objects in
batches of DeleteObjects requests.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from ..errors import StorageError, storage_error
from ..plan.events import FoundFile
from ..plan.sources import NdjsonSource
from ..source.annotation_files import annotation_names
from ..source.s3 import key_versions, no_version
from .models import S3Ref, Superseded, bare_etag

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

DELETE_THREADS = 8
DELETE_BATCH = 1_000  # DeleteObjects' most keys per request
H5_CACHE_BYTES = 4 * 1024 * 1024  # the writers read raw chunks themselves; h5py's cache holds metadata only


def annotation_files(s3: S3Client, source: S3Ref) -> list[FoundFile]:
    """The annotation files beside the input object (``<folder>/<stem>...annotations.ndjson``, as a
    local input's: :func:`~nwb2pennsieve.source.annotation_files.files_beside`), each read once at its
    current version, which the plan pins. A file uploaded after the NWB object's event is not seen."""
    folder, _, name = source.key.rpartition("/")
    stem = name[: -len(".nwb")] if name.lower().endswith(".nwb") else name
    prefix = f"{folder}/{stem}" if folder else stem
    names = [
        o["Key"][len(folder) + 1 if folder else 0 :]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=source.bucket, Prefix=prefix)
        for o in page.get("Contents", [])
    ]
    keys = [f"{folder}/{n}" if folder else n for n in annotation_names([n for n in names if "/" not in n], name)]
    out = []
    for key in keys:
        try:
            answer = s3.get_object(Bucket=source.bucket, Key=key)
            data = answer["Body"].read()
        except Exception as exc:
            raise storage_error(f"annotation file s3://{source.bucket}/{key} cannot be read ({exc})", exc) from None
        out.append(
            FoundFile(
                name=key.rsplit("/", 1)[-1],
                location=f"s3://{source.bucket}/{key}",
                data=data,
                version_id=answer.get("VersionId"),
            )
        )
    return out


def read_annotation_file(s3: S3Client, source: NdjsonSource) -> bytes:
    """An annotation file again, at the version planned (Finalize)."""
    bucket, _, key = source.location.removeprefix("s3://").partition("/")
    try:
        if source.version_id:
            return s3.get_object(Bucket=bucket, Key=key, VersionId=source.version_id)["Body"].read()
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except Exception as exc:
        raise storage_error(f"annotation file {source.location} cannot be read ({exc})", exc) from None


def superseded_by(s3: S3Client, source: S3Ref) -> str | None:
    """What replaced ``source`` as the object's latest version (``"version <id>"`` or
    ``"ETag <etag>"``); None while it is still the latest, or when the object is gone.

    Every step asks this before it writes or deletes anything: an execution of a replaced version
    stops (its outcome is ``superseded``) and the newer version's own execution writes the output.
    A version id is compared when ``source`` has one; else the ETag it pinned (an unversioned or
    versioning-suspended bucket, where every upload has the version id ``null``); with neither,
    nothing can be compared and None is returned.

    The latest version comes from a version listing of the key (``s3:ListBucketVersions`` scoped
    to the input prefix): a HEAD of a deleted object answers 403, not 404, without
    ``s3:ListBucket`` on the whole bucket. Only a listing without the key, or with a delete marker
    on top, means the object is gone (nothing newer to protect); any error (access denied,
    throttling) is raised as a :class:`StorageError`, never taken for "gone" or "current".
    """
    if not (source.version_id or source.etag):
        return None
    try:
        latest = latest_version(s3, source.bucket, source.key)
    except Exception as exc:
        message = f"cannot check that {_identity(source)} is still the latest ({exc})"
        raise storage_error(message, exc, file=source.uri) from None
    if latest is None:
        return None
    version_id, etag = latest
    if source.version_id:
        return None if version_id == source.version_id else f"version {version_id}"
    return None if etag == source.etag else f"ETag {etag}"


def superseded(s3: S3Client, source: S3Ref, step: str) -> Superseded | None:
    """The outcome of ``step`` when ``source`` is no longer the latest version, else None."""
    newer = superseded_by(s3, source)
    if not newer:
        return None
    log.info("%s: %s was replaced by %s, whose own execution converts it", step, _identity(source), newer)
    return Superseded(source=source, latest=newer, step=step)


def _identity(source: S3Ref) -> str:
    return f"version {source.version_id}" if source.version_id else f"ETag {source.etag}"


def latest_version(s3: S3Client, bucket: str, key: str) -> tuple[str | None, str | None] | None:
    """(version id or None for ``null``, ETag without quotes) of ``key``'s current version; None
    when the key is gone (none, or a delete marker on top)."""
    _, on_top = key_versions(s3, bucket, key)
    if on_top is None or "ETag" not in on_top:
        return None
    return no_version(on_top.get("VersionId")), bare_etag(on_top.get("ETag"))


def delete_tree(s3: S3Client, bucket: str, prefix: str) -> int:
    """Delete every object under ``prefix``, its root ``zarr.json`` first; return how many."""
    root = prefix + "zarr.json"
    keys = [
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for o in page.get("Contents", [])
    ]
    if root in keys:  # the root first, alone: the bundle is un-published before any shard goes
        delete_objects(s3, bucket, [root])
    delete_objects(s3, bucket, [k for k in keys if k != root])
    return len(keys)


def delete_objects(s3: S3Client, bucket: str, keys: list[str], *, threads: int = DELETE_THREADS) -> None:
    """Delete ``keys`` with DeleteObjects requests of 1,000 keys, ``threads`` requests at once.

    One DeleteObject per key would take hours for 380,000 files (past Lambda's 15 minutes); this
    is ~380 requests. DeleteObjects answers 200 even when some keys failed: each answer's
    ``Errors`` is checked, and any failed key raises :class:`StorageError` naming the first.
    """
    batches = [keys[i : i + DELETE_BATCH] for i in range(0, len(keys), DELETE_BATCH)]

    def delete(batch: list[str]) -> list[tuple[str, str]]:
        answer = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True})
        return [(e.get("Key", "?"), f"{e.get('Code', '?')}: {e.get('Message', '')}") for e in answer.get("Errors", [])]

    failed: list[tuple[str, str]] = []
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(batches)))) as pool:
        for errors in pool.map(delete, batches):
            failed.extend(errors)
    if failed:
        key, reason = failed[0]
        raise StorageError(
            f"{len(failed)} of {len(keys)} objects were not deleted (first s3://{bucket}/{key}: {reason})"
        )
    if keys:
        log.info("deleted %d objects in %d DeleteObjects requests", len(keys), len(batches))
