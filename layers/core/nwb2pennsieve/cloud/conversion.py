"""The conversion steps: plan an S3 object (Plan), write a batch of work items (WriteChunks),
check and complete the output (Finalize, which hands over to :mod:`.imports` when the import is on).

Each step takes a boto3 S3 client and a payload model and returns a payload model; the
handlers in ``functions/`` add only Powertools and event parsing.

Layout in the output bucket, for an input object ``a/b.nwb``:
- ``{OUTPUT_PREFIX}a/b/``: the chunk files and channel metadata, exactly what the local pool
  writes into its output directory (and nothing else but the importer's import records);
- ``{OUTPUT_PREFIX}a/b/b.zarr/`` and ``{OUTPUT_PREFIX}a/b/asset-properties.json``: the viewer bundle
  (``OUTPUT_FORMATS`` with ``bundle``): WriteChunks writes the shards of its items' windows, Finalize
  the reduce, the unit channels and every ``zarr.json``, the root's last (the commit point);
- ``{RECORDS_PREFIX}a/b/{version id, or ETag}/``: ``plan.json`` and ``write-batches.json`` (the Map's
  item manifest), ``written/batch-{n:05d}.json`` (what each write batch put: every chunk file's
  size and the CRC-32 of its samples, which Finalize checks the listing against); with the
  bundle, ``bundle-partials/<item id>.bin`` (each item's partial results for the reduce); with the
  importer on, the upload batches (:mod:`.imports`);
- ``{RECORDS_PREFIX}map-results/``: the Map's ResultWriter output, one folder per map run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, BinaryIO, cast

from pydantic import TypeAdapter

from ..bundle.continuous import ItemPartial
from ..bundle.finish import finish_bundle
from ..bundle.series import bundle_name, unpack_partials
from ..errors import InvalidInputError, Nwb2PennsieveError, StorageError, storage_error
from ..output.gzipstored import framed_size
from ..output.s3store import PUT_THREADS, ParallelS3Store
from ..output.storage import S3Store
from ..plan.models import ChunkRecord, Plan, WorkItem, chunk_file_name, metadata_file_name
from ..plan.survey import build_plan
from ..source.direct import FETCH_THREADS
from ..source.nwb import open_nwb
from ..source.s3 import ReadStats, S3RangeReader
from ..write.chunks import write_channel_metadata
from ..write.execute import execute_item
from .importer import choose_import_target
from .imports import prepare_uploads
from .models import (
    Batch,
    FinalizeInput,
    FinalizeOutput,
    PlanInput,
    PlanOutput,
    S3Prefix,
    S3Ref,
    WriteChunksInput,
    WriteChunksOutput,
    WrittenBatch,
)
from .settings import DEFAULT_UPLOAD_BATCH_FILES, CloudSettings, join_prefix

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

PLAN_NAME = "plan.json"
WRITE_BATCHES_NAME = "write-batches.json"
WRITTEN_FOLDER = "written"
PARTIALS_FOLDER = "bundle-partials"
RESULTS_FOLDER = "map-results"
LIST_THREADS = 16
DELETE_THREADS = 8
DELETE_BATCH = 1_000  # DeleteObjects' most keys per request
# Threads that share one S3 client (its pool holds one connection per thread: see .clients).
WRITE_THREADS = PUT_THREADS + FETCH_THREADS + 1
FINALIZE_THREADS = max(LIST_THREADS, DELETE_THREADS, PUT_THREADS)
MAX_ITEMS_PER_BATCH = 500
H5_CACHE_BYTES = 4 * 1024 * 1024  # the writers read raw chunks themselves; h5py's cache holds metadata only

_BATCHES = TypeAdapter(list[Batch])


class IncompleteOutputError(Nwb2PennsieveError):
    """Finalize found chunk files missing, unrecorded or of the wrong size."""


class SupersededError(Nwb2PennsieveError):
    """A newer version of the input object exists: its own execution writes the output."""


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


def batch_items(items: list[WorkItem], batch_mb: float, *, max_items: int = MAX_ITEMS_PER_BATCH) -> list[Batch]:
    """Group consecutive work items into batches of at most ``batch_mb`` MiB of output each.

    An item larger than the budget is a batch on its own; items are never split. A batch holds at
    most ``max_items`` items, so its payload stays far below Step Functions' 256 KB (a file cut
    into many tiny items by gaps would otherwise put thousands of ids in one payload).
    """
    budget = batch_mb * 1024 * 1024
    batches: list[Batch] = []
    current: list[WorkItem] = []
    size = 0
    for item in items:
        if current and (size + item.output_bytes > budget or len(current) >= max_items):
            batches.append(Batch(batch=len(batches), items=[i.id for i in current], output_bytes=size))
            current, size = [], 0
        current.append(item)
        size += item.output_bytes
    if current:
        batches.append(Batch(batch=len(batches), items=[i.id for i in current], output_bytes=size))
    return batches


def plan_object(
    s3: S3Client, event: PlanInput, settings: CloudSettings, *, stats: ReadStats | None = None
) -> PlanOutput:
    """Plan the conversion of one S3 object, reading only its metadata; write plan and manifest."""
    run = settings.conversion_settings(event.overrides)
    src = event.source
    # With the importer on, a missing target fails here, before any conversion work.
    target = choose_import_target(s3, src, event.overrides) if run.importer_enabled else None
    reader = S3RangeReader(s3, src.bucket, src.key, version_id=src.version_id, stats=stats)
    if reader.size == 0:
        raise InvalidInputError("the file is empty (0 bytes)", file=src.uri)
    with open_nwb(cast(BinaryIO, reader), name=src.uri, cache_bytes=H5_CACHE_BYTES) as h5:
        plan = build_plan(h5, source=src.uri, options=run.options)
    check_output_size(plan, settings.max_output_gb)
    # Pin the version planned: every writer then reads the very same bytes.
    source = S3Ref(bucket=src.bucket, key=src.key, version_id=reader.version_id)
    override = event.overrides.output_prefix
    if override is not None and not override.startswith(settings.output_prefix):
        # The functions' IAM policies allow writes under the stack's OutputPrefix only.
        raise InvalidInputError(
            f"outputPrefix {override!r} must start with the stack's OutputPrefix {settings.output_prefix!r}",
            file=src.uri,
        )
    out_prefix = join_prefix(settings.output_prefix if override is None else override, src.key)
    # One folder per object version: two executions of one key (an object replaced while it
    # converts) never read each other's plan; a rerun of the same version rewrites the same keys.
    folder = join_prefix(settings.records_prefix, src.key) + (reader.version_id or reader.etag.strip('"')) + "/"
    if plan.writes_bundle:
        # Un-publish an earlier bundle of this key before any item writes: its root goes first,
        # so a reader never sees a bundle of mixed versions, and no stale shard survives.
        delete_tree(s3, settings.output_bucket, out_prefix + bundle_name(plan) + "/")
    batches = batch_items(plan.work_items, run.batch_mb)
    records = S3Store(settings.output_bucket, folder, s3)
    records.write_bytes(PLAN_NAME, plan.model_dump_json().encode())
    records.write_bytes(WRITE_BATCHES_NAME, _BATCHES.dump_json(batches, by_alias=True))
    summary = plan.summary()
    log.info(
        "planned %s: %d series, %d channels, %d chunk files in %d work items, %d output bytes",
        src.uri,
        len(summary.series),
        summary.channels,
        summary.chunk_files,
        summary.work_items,
        summary.output_bytes,
    )
    return PlanOutput(
        source=source,
        output=S3Prefix(bucket=settings.output_bucket, prefix=out_prefix),
        plan=S3Ref(bucket=settings.output_bucket, key=records.key(PLAN_NAME)),
        manifest=S3Ref(bucket=settings.output_bucket, key=records.key(WRITE_BATCHES_NAME)),
        results=S3Prefix(bucket=settings.output_bucket, prefix=results_prefix(settings.records_prefix)),
        importer_enabled=run.importer_enabled,
        work_items=len(plan.work_items),
        batches=len(batches),
        chunk_files=summary.chunk_files,
        channels=summary.channels,
        output_bytes=summary.output_bytes,
        target=target,
        # Warnings are kept short: the full list is in plan.json.
        warnings=[w[:300] for w in plan.warnings[:10]],
    )


class OutputTooLargeError(InvalidInputError):
    """The planned output is bigger than MaxOutputGb allows."""


def check_output_size(plan: Plan, max_output_gb: float) -> None:
    """Refuse a file whose output (chunk files, bundle) would take more than ``max_output_gb`` GB (MaxOutputGb)."""
    needed = plan.output_bytes()
    if needed > max_output_gb * 1e9:
        raise OutputTooLargeError(
            f"its planned output is {needed / 1e9:,.3f} GB, more than MaxOutputGb ({max_output_gb:g} GB); "
            "raise MaxOutputGb (MAX_OUTPUT_GB) if the file really holds that much",
            file=plan.source,
        )


def results_prefix(records_prefix: str) -> str:
    """Where the Map's ResultWriter writes (one folder per map run); template.yaml says the same."""
    return f"{records_prefix}{RESULTS_FOLDER}"


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


