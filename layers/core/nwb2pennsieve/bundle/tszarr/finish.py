"""The TS-Zarr bundle's last step (the local pool's parent, or Finalize in the cloud).

In order: the reduce of the continuous channels (a channel block at a time); the event channels
(Units tables, NWB annotations, annotation files) read again and written whole, with an
annotation file beside the bundle for each NWB annotation source; ``meta/`` (unless
``DEIDENTIFY``); every ``zarr.json`` with the root's last (the commit point: its consolidated
metadata holds every node but ``meta/``); then ``asset-properties.json`` beside the bundle.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import h5py

from ... import __version__
from ...errors import InvalidInputError
from ...output.storage import Store
from ...plan.models import Plan
from ...plan.sources import EventSource, IntervalsSource, NdjsonSource, UnitsSource
from ...source import recording
from ...source.annotation_files import parse
from ...source.annotations import read_annotation_series, read_intervals
from ...source.spikes import read_units
from ..metadata import ASSET_PROPERTIES, asset_properties, write_documents
from ..series import bundle_name, bundle_store
from ..sink import put
from .annotations import Built, file_annotations, nwb_annotations
from .channels import channel_levels, continuous_channels, continuous_docs
from .events import EventChannel, write_event_channel
from .partials import StatPartial
from .reduce import reduce_blocks
from .units import unit_channels

CONVERTER = "nwb2pennsieve"
ReadFile = Callable[[NdjsonSource], bytes]


@dataclass
class Finished:
    """What the last step wrote: channel groups, the annotation files beside the bundle, warnings."""

    groups: int
    files: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def meta_document(h5: h5py.File, onset_us: int) -> dict[str, Any]:
    """``meta/zarr.json``: subject, session (``start_us``: the onset, the bundle's only wall-clock
    value) and source (converter, version, NWB version)."""
    source = {"converter": CONVERTER, "version": __version__}
    if (nwb := recording.nwb_version(h5)) is not None:
        source["nwb_version"] = nwb
    return {
        "zarr_format": 3,
        "node_type": "group",
        "attributes": {
            "subject": recording.subject(h5),
            "session": {**recording.session(h5), "start_us": int(onset_us)},
            "source": source,
        },
    }


def finish_tszarr(
    output: Store,
    plan: Plan,
    h5: h5py.File,
    partials: Iterable[Sequence[StatPartial]],
    read_file: ReadFile,
) -> Finished:
    """Reduce, write the event channels, ``meta/`` and every ``zarr.json`` (root last), then
    ``asset-properties.json``, into ``output`` (the conversion's output folder)."""
    zstd_level = plan.options.bundle_zstd_level
    store = bundle_store(output, plan)
    onset = plan.bundle_onset_us
    if onset is None:
        raise ValueError(f"{plan.source}: a TS-Zarr plan without an onset")
    with_counts = reduce_blocks(store, channel_levels(plan), partials, zstd_level)
    docs = continuous_docs(plan, onset, with_counts, zstd_level)
    continuous = continuous_channels(plan)
    done = Finished(groups=len(continuous))
    names = {ch.name: ch.group for ch in continuous}
    for source in plan.event_sources:
        for built in _event_channels(plan, h5, source, done.groups, names, read_file):
            docs |= write_event_channel(store, built.channel, onset, zstd_level)
            done.groups += 1
            done.warnings += built.warnings
            if built.file is not None:
                put(output, built.file[0], built.file[1])
                done.files.append(built.file[0])
    if not plan.options.deidentify:
        put(store, "meta/zarr.json", (json.dumps(meta_document(h5, onset), indent=2) + "\n").encode())
    write_documents(store, docs)
    put(output, ASSET_PROPERTIES, asset_properties(bundle_name(plan)))
    return done


def _reference_us(plan: Plan) -> int:
    return plan.timestamps_reference_us if plan.timestamps_reference_us is not None else plan.session_start_us


def _event_channels(
    plan: Plan, h5: h5py.File, source: EventSource, group: int, names: dict[str, int], read_file: ReadFile
) -> list[Built]:
    deidentify = plan.options.deidentify
    if isinstance(source, NdjsonSource):
        data = read_file(source)
        if hashlib.sha256(data).hexdigest() != source.sha256:
            raise InvalidInputError(
                f"annotation file {source.file} changed since the conversion was planned", file=plan.source
            )
        parsed = parse(source.file, data, session_start_us=plan.session_start_us, source=plan.source)
        return [file_annotations(source, parsed, group, names, deidentify=deidentify)]
    node = h5[source.path]
    assert isinstance(node, h5py.Group)
    if isinstance(source, UnitsSource):
        data_ = read_units(source.path, node, _reference_us(plan))
        rate = source.waveform_rate or (plan.series[0].rate if plan.series else None)
        channels: list[EventChannel] = unit_channels(source, data_, group, rate)
        return [Built(channel=ch) for ch in channels]
    rows = (read_intervals if isinstance(source, IntervalsSource) else read_annotation_series)(
        node, _reference_us(plan)
    )
    return [nwb_annotations(source, rows, group, deidentify=deidentify, session_start_us=plan.session_start_us)]
