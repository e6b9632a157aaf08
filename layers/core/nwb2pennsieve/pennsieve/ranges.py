"""Chunk ranges: which chunk file covers which channel and time span, registered with Pennsieve's
time-series service once the files are under the asset's prefix (pennsieve-api.md §5.9)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence

from .channels import CHUNK_RE, LocalChannel
from .client import PennsieveClient
from .errors import PennsieveError
from .manifest import remote_file_path
from .models import RangeChunk

log = logging.getLogger(__name__)

MAX_CHUNKS = 10_000  # the service's own cap per request
MAX_BYTES = 900_000  # this route's body limit is not known; API Gateway's manifest limit is ~1 MiB
_ENVELOPE = 100  # {"viewer_asset_id": "<uuid>", "chunks": []}


def range_chunk(node_id: str, local_name: str) -> RangeChunk:
    """The range of one chunk file: its channel, its first and last sample's µs, its key (relative
    to the asset's prefix: the remote name, ``N:channel:<uuid>_<start>_<end>.bin.gz``)."""
    m = CHUNK_RE.match(local_name)
    if m is None:
        raise PennsieveError(f"{local_name} is not a chunk file name")
    return RangeChunk(
        channel_node_id=node_id,
        start=int(m.group(2)),
        end=int(m.group(3)),
        s3_key=remote_file_path(node_id, local_name),
    )


def range_chunks(channels: Sequence[LocalChannel], mapping: Mapping[int, str]) -> list[RangeChunk]:
    """Every chunk file of ``channels``, each channel's in time order."""
    return [range_chunk(mapping[ch.index], name) for ch in channels for name in ch.files]


def range_batches(
    chunks: Iterable[RangeChunk], max_chunks: int = MAX_CHUNKS, max_bytes: int = MAX_BYTES
) -> Iterator[list[RangeChunk]]:
    """Requests of at most ``max_chunks`` chunks and ``max_bytes`` bytes of JSON each."""
    current: list[RangeChunk] = []
    size = _ENVELOPE
    for chunk in chunks:
        entry = len(json.dumps(chunk.body())) + 2
        if current and (len(current) >= max_chunks or size + entry > max_bytes):
            yield current
            current, size = [], _ENVELOPE
        current.append(chunk)
        size += entry
    if current:
        yield current


def register_ranges(
    client: PennsieveClient, package_id: str, dataset_id: str, asset_id: str, chunks: Sequence[RangeChunk]
) -> tuple[int, int]:
    """Register every range, batch after batch (a batch sent again is harmless: the service skips
    ranges it has). Returns (ranges created now, ranges the service already had)."""
    created = skipped = 0
    for batch in range_batches(chunks):
        result = client.register_ranges(package_id, dataset_id, asset_id, batch)
        if result.requested != len(batch) or result.created + result.skipped != len(batch):
            raise PennsieveError(
                f"the ranges call answered requested={result.requested}, created={result.created},"
                f" skipped={result.skipped} for {len(batch)} chunks"
            )
        created += result.created
        skipped += result.skipped
    log.info("ranges of asset %s: %d registered, %d already known", asset_id, created, skipped)
    return created, skipped
