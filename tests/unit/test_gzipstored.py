"""The stored-gzip framing: any split of any payload gives the same bytes, valid gzip, of ``framed_size``."""

from __future__ import annotations

import gzip
import itertools
import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nwb2pennsieve.output.gzipstored import HEADER, MAX_BLOCK, StoredGzipWriter, framed_size


class Collect:
    """A sink keeping every byte written (the writer's only collaborator)."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writev(self, parts: list[bytes | memoryview]) -> None:
        for part in parts:
            self.data += part


def framed(payload: bytes, cuts: list[int]) -> bytes:
    """Write ``payload`` in the pieces ``cuts`` (offsets) make, return the gzip file."""
    sink = Collect()
    writer = StoredGzipWriter(sink, len(payload))
    bounds = [0, *sorted(c % (len(payload) + 1) for c in cuts), len(payload)]
    for start, end in itertools.pairwise(bounds):
        writer.write(memoryview(payload)[start:end])
    writer.close()
    return bytes(sink.data)


def check(payload: bytes, cuts: list[int]) -> None:
    whole = framed(payload, [])
    split = framed(payload, cuts)
    assert split == whole  # block boundaries depend on the total length only
    assert len(whole) == framed_size(len(payload))
    assert whole[: len(HEADER)] == HEADER
    assert gzip.decompress(whole) == payload  # gzip checks the CRC-32 and the length
    crc, size = struct.unpack("<II", whole[-8:])
    assert crc == zlib.crc32(payload) and size == len(payload)


@pytest.mark.parametrize("size", [0, 1, MAX_BLOCK - 1, MAX_BLOCK, MAX_BLOCK + 1, 2 * MAX_BLOCK, 3 * MAX_BLOCK + 7])
def test_edge_sizes_round_trip_whole_and_byte_by_block(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    check(payload, [])
    check(payload, [1, MAX_BLOCK - 1, MAX_BLOCK, MAX_BLOCK + 1, size // 2])


@settings(max_examples=150, deadline=None)
@given(
    payload=st.one_of(
        st.binary(max_size=4096),
        st.integers(min_value=0, max_value=4 * MAX_BLOCK + 3).map(lambda n: bytes(n % 251 for n in range(n))),
        st.sampled_from([b"", b"\x00" * MAX_BLOCK, b"\xff" * (MAX_BLOCK + 1)]),
    ),
    cuts=st.lists(st.integers(min_value=0, max_value=10**6), max_size=12),
)
def test_any_split_of_any_payload_gives_the_same_valid_gzip(payload: bytes, cuts: list[int]) -> None:
    check(payload, cuts)


def test_a_corrupted_file_fails_gzips_crc_check() -> None:
    # The property above relies on gzip.decompress checking the trailer: show that it does.
    data = bytearray(framed(b"payload bytes", []))
    data[len(HEADER) + 5] ^= 0xFF  # one payload byte of the first stored block
    with pytest.raises(gzip.BadGzipFile, match="CRC check failed"):
        gzip.decompress(bytes(data))


def test_more_or_fewer_bytes_than_declared_are_refused() -> None:
    writer = StoredGzipWriter(Collect(), 3)
    with pytest.raises(ValueError, match="more bytes than the declared total"):
        writer.write(b"abcd")
    writer.write(b"ab")
    with pytest.raises(ValueError, match="1 bytes short of the declared total"):
        writer.close()