def partials_key(plan_ref: S3Ref, item_id: str) -> str:
    """Where a work item's bundle partial results are kept: beside plan.json, in the records."""
    folder = plan_ref.key.rsplit("/", 1)[0]
    return f"{folder}/{PARTIALS_FOLDER}/{item_id}.bin"


def load_plan(s3: S3Client, ref: S3Ref) -> Plan:
    try:
        body = s3.get_object(Bucket=ref.bucket, Key=ref.key)["Body"].read()
    except Exception as exc:
        raise StorageError(f"cannot read the plan {ref.uri} ({exc})") from None
    return Plan.model_validate_json(body)


def _folder(plan: S3Ref) -> str:
    """The conversion's records folder: where its plan.json is."""
    return plan.key.rsplit("/", 1)[0] if "/" in plan.key else ""


def written_name(batch: int) -> str:
    """Where a write batch's :class:`WrittenBatch` goes, in the records folder."""
    return f"{WRITTEN_FOLDER}/batch-{batch:05d}.json"


def write_chunks(s3: S3Client, event: WriteChunksInput, *, stats: ReadStats | None = None) -> WriteChunksOutput:
    """Execute the batch's work items: read their slabs from S3, put their chunk files, then record
    what was put (``written/batch-{n:05d}.json``: each file's size and CRC-32) for Finalize."""
    started = time.perf_counter()
    check_current(s3, event.source)
    plan = load_plan(s3, event.plan)
    src = event.source
    stats = stats or ReadStats()
    reader = S3RangeReader(s3, src.bucket, src.key, version_id=src.version_id, stats=stats)
    store = ParallelS3Store(event.output.bucket, event.output.prefix, s3)
    files = payload = stored = 0
    records: list[ChunkRecord] = []
    try:
        with open_nwb(cast(BinaryIO, reader), name=src.uri, cache_bytes=H5_CACHE_BYTES) as h5:
            for item_id in event.batch.items:
                try:
                    item = plan.item(item_id)
                except KeyError:
                    raise InvalidInputError(f"work item {item_id} is not in the plan", file=src.uri) from None
                result = execute_item(h5, plan, item, store, source=reader)
                store.flush()
                if result.partials is not None:
                    key = partials_key(event.plan, item.id)
                    s3.put_object(Bucket=event.plan.bucket, Key=key, Body=result.partials)
                files += result.files
                payload += result.payload_bytes
                stored += result.stored_bytes
                records.extend(result.records)
                log.info("wrote work item %s: %d files", item_id, result.files)
    except BaseException:
        store.abandon()  # the first error is the one to report, not a PUT cancelled by it
        raise
    store.close()
    # Written last: a record names only files that are all in place.
    written = WrittenBatch(
        batch=event.batch.batch, items=event.batch.items, gzip_level=plan.options.gzip_level, files=records
    )
    S3Store(event.plan.bucket, _folder(event.plan), s3).write_bytes(
        written_name(event.batch.batch), written.model_dump_json(by_alias=True).encode()
    )
    return WriteChunksOutput(
        batch=event.batch.batch,
        items=len(event.batch.items),
        files=files,
        payload_bytes=payload,
        stored_bytes=stored,
        bytes_read=stats.bytes,
        requests=stats.requests,
        seconds=round(time.perf_counter() - started, 3),
    )


