"""The S3 objects every conversion step handles alike: the input object (is the version planned
still the latest? opened through h5py with a cache for metadata only) and deleting objects in
batches of DeleteObjects requests.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from ..errors import Nwb2PennsieveError, StorageError, storage_error
from ..plan.events import FoundFile
from ..plan.sources import NdjsonSource
from ..source.annotation_files import SUFFIX
from .models import S3Ref

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

DELETE_THREADS = 8
DELETE_BATCH = 1_000  # DeleteObjects' most keys per request
H5_CACHE_BYTES = 4 * 1024 * 1024  # the writers read raw chunks themselves; h5py's cache holds metadata only


class SupersededError(Nwb2PennsieveError):
    """A newer version of the input object exists: its own execution writes the output."""


def annotation_files(s3: S3Client, source: S3Ref) -> list[FoundFile]:
    """The annotation files beside the input object (``<folder>/<stem>...annotations.ndjson``, as a
    local input's: :func:`~nwb2pennsieve.source.annotation_files.files_beside`), each read once at its
    current version, which the plan pins. A file uploaded after the NWB object's event is not seen."""
    folder, _, name = source.key.rpartition("/")
    stem = name.rsplit(".", 1)[0] if "." in name else name
    prefix = f"{folder}/{stem}" if folder else stem
    keys = [
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=source.bucket, Prefix=prefix)
        for o in page.get("Contents", [])
        if o["Key"].endswith(SUFFIX) and "/" not in o["Key"][len(folder) + 1 if folder else 0 :]
    ]
    out = []
    for key in sorted(keys):
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


def check_current(s3: S3Client, source: S3Ref) -> None:
    """Raise :class:`SupersededError` when ``source`` is no longer the object's latest version.

    Two executions of one key (an object replaced while it converts) share an output prefix; the
    older one stops before it can overwrite the newer one's files or remove them as stale.

    The latest version comes from a version listing of the key (``s3:ListBucketVersions`` scoped to
    the input prefix): a HEAD of a deleted object answers 403, not 404, without ``s3:ListBucket``
    on the whole bucket. Only a listing without the key, or with a delete marker on top, means the
    object is gone (nothing newer to protect); any error (access denied, throttling) is raised as
    a :class:`StorageError`, never taken for "gone".
    """
    if not source.version_id:
        return
    try:
        latest = latest_version(s3, source.bucket, source.key)
    except Exception as exc:
        raise storage_error(
            f"cannot check that version {source.version_id} is still the latest ({exc})", exc, file=source.uri
        ) from None
    if latest and latest != source.version_id:
        raise SupersededError(
            f"version {source.version_id} was replaced by version {latest}, whose own execution writes the output",
            file=source.uri,
        )


def latest_version(s3: S3Client, bucket: str, key: str) -> str | None:
    """The version id of ``key``'s current version; None when the key is gone (none, or a delete marker on top)."""
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=key):
        for marker in page.get("DeleteMarkers", []):
            if marker.get("Key") == key and marker.get("IsLatest"):
                return None
        for version in page.get("Versions", []):
            if version.get("Key") == key and version.get("IsLatest"):
                return version.get("VersionId")
    return None


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
