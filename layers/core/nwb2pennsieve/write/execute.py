"""Executing one work item for every requested output, for both executors (the local pool and
WriteChunks): the reader is chosen here, once; then the chunk files (:mod:`.chunks`) and the
viewer bundle's shards (:class:`~nwb2pennsieve.bundle.series.BundleFeeder`, a slab consumer of the
same read) are written from one read of the slab."""

from __future__ import annotations

from collections.abc import Callable

import h5py

from ..bundle.series import BundleFeeder, bundle_store, first_group, pack_partials
from ..bundle.tszarr import channels as tszarr_channels
from ..bundle.tszarr.items import StatItemWriter
from ..errors import InvalidSeriesError
from ..output.storage import Store
from ..plan.bundle_layout import WindowPlan
from ..plan.items import item_rows
from ..plan.models import ItemResult, Plan, WorkItem
from ..source.direct import slab_reader
from ..source.inputs import raise_network_failure
from ..source.nwb import damage_reason
from ..source.ranges import RangeReader
from ..source.slabs import SlabReader
from .chunks import READ_ERRORS, Progress, SlabConsumer, write_work_item


def open_slab_reader(h5: h5py.File, plan: Plan, item: WorkItem, source: RangeReader | None) -> SlabReader:
    """The reader of ``item``'s slab. A file read over ranged requests (``source``: an S3 object or
    a URL) is read by its stored chunks' byte ranges where the filters allow (each worker reads
    only its own chunks); a local file through h5py, but for a plugin's filters (Zstd, LZ4, ...),
    which the checking decoders undo (:func:`~nwb2pennsieve.source.direct.slab_reader`)."""
    series = plan.series_of(item)
    try:
        rows = item_rows(series, item)  # with the bundle, the window's rows too
        return slab_reader(h5, series, item.column_start, item.column_stop, source, rows=rows)
    except READ_ERRORS as exc:
        raise InvalidSeriesError(
            f"its data cannot be opened: {damage_reason(exc)}", file=plan.source, series=series.path
        ) from None


def execute_item(
    h5: h5py.File,
    plan: Plan,
    item: WorkItem,
    store: Store,
    *,
    source: RangeReader | None = None,
    progress: Progress | None = None,
    on_block: Callable[[], None] | None = None,
) -> ItemResult:
    """Write ``item``'s outputs into ``store`` (the conversion's output folder), reading ``h5``
    (over ``source`` when it is read by ranged requests); with the bundle, the result carries the
    item's partial results for the reduce (:func:`~nwb2pennsieve.bundle.series.pack_partials`).
    ``progress`` and ``on_block``: see :func:`~.chunks.write_work_item`."""
    feeder = None
    consumers: list[SlabConsumer] = []
    if plan.writes_bundle:
        feeder = _feeder(plan, item, store)
        consumers.append(feeder)
    try:
        with open_slab_reader(h5, plan, item, source) as reader:
            result = write_work_item(
                plan, item, store, reader, consumers=consumers, progress=progress, on_block=on_block
            )
        if feeder is None:
            return result
        return result.model_copy(update={"partials": pack_partials(feeder.finish())})
    except BaseException:
        if feeder is not None:
            feeder.abort()
        raise_network_failure(source)  # h5py over a URL reports a network failure as damage
        raise


def _feeder(plan: Plan, item: WorkItem, store: Store) -> BundleFeeder:
    """The item's bundle writer: the TS-Zarr one, or the older layout's (``BUNDLE_LAYOUT=legacy``)."""
    series = plan.series_of(item)
    zstd_level = plan.options.bundle_zstd_level
    if not plan.options.tszarr:
        return BundleFeeder(
            bundle_store(store, plan), series, item, first_group=first_group(plan, series), zstd_level=zstd_level
        )
    policy = series.valid_policy

    def make_writer(store: Store, windows: WindowPlan, w: int, channels: list[int], level: int) -> StatItemWriter:
        return StatItemWriter(store, windows, w, channels, zstd_level=level, policy=policy)

    return BundleFeeder(
        bundle_store(store, plan),
        series,
        item,
        first_group=tszarr_channels.first_group(plan, series),
        zstd_level=zstd_level,
        make_writer=make_writer,
    )


__all__ = ["execute_item", "open_slab_reader"]
