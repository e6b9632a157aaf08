"""Executing one work item for every requested output: the chunk files (:mod:`.writer`) and the
viewer bundle's shards (:class:`~.bundle.series.BundleFeeder`, a slab consumer of the same read)."""

from __future__ import annotations

import h5py

from ..bundle.series import BundleFeeder, bundle_store, first_group, pack_partials
from ..output.storage import Store
from ..plan.models import ItemResult, Plan, WorkItem
from ..source.slabs import SlabReader
from .chunks import SlabConsumer, write_work_item


def execute_item(
    h5: h5py.File, plan: Plan, item: WorkItem, store: Store, *, reader: SlabReader | None = None
) -> ItemResult:
    """Write ``item``'s outputs into ``store`` (the conversion's output folder); with the bundle, the
    result carries the item's partial results for the reduce (:func:`~.bundle.series.pack_partials`)."""
    feeder = None
    consumers: list[SlabConsumer] = []
    if plan.writes_bundle:
        series = plan.series[item.series]
        feeder = BundleFeeder(
            bundle_store(store, plan),
            series,
            item,
            first_group=first_group(plan, series),
            zstd_level=plan.options.bundle_zstd_level,
        )
        consumers.append(feeder)
    try:
        result = write_work_item(h5, plan, item, store, reader=reader, consumers=consumers)
        if feeder is None:
            return result
        return result.model_copy(update={"partials": pack_partials(feeder.finish())})
    except BaseException:
        if feeder is not None:
            feeder.abort()
        raise


__all__ = ["execute_item"]
