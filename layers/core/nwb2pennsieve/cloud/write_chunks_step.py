"""The WriteChunks step: execute one write batch of work items, reading their slabs from S3 and
putting their chunk files (and, with the viewer bundle, the shards of their windows) into the
version's own folder (:mod:`.layout`); then record what was put (``written/batch-{n:05d}.json``)
for Finalize. A batch of a version that is no longer the latest writes nothing (and even a writer
past that check writes only into its own version's folder, which is never published).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO, cast

from ..errors import InvalidInputError
from ..output.s3store import PUT_THREADS, ParallelS3Store
from ..plan.models import ChunkRecord, ItemResult, Plan
from ..source.direct import FETCH_THREADS
from ..source.nwb import open_nwb
from ..source.s3 import ObjectChangedError, ReadStats, S3RangeReader
from ..write.execute import execute_item
from .models import WriteChunksInput, WriteChunksOutput, WrittenBatch
from .objects import H5_CACHE_BYTES, superseded
from .records import RecordsFolder, load_plan, put_record

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

# Threads that share one S3 client (its pool holds one connection per thread: see .clients).
WRITE_THREADS = PUT_THREADS + FETCH_THREADS + 1


@dataclass
class _Written:
    """What the batch's items wrote so far (their partial results are not kept: they are put at once)."""

    files: int = 0
    payload_bytes: int = 0
    stored_bytes: int = 0
    records: list[ChunkRecord] = field(default_factory=list)

    def add(self, result: ItemResult) -> None:
        self.files += result.files
        self.payload_bytes += result.payload_bytes
        self.stored_bytes += result.stored_bytes
        self.records.extend(result.records)


def write_chunks(s3: S3Client, event: WriteChunksInput, *, stats: ReadStats | None = None) -> WriteChunksOutput:
    """Execute the batch's work items: read their slabs from S3, put their chunk files, then record
    what was put (``written/batch-{n:05d}.json``: each file's size and CRC-32) for Finalize."""
    started = time.perf_counter()
    src = event.source
    if superseded(s3, src, "WriteChunks"):
        return WriteChunksOutput(superseded=True, batch=event.batch.batch, items=len(event.batch.items))
    plan = load_plan(s3, event.plan)
    stats = stats or ReadStats()
    store = ParallelS3Store(event.output.bucket, event.output.prefix, s3)
    records = RecordsFolder.of_plan(event.plan)
    try:
        reader = S3RangeReader(s3, src.bucket, src.key, version_id=src.version_id, etag=src.etag, stats=stats)
        done = _write_items(s3, event, plan, reader, store, records)
    except ObjectChangedError:  # replaced (no version id) while being read
        store.abandon()
        if superseded(s3, src, "WriteChunks"):
            return WriteChunksOutput(superseded=True, batch=event.batch.batch, items=len(event.batch.items))
        raise
    except BaseException:
        store.abandon()  # the first error is the one to report, not a PUT cancelled by it
        raise
    store.close()
    # Written last: a record names only files that are all in place.
    written = WrittenBatch(
        batch=event.batch.batch, items=event.batch.items, gzip_level=plan.options.gzip_level, files=done.records
    )
    put_record(s3, records.written(event.batch.batch), written.model_dump_json(by_alias=True).encode())
    return WriteChunksOutput(
        batch=event.batch.batch,
        items=len(event.batch.items),
        files=done.files,
        payload_bytes=done.payload_bytes,
        stored_bytes=done.stored_bytes,
        bytes_read=stats.bytes,
        requests=stats.requests,
        seconds=round(time.perf_counter() - started, 3),
    )


def _write_items(
    s3: S3Client,
    event: WriteChunksInput,
    plan: Plan,
    reader: S3RangeReader,
    store: ParallelS3Store,
    records: RecordsFolder,
) -> _Written:
    """Execute each work item of the batch in turn; put each one's bundle partial results in the records."""
    src = event.source
    done = _Written()
    with open_nwb(cast(BinaryIO, reader), name=src.uri, cache_bytes=H5_CACHE_BYTES) as h5:
        for item_id in event.batch.items:
            try:
                item = plan.item(item_id)
            except KeyError:
                raise InvalidInputError(f"work item {item_id} is not in the plan", file=src.uri) from None
            result = execute_item(h5, plan, item, store, source=reader)
            store.flush()
            if result.partials is not None:
                put_record(s3, records.bundle_partial(item.id), result.partials)
            done.add(result)
            log.info("wrote work item %s: %d files", item_id, result.files)
    return done
