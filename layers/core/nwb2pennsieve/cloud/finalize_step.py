"""The Finalize step: check every chunk file of the version folder (each of the exact size it must
have), remove stale ones (an earlier run of the same version with other settings), write the
channel metadata and the viewer bundle's reduce, **publish** the version folder (:mod:`.versions`:
the key's ``@current.json``) and remove the folders of the versions it replaced; with the importer
on, hand over to :mod:`.imports` (prepare the import, write the upload batches).

A version that is no longer the object's latest is never published: Finalize asks before anything
else and again at the publish's compare-and-swap, and then removes its own unpublished folder.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from ..bundle.finish import finish_bundle
from ..bundle.series import unpack_partials
from ..bundle.tszarr.finish import finish_tszarr
from ..errors import Nwb2PennsieveError
from ..output.gzipstored import framed_size
from ..output.s3store import PUT_THREADS, ParallelS3Store
from ..output.storage import S3Store
from ..plan.models import ChunkRecord, Plan, WorkItem, chunk_file_name, metadata_file_name
from ..source.annotation_files import SUFFIX
from ..source.nwb import open_nwb
from ..source.s3 import ObjectChangedError, S3RangeReader
from ..write.chunks import write_channel_metadata
from .imports import ImportContext, prepare_uploads
from .layout import version_token
from .models import Batch, FinalizeInput, FinalizeOutput, S3Prefix, S3Ref, Superseded, WrittenBatch
from .objects import DELETE_THREADS, H5_CACHE_BYTES, delete_objects, read_annotation_file, superseded
from .records import WRITE_BATCHES, RecordsFolder, load_plan, read_record
from .versions import discard_unpublished, publish, remove_superseded

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

LIST_THREADS = 16
# Threads that share one S3 client (its pool holds one connection per thread: see .clients).
FINALIZE_THREADS = max(LIST_THREADS, DELETE_THREADS, PUT_THREADS)


class IncompleteOutputError(Nwb2PennsieveError):
    """Finalize found chunk files missing, unrecorded or of the wrong size."""


def finalize(
    s3: S3Client,
    event: FinalizeInput,
    *,
    importing: ImportContext | None = None,
) -> FinalizeOutput | Superseded:
    """Check every chunk file, remove stale ones, write channel metadata, publish the version;
    with the importer on, prepare the import (:mod:`.imports`: as the stack's settings in
    ``importing`` say) and write the upload batches for the Map. A superseded version is not
    published (:class:`Superseded`)."""
    token = version_token(event.source)
    replaced = superseded(s3, event.source, "Finalize")  # first: a replaced version checks nothing
    if replaced:
        return _discard(s3, event, token, replaced)
    plan = load_plan(s3, event.plan)
    out = event.output
    try:
        checked = _complete_output(s3, event, plan)
    except ObjectChangedError:  # replaced (no version id) while the bundle's reduce read it
        if replaced := superseded(s3, event.source, "Finalize"):
            return _discard(s3, event, token, replaced)
        raise
    newer = publish(s3, event.folder, token, out.prefix, event.source)
    if newer:
        return _discard(s3, event, token, Superseded(source=event.source, latest=newer, step="Finalize"))
    removed = remove_superseded(s3, event.folder, token, event.source)
    summary = None
    upload = None
    if event.importer_enabled:
        # The parallel store is closed; the importer reads and records through a plain one.
        summary, upload = prepare_uploads(
            s3, plan, event.plan, out, importing or ImportContext(), event.target, source=event.source
        )
    return FinalizeOutput(
        source=event.source.uri,
        output=out.uri,
        channels=len(checked.metadata),
        chunk_files=len(checked.expected),
        metadata_files=len(checked.metadata),
        output_bytes=sum(i.output_bytes for i in plan.work_items),
        stored_bytes=sum(checked.present[n] for n in checked.expected),
        stale_removed=checked.stale,
        superseded_removed=removed,
        imported=summary is not None and upload is None,  # a finished viewer asset: nothing to do
        import_summary=summary,
        upload=upload,
        warnings=[w[:300] for w in plan.warnings[:10]],
    )


@dataclass(frozen=True)
class _Checked:
    """The version folder, complete: the expected chunk files, what is there, the metadata written."""

    expected: dict[str, int | None]
    present: dict[str, int]
    metadata: list[str]
    stale: int


def _complete_output(s3: S3Client, event: FinalizeInput, plan: Plan) -> _Checked:
    """Check the chunk files, remove stale ones, write the channel metadata and the bundle's reduce."""
    out = event.output
    expected = expected_sizes(s3, event, plan)
    n_channels = sum(len(s.channels) for s in plan.series) if plan.writes_chunks else 0
    present = list_outputs(s3, out.bucket, out.prefix, n_channels) if plan.writes_chunks else {}
    check_complete(expected, present, out, event.source)
    metadata = {metadata_file_name(i) for i, _ in plan.channel_metadata()}
    stale = sorted(n for n in present if n not in expected and n not in metadata and n.startswith("channel-"))
    # Chunk files of an earlier run of this version with other settings (380,000 after a chunk-size change).
    delete_objects(s3, out.bucket, [out.prefix + name for name in stale])
    written = _write_metadata(s3, out, plan)
    if plan.writes_bundle:
        finalize_bundle(s3, event, plan)
    return _Checked(expected=expected, present=present, metadata=written, stale=len(stale))


def _discard(s3: S3Client, event: FinalizeInput, token: str, replaced: Superseded) -> Superseded:
    """A superseded version: remove its own folder (unless it is the published one)."""
    removed = discard_unpublished(s3, event.folder, token)
    return replaced.model_copy(update={"removed": removed})


