"""The Plan step: plan an S3 object version, reading only its metadata; write its plan and write
batches into its records folder (:mod:`.records`).

Where things go (:mod:`.layout`), for an input object ``a/b.nwb`` at version token ``<t>``:
- ``{OUTPUT_PREFIX}a/b/@v/<t>/``: the version folder: the chunk files and channel metadata, exactly
  what the local pool writes into its output directory (and the importer's import records); with
  the viewer bundle (``OUTPUT_FORMATS`` with ``bundle``) also ``b.zarr/`` and
  ``asset-properties.json``: WriteChunks writes the shards of its items' windows, Finalize the
  reduce, the unit channels and every ``zarr.json``, the root's last;
- ``{OUTPUT_PREFIX}a/b/@current.json``: the published version (Finalize, :mod:`.versions`);
- ``{RECORDS_PREFIX}a/b/@v/<t>/``: the records (:mod:`.records`);
- ``{RECORDS_PREFIX}map-results/``: the maps' ResultWriter output, one folder per map run.

Plan deletes nothing: a version folder is new, and a rerun of the same version rewrites the same
names. A version that is no longer the latest is not planned at all (outcome ``superseded``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, BinaryIO, cast

from ..errors import InvalidInputError, Nwb2PennsieveError
from ..plan.events import FoundFile
from ..plan.models import Plan, WorkItem
from ..plan.survey import build_plan
from ..source.nwb import open_nwb
from ..source.s3 import ObjectChangedError, ReadStats, S3RangeReader
from .imports import choose_import_target
from .layout import check_key_lengths, output_folder, version_folder, version_token
from .models import Batch, ConversionSettings, PlanInput, PlanOutput, S3Prefix, S3Ref, Superseded
from .objects import H5_CACHE_BYTES, annotation_files, superseded
from .records import WRITE_BATCHES, RecordsFolder, map_results, put_record
from .settings import CloudSettings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

MAX_ITEMS_PER_BATCH = 500


class OutputTooLargeError(InvalidInputError):
    """The planned output is bigger than MaxOutputGb allows."""


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
) -> PlanOutput | Superseded:
    """Plan the conversion of one S3 object version, reading only its metadata; write the plan and
    the write batches. A version that is no longer the latest is left alone (:class:`Superseded`)."""
    run = settings.conversion_settings(event.overrides)
    src = event.source
    folder = output_prefix(settings, event.overrides.output_prefix, src)
    replaced = superseded(s3, src, "Plan")  # before anything is read or written
    if replaced:
        return replaced
    # With the importer on, a missing target fails here, before any conversion work.
    target = choose_import_target(s3, src, event.overrides) if run.importer_enabled else None
    try:
        reader = S3RangeReader(s3, src.bucket, src.key, version_id=src.version_id, etag=src.etag, stats=stats)
    except ObjectChangedError:  # replaced (no version id) since the check above
        if replaced := superseded(s3, src, "Plan"):
            return replaced
        raise
    # Pin the version planned (its version id, else its ETag): every writer reads the very same bytes.
    pinned = S3Ref(
        bucket=src.bucket, key=src.key, version_id=reader.version_id, etag=None if reader.version_id else reader.etag
    )
    token = version_token(pinned)
    out_prefix = version_folder(folder, token)
    records = RecordsFolder.of_version(settings.output_bucket, settings.records_prefix, src.key, token)
    check_key_lengths(out_prefix, records.prefix, src.key.rsplit("/", 1)[-1], file=src.uri)
    files = annotation_files(s3, src) if run.options.tszarr else []
    plan = _plan(reader, src, run, settings.max_output_gb, files)
    batches = batch_items(plan.work_items, run.batch_mb)
    put_record(s3, records.plan, plan.model_dump_json().encode())
    put_record(s3, records.write_batches, WRITE_BATCHES.dump_json(batches, by_alias=True))
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
        source=pinned,
        output=S3Prefix(bucket=settings.output_bucket, prefix=out_prefix),
        folder=S3Prefix(bucket=settings.output_bucket, prefix=folder),
        plan=records.plan,
        write_batches=records.write_batches,
        results=map_results(settings.output_bucket, settings.records_prefix),
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


def _plan(
    reader: S3RangeReader, src: S3Ref, run: ConversionSettings, max_output_gb: float, files: list[FoundFile]
) -> Plan:
    """The plan of the object ``reader`` reads (with the annotation ``files`` beside it), refused
    when its output is over ``max_output_gb``."""
    if reader.size == 0:
        raise InvalidInputError("the file is empty (0 bytes)", file=src.uri)
    with open_nwb(cast(BinaryIO, reader), name=src.uri, cache_bytes=H5_CACHE_BYTES) as h5:
        plan = build_plan(h5, source=src.uri, options=run.options, annotation_files=files)
    check_output_size(plan, max_output_gb)
    return plan


def output_prefix(settings: CloudSettings, override: str | None, src: S3Ref) -> str:
    """The key's output folder: ``{OutputPrefix}<key stem>/``, or under the execution input's
    ``outputPrefix`` (which must lie under OutputPrefix)."""
    if override is not None and not override.startswith(settings.output_prefix):
        # The functions' IAM policies allow writes under the stack's OutputPrefix only.
        raise InvalidInputError(
            f"outputPrefix {override!r} must start with the stack's OutputPrefix {settings.output_prefix!r}",
            file=src.uri,
        )
    try:
        return output_folder(settings.output_prefix if override is None else override, src.key)
    except Nwb2PennsieveError as exc:
        raise exc.with_file(src.uri) from None


def check_output_size(plan: Plan, max_output_gb: float) -> None:
    """Refuse a file whose output (chunk files, bundle) would take more than ``max_output_gb`` GB (MaxOutputGb)."""
    needed = plan.output_bytes()
    if needed > max_output_gb * 1e9:
        raise OutputTooLargeError(
            f"its planned output is {needed / 1e9:,.3f} GB, more than MaxOutputGb ({max_output_gb:g} GB); "
            "raise MaxOutputGb (MAX_OUTPUT_GB) if the file really holds that much",
            file=plan.source,
        )