def _listing(
    s3: S3Client, bucket: str, prefix: str, *, start_after: str | None = None, under: str = ""
) -> dict[str, int]:
    """name → size of the objects directly under ``prefix`` whose name starts with ``under``."""
    out: dict[str, int] = {}
    paginator = s3.get_paginator("list_objects_v2")
    if start_after:
        pages = paginator.paginate(Bucket=bucket, Prefix=prefix + under, StartAfter=prefix + start_after)
    else:
        pages = paginator.paginate(Bucket=bucket, Prefix=prefix + under)
    for page in pages:
        for obj in page.get("Contents", []):
            name = obj["Key"][len(prefix) :]
            if name and "/" not in name:
                out[name] = int(obj["Size"])
    return out


def list_outputs(
    s3: S3Client, bucket: str, prefix: str, n_channels: int, *, threads: int = LIST_THREADS
) -> dict[str, int]:
    """Every object directly under ``prefix``, listed channel by channel in parallel.

    A 100 GB recording has ~380,000 chunk files: one listing is ~380 pages one after the other,
    one listing per channel prefix (``channel-00000``...) records them side by side. A last listing
    from past the highest channel finds files of channels an earlier version had and this one
    has not. (Names sorting before ``channel-00000`` are no chunk files and are not listed.)
    """
    out = _listing(s3, bucket, prefix, start_after=f"channel-{n_channels - 1:05d}~") if n_channels else {}
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for part in pool.map(lambda i: _listing(s3, bucket, prefix, under=f"channel-{i:05d}"), range(n_channels)):
            out.update(part)
    return out


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