def expected_sizes(s3: S3Client, event: FinalizeInput, plan: Plan) -> dict[str, int | None]:
    """name -> the exact size each chunk file must have: computed for the stored framing; for
    compressed levels, what its writer recorded (None: no record of this plan's batch names it)."""
    expected: dict[str, int | None] = {}
    for item in plan.work_items if plan.writes_chunks else []:
        if item.aux:  # a TimeSeries of the bundle only: no chunk file
            continue
        series = plan.series[item.series]
        for chunk in series.chunks[item.chunk_start : item.chunk_stop]:
            size = framed_size(chunk.samples * 8)
            for ch in series.channels[item.column_start : item.column_stop]:
                expected[chunk_file_name(ch.index, chunk.start_us, chunk.end_us)] = size
    if plan.options.gzip_level and plan.writes_chunks:
        recorded = load_written(s3, event.plan, event.write_batches, plan.options.gzip_level)
        expected = {name: (r.size if (r := recorded.get(name)) else None) for name in expected}
    return expected


def check_complete(
    expected: Mapping[str, int | None], present: Mapping[str, int], out: S3Prefix, source: S3Ref
) -> None:
    """Raise :class:`IncompleteOutputError` when an expected chunk file is missing, unrecorded or of another size."""
    missing = sorted(n for n in expected if n not in present)
    unrecorded = sorted(n for n in expected if n in present and expected[n] is None)
    wrong = sorted(n for n in expected if n in present and expected[n] is not None and present[n] != expected[n])
    if not (missing or unrecorded or wrong):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} of {len(expected)} chunk files are missing (first {missing[0]})")
    if unrecorded:
        parts.append(f"{len(unrecorded)} have no write record of this plan (first {unrecorded[0]})")
    if wrong:
        parts.append(f"{len(wrong)} have the wrong size (first {wrong[0]})")
    raise IncompleteOutputError(
        "; ".join(parts) + f" under {out.uri}; a WriteChunks work item did not finish",
        file=source.uri,
    )


def _write_metadata(s3: S3Client, out: S3Prefix, plan: Plan) -> list[str]:
    """Every channel's metadata file (none when the formats have no chunk files); their names."""
    store = ParallelS3Store(out.bucket, out.prefix, s3)
    try:
        written = write_channel_metadata(plan, store) if plan.writes_chunks else []
    except BaseException:
        store.abandon()
        raise
    store.close()
    return written


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


def load_written(s3: S3Client, plan: S3Ref, write_batches: S3Ref, gzip_level: int) -> dict[str, ChunkRecord]:
    """name -> record, from the write records of every batch of ``write_batches``.

    A record counts only when it is this plan's: its batch's items and gzip level are the write
    batch's and the plan's (a rerun of the same object version with other settings shares the
    records folder). A batch with no such record contributes nothing: its files are unrecorded.
    """
    records = RecordsFolder.of_plan(plan)
    batches = WRITE_BATCHES.validate_json(read_record(s3, write_batches))

    def load(batch: Batch) -> list[ChunkRecord]:
        try:
            written = WrittenBatch.model_validate_json(read_record(s3, records.written(batch.batch)))
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
    """The bundle's reduce (from every item's partial results in the records), its event (or unit)
    channels, ``meta/`` and metadata, the root ``zarr.json`` last; then ``asset-properties.json``; in
    TS-Zarr the annotation files beside the bundle (those of an earlier version that this one has
    not are deleted). Returns its channel groups.

    The partial results are 1/512 of the level-0 data (the level-5 bins of each window, with the
    default sizes: docs/bundle.md; TS-Zarr's carry sums too, twice the bytes) and are read a
    channel block at a time, so Finalize holds one block's: 37 Neuropixels channels of an hour of
    recording are 32 MB (64 MB in TS-Zarr).
    """
    src = event.source
    out = event.output
    reader = S3RangeReader(s3, src.bucket, src.key, version_id=src.version_id, etag=src.etag)
    store = S3Store(out.bucket, out.prefix, s3)
    with open_nwb(cast(BinaryIO, reader), name=src.uri, cache_bytes=H5_CACHE_BYTES) as h5:
        if not plan.options.tszarr:
            return finish_bundle(store, plan, h5, _partial_blocks(s3, event, plan))
        finished = finish_tszarr(
            store, plan, h5, _partial_blocks(s3, event, plan), lambda f: read_annotation_file(s3, f)
        )
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=out.bucket, Prefix=out.prefix, Delimiter="/")
    listed = [o["Key"][len(out.prefix) :] for page in pages for o in page.get("Contents", [])]
    stale = sorted(n for n in listed if n.endswith(SUFFIX) and n not in finished.files)
    delete_objects(s3, out.bucket, [out.prefix + n for n in stale])
    for warning in finished.warnings:
        log.warning("%s: %s", src.uri, warning)
    return finished.groups


def _partial_blocks(s3: S3Client, event: FinalizeInput, plan: Plan) -> Iterator[list[Any]]:
    """Every work item's partial results, a channel block (the items of one column range) at a time."""
    records = RecordsFolder.of_plan(event.plan)
    blocks: dict[tuple[bool, int, int, int], list[WorkItem]] = {}
    for item in plan.work_items:
        blocks.setdefault((item.aux, item.series, item.column_start, item.column_stop), []).append(item)

    def load(item: WorkItem) -> list[Any]:
        ref = records.bundle_partial(item.id)
        try:
            body = read_record(s3, ref)
        except Exception:
            raise IncompleteOutputError(
                f"the bundle's partial results of work item {item.id} are missing ({ref.uri}); "
                "a WriteChunks work item did not finish",
                file=event.source.uri,
            ) from None
        return unpack_partials(body)

    with ThreadPoolExecutor(max_workers=LIST_THREADS) as pool:
        for items in blocks.values():
            yield [p for partials in pool.map(load, items) for p in partials]
