"""Chunk files at every gzip level: valid gzip of the payload, the same bytes whatever the split,
and level 0 byte for byte the stored framing."""

from __future__ import annotations

import gzip
import itertools
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nwb2pennsieve.local import convert_file
from nwb2pennsieve.local.cli import sample_path
from nwb2pennsieve.options import ConversionOptions
from nwb2pennsieve.output.compression import FEED_BYTES, LEVELS, DeflateGzipWriter, open_chunk_writer
from nwb2pennsieve.output.gzipstored import HEADER, StoredGzipWriter
from tests.expected import differing_objects
from tests.unit.test_gzipstored import Collect


def written(payload: bytes, cuts: list[int], level: int) -> tuple[bytes, int, int]:
    """(the file, its stored_bytes, its crc) after writing ``payload`` in the pieces ``cuts`` make."""
    sink = Collect()
    writer = open_chunk_writer(sink, len(payload), level)
    bounds = [0, *sorted(c % (len(payload) + 1) for c in cuts), len(payload)]
    for start, end in itertools.pairwise(bounds):
        writer.write(memoryview(payload)[start:end])
    writer.close()
    return bytes(sink.data), writer.stored_bytes, writer.crc


def samples(n: int, seed: int = 0) -> bytes:
    """Scaled int16-like samples as big-endian float64, like a chunk file's payload."""
    rng = np.random.default_rng(seed)
    return (np.cumsum(rng.integers(-40, 41, n)).astype(np.int16) * 0.195).astype(">f8").tobytes()


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("size", [0, 1, FEED_BYTES - 1, FEED_BYTES, FEED_BYTES + 1, 3 * FEED_BYTES + 8])
def test_every_level_writes_valid_gzip_of_the_payload(level: int, size: int) -> None:
    payload = samples(size // 8 + 1)[:size]
    data, stored, crc = written(payload, [], level)
    assert data[: len(HEADER)] == HEADER  # mtime 0 at every level
    assert gzip.decompress(data) == payload
    assert (stored, crc) == (len(data), zlib.crc32(payload))
    assert struct.unpack("<II", data[-8:]) == (zlib.crc32(payload), size)


@settings(max_examples=40, deadline=None)
@given(
    level=st.sampled_from(LEVELS),
    n=st.integers(min_value=0, max_value=40_000),
    cuts=st.lists(st.integers(min_value=0, max_value=400_000), max_size=12),
)
def test_the_bytes_never_depend_on_how_the_payload_was_split(level: int, n: int, cuts: list[int]) -> None:
    payload = samples(n, seed=n)
    assert written(payload, cuts, level)[0] == written(payload, [], level)[0]


def test_level_0_is_the_stored_framing_byte_for_byte() -> None:
    payload = samples(50_000)
    sink = Collect()
    stored = StoredGzipWriter(sink, len(payload))
    stored.write(payload)
    stored.close()
    assert written(payload, [1234, 99_999], 0)[0] == bytes(sink.data)


def test_compressed_levels_shrink_samples() -> None:
    payload = samples(131_072)  # 1 MiB: one chunk file
    sizes = [len(written(payload, [], level)[0]) for level in LEVELS]
    assert sizes[0] > len(payload)  # stored: framing on top
    assert all(s < len(payload) / 2 for s in sizes[1:])


def test_a_writer_refuses_more_or_fewer_bytes_than_declared() -> None:
    writer = open_chunk_writer(Collect(), 8, 1)
    with pytest.raises(ValueError, match="more bytes"):
        writer.write(b"\x00" * 9)
    writer.write(b"\x00" * 4)
    with pytest.raises(ValueError, match="4 bytes short"):
        writer.close()
    with pytest.raises(ValueError, match="1 to 3"):
        DeflateGzipWriter(Collect(), 8, 0)


def converted(out: Path, *, workers: int = 1, **options: Any) -> dict[str, bytes]:
    convert_file(sample_path(), out, ConversionOptions(**{"chunk_size_mb": 0.01, **options}), workers=workers)
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.name.endswith(".bin.gz")}


def test_compressed_output_is_the_same_whatever_the_workers_and_the_item_size(tmp_path: Path) -> None:
    one = converted(tmp_path / "one", gzip_level=1, workers=1)
    # A pool of 3 re-cuts the work into other items; tiny items cut it further (other block rows).
    pool = converted(tmp_path / "pool", gzip_level=1, workers=3)
    small = converted(tmp_path / "small", gzip_level=1, workers=2, max_item_mb=0.02)
    stored = converted(tmp_path / "stored", gzip_level=0, workers=1)
    assert len(one) > 10
    assert differing_objects(pool, one) == [] and differing_objects(small, one) == []
    assert {n: gzip.decompress(b) for n, b in one.items()} == {n: gzip.decompress(b) for n, b in stored.items()}
    assert sum(map(len, one.values())) < sum(map(len, stored.values()))


def test_outputs_compare_by_samples_where_the_deflate_stream_may_differ() -> None:
    payload = struct.pack(">512d", *np.linspace(-300.0, 300.0, 512))
    ours, other = Collect(), Collect()
    for sink, deflate in ((ours, None), (other, zlib)):
        writer = DeflateGzipWriter(sink, len(payload), 1)
        if deflate is not None:
            writer._compressor = deflate.compressobj(1, deflate.DEFLATED, -15)  # another deflate stream
        writer.write(payload)
        writer.close()
    a, b = bytes(ours.data), bytes(other.data)
    assert a != b and gzip.decompress(a) == gzip.decompress(b) == payload
    assert differing_objects({"c.bin.gz": a, "m.json": b"{}"}, {"c.bin.gz": b, "m.json": b"{}"}) == []
    changed = bytearray(payload)
    changed[-1] ^= 1
    third = Collect()
    writer = DeflateGzipWriter(third, len(payload), 1)
    writer.write(bytes(changed))
    writer.close()
    assert differing_objects({"c.bin.gz": bytes(third.data)}, {"c.bin.gz": a}) == ["c.bin.gz"]
    assert differing_objects({"m.json": b"{}"}, {"m.json": b"[]", "n": b""}) == ["m.json", "n"]