def load_written(s3: S3Client, plan: S3Ref, manifest: S3Ref, gzip_level: int) -> dict[str, ChunkRecord]:
    """name -> record, from the write records of every batch of ``manifest``.

    A record counts only when it is this plan's: its batch's items and gzip level are the
    manifest's and the plan's (a rerun of the same object version with other settings shares the
    records folder). A batch with no such record contributes nothing: its files are unrecorded.
    """
    records = S3Store(plan.bucket, _folder(plan), s3)
    batches = _BATCHES.validate_json(S3Store(manifest.bucket, "", s3).read_bytes(manifest.key))

    def load(batch: Batch) -> list[ChunkRecord]:
        try:
            written = WrittenBatch.model_validate_json(records.read_bytes(written_name(batch.batch)))
        except Exception:  # not written (the batch did not finish) or unreadable
            return []
        if written.items != batch.items or written.gzip_level != gzip_level:
            return []
        return written.files

    out: dict[str, ChunkRecord] = {}
    with ThreadPoolExecutor(max_workers=LIST_THREADS) as pool:
        for files in pool.map(load, batches):
            out.update((r.name, r) for r in files)
    return out


def finalize_bundle(s3: S3Client, event: FinalizeInput, plan: Plan) -> int:
    """The bundle's reduce (from every item's partial results in the records), its unit channels
    and metadata, the root ``zarr.json`` last; then ``asset-properties.json``. Returns its channel groups.

    The partial results are 1/512 of the level-0 data (the level-5 bins of each window, with the
    default sizes: docs/bundle.md) and are read a channel block at a time, so Finalize holds one
    block's: 37 Neuropixels channels of an hour of recording are 32 MB.
    """
    src = event.source
    reader = S3RangeReader(s3, src.bucket, src.key, version_id=src.version_id)
    with open_nwb(cast(BinaryIO, reader), name=src.uri, cache_bytes=H5_CACHE_BYTES) as h5:
        return finish_bundle(
            S3Store(event.output.bucket, event.output.prefix, s3),
            plan,
            h5,
            _partial_blocks(s3, event, plan),
        )


def _partial_blocks(s3: S3Client, event: FinalizeInput, plan: Plan) -> Iterator[list[ItemPartial]]:
    """Every work item's partial results, a channel block (the items of one column range) at a time."""
    blocks: dict[tuple[int, int, int], list[WorkItem]] = {}
    for item in plan.work_items:
        blocks.setdefault((item.series, item.column_start, item.column_stop), []).append(item)

    def load(item: WorkItem) -> list[ItemPartial]:
        key = partials_key(event.plan, item.id)
        try:
            body = s3.get_object(Bucket=event.plan.bucket, Key=key)["Body"].read()
        except Exception:
            raise IncompleteOutputError(
                f"the bundle's partial results of work item {item.id} are missing (s3://{event.plan.bucket}/{key}); "
                "a WriteChunks work item did not finish",
                file=event.source.uri,
            ) from None
        return unpack_partials(body)

    with ThreadPoolExecutor(max_workers=LIST_THREADS) as pool:
        for items in blocks.values():
            yield [p for partials in pool.map(load, items) for p in partials]


def finalize(
    s3: S3Client,
    event: FinalizeInput,
    *,
    import_env: Callable[[], Mapping[str, str]] | None = None,
    upload_batch_files: int = DEFAULT_UPLOAD_BATCH_FILES,
) -> FinalizeOutput:
    """Check every chunk file, remove stale ones, write channel metadata; with the importer on,
    prepare the import (channels, import manifest) and write the upload batches for the Map."""
    plan = load_plan(s3, event.plan)
    out = event.output
    # name -> the exact size the file must have: computed for the stored framing; for compressed
    # levels, what its writer recorded (None: no record of this plan's batch names it).
    expected: dict[str, int | None] = {}
    for item in plan.work_items if plan.writes_chunks else []:
        series = plan.series[item.series]
        for chunk in series.chunks[item.chunk_start : item.chunk_stop]:
            size = framed_size(chunk.samples * 8)
            for ch in series.channels[item.column_start : item.column_stop]:
                expected[chunk_file_name(ch.index, chunk.start_us, chunk.end_us)] = size
    if plan.options.gzip_level and plan.writes_chunks:
        recorded = load_written(s3, event.plan, event.manifest, plan.options.gzip_level)
        expected = {name: (r.size if (r := recorded.get(name)) else None) for name in expected}
    n_channels = sum(len(s.channels) for s in plan.series) if plan.writes_chunks else 0
    present = list_outputs(s3, out.bucket, out.prefix, n_channels) if plan.writes_chunks else {}
    missing = sorted(n for n in expected if n not in present)
    unrecorded = sorted(n for n in expected if n in present and expected[n] is None)
    wrong = sorted(n for n in expected if n in present and expected[n] is not None and present[n] != expected[n])
    if missing or unrecorded or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} of {len(expected)} chunk files are missing (first {missing[0]})")
        if unrecorded:
            parts.append(f"{len(unrecorded)} have no write record of this plan (first {unrecorded[0]})")
        if wrong:
            parts.append(f"{len(wrong)} have the wrong size (first {wrong[0]})")
        raise IncompleteOutputError(
            "; ".join(parts) + f" under {out.uri}; a WriteChunks work item did not finish",
            file=event.source.uri,
        )
    check_current(s3, event.source)
    metadata = {metadata_file_name(i) for i, _ in plan.channel_metadata()}
    stale = sorted(n for n in present if n not in expected and n not in metadata and n.startswith("channel-"))
    # Chunk files of an earlier version of the same object (380,000 after a chunk-size change).
    delete_objects(s3, out.bucket, [out.prefix + name for name in stale])
    store = ParallelS3Store(out.bucket, out.prefix, s3)
    try:
        written = write_channel_metadata(plan, store) if plan.writes_chunks else []
    except BaseException:
        store.abandon()
        raise
    store.close()
    if plan.writes_bundle:
        finalize_bundle(s3, event, plan)
    summary = None
    upload = None
    if event.importer_enabled:
        # The parallel store is closed; the importer reads and records through a plain one.
        summary, upload = prepare_uploads(
            s3, plan, event.plan, out, import_env() if import_env else {}, event.target, batch_size=upload_batch_files
        )
    return FinalizeOutput(
        source=event.source.uri,
        output=out.uri,
        channels=len(written),
        chunk_files=len(expected),
        metadata_files=len(written),
        output_bytes=sum(i.output_bytes for i in plan.work_items),
        stored_bytes=sum(present[n] for n in expected),
        stale_removed=len(stale),
        imported=False,
        import_summary=summary,
        upload=upload,
        warnings=[w[:300] for w in plan.warnings[:10]],
    )
