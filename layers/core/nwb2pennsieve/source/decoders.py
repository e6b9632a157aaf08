"""Checking decoders for the stored chunks of HDF5 datasets: what a chunk's filters wrote, undone by
code that fails loudly on damage, never by hdf5plugin's filters.

hdf5plugin's filters trust what they read: its Zstd filter ignores the decoder's error and hands
HDF5 a buffer partly never written (a damaged chunk decodes to different garbage on every run), its
LZ4 filter uses ``LZ4_decompress_fast`` (no bounds checks: loops, ``printf``, crashes), Bitshuffle
trusts its header (a crash), BZip2 can loop. Here each filter is undone by a decoder that checks
what it can: Zstd by ``backports.zstd`` (the frame's declared size, its end, its checksum when the
writer kept one), LZ4 and Blosc by numcodecs (``LZ4_decompress_safe``; c-blosc's size checks),
Bitshuffle's LZ4/Zstd blocks the same way, BZip2 by Python's ``bz2`` (its CRCs), deflate by zlib,
Fletcher-32 recomputed; and every chunk must decode to exactly the chunk's bytes. A failure is an
:class:`OSError` in HDF5's wording ("filter returned failure during read"), so it becomes the one
line every damaged chunk gives.

What no decoder can see: damage inside the payload of a filter without a checksum (LZ4, Blosc,
Zstd frames written without their optional checksum, which is hdf5plugin's default) decodes to
other values without any error, through HDF5 as anywhere. Only Fletcher-32 (or deflate's and
BZip2's own checks) makes such damage visible.

Blosc2 (no independent decoder without the ``blosc2`` package) and filters we do not know are left
to HDF5's plugin: the local pool then reads such a series only in worker processes, where a crash
or a hang is reported in one line (:mod:`nwb2pennsieve.local.pool`).
"""

from __future__ import annotations

import bz2
import struct
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import h5py
import numpy as np

FILTER_DEFLATE = 1
FILTER_SHUFFLE = 2
FILTER_FLETCHER32 = 3
FILTER_BZIP2 = 307
FILTER_BLOSC = 32001
FILTER_LZ4 = 32004
FILTER_BITSHUFFLE = 32008
FILTER_ZSTD = 32015
# HDF5's and h5py's own filters (deflate, shuffle, Fletcher-32, szip, n-bit, scale-offset, LZF):
# read through HDF5, which reports their failures.
BUILTIN_FILTERS = frozenset({1, 2, 3, 4, 5, 6, 32000})
_BITSHUFFLE_CODECS = {2: "lz4", 3: "zstd"}


@dataclass(frozen=True)
class Filter:
    """One filter of a dataset's pipeline: its id and its client data (``cd_values``)."""

    id: int
    values: tuple[int, ...]


def pipeline(dataset: h5py.Dataset) -> list[Filter]:
    """The dataset's filters, in the order they were applied when writing."""
    plist = dataset.id.get_create_plist()
    found = [plist.get_filter(i) for i in range(plist.get_nfilters())]
    return [Filter(int(f[0]), tuple(int(v) for v in f[2])) for f in found]


def checksum(dataset: h5py.Dataset) -> str | None:
    """What checks the stored chunks' integrity, in words; None when nothing does (damage inside a
    chunk may then decode to other values without any error, through any decoder)."""
    ids = {f.id for f in pipeline(dataset)} if dataset.chunks else set()
    if FILTER_FLETCHER32 in ids:
        return "Fletcher-32"
    if FILTER_DEFLATE in ids:
        return "deflate's Adler-32"
    if FILTER_BZIP2 in ids:
        return "BZip2's CRC"
    return None


def checkable(filters: list[Filter]) -> bool:
    """Whether every filter has a checking decoder here."""
    return all(_DECODERS.get(f.id) is not None and _usable(f) for f in filters)


def uses_plugins(filters: list[Filter]) -> bool:
    """Whether any filter is hdf5plugin's (or another plugin's) rather than HDF5's or h5py's own."""
    return any(f.id not in BUILTIN_FILTERS for f in filters)


# What :func:`~nwb2pennsieve.source.nwb.compression_name` calls the filters decoded here.
_DECODED_NAMES = ("gzip", "zstd", "lz4", "bzip2", "blosc (")


def read_through_plugin(compression: str | None) -> bool:
    """Whether a series compressed so (the plan's ``compression``) may be read through a filter
    plugin rather than HDF5's own filters or the checking decoders (Blosc2, Bitshuffle without
    compression, filters we do not know)."""
    if not compression or compression in ("lzf", "szip"):
        return False
    return not all(part.startswith(_DECODED_NAMES) for part in compression.split("+"))


def _usable(f: Filter) -> bool:
    # Bitshuffle without compression (or an unknown codec) has no container to check: HDF5's plugin.
    return f.id != FILTER_BITSHUFFLE or (len(f.values) > 4 and f.values[4] in _BITSHUFFLE_CODECS)


def _fail(what: str) -> OSError:
    return OSError(f"filter returned failure during read ({what})")


def decode(raw: bytes, filters: list[Filter], mask: int, expected: int, itemsize: int) -> bytes:
    """A stored chunk's bytes with every filter undone (``mask``: HDF5's filter mask, bit i set when
    filter i was skipped), exactly ``expected`` bytes; :class:`OSError` on any damage seen."""
    data = raw
    for i in reversed(range(len(filters))):
        if mask & (1 << i):
            continue
        f = filters[i]
        decoder = _DECODERS.get(f.id)
        if decoder is None:
            raise _fail(f"no checking decoder for filter {f.id}")
        data = decoder(data, f, itemsize, expected)
    if len(data) != expected:
        raise OSError(f"a chunk holds {len(data)} bytes, not {expected}: truncated")
    return data


# --- the decoders: (stored bytes, the filter, element size, the chunk's bytes) -> bytes -------------


def _deflate(data: bytes, f: Filter, itemsize: int, expected: int) -> bytes:
    try:
        return zlib.decompress(data)
    except zlib.error:
        raise _fail("inflate() failed") from None


def unshuffle(data: bytes, itemsize: int) -> bytes:
    """Undo HDF5's byte shuffle (byte k of every element stored together)."""
    if itemsize == 1:
        return data
    n = len(data) // itemsize
    body = np.frombuffer(data, dtype=np.uint8, count=n * itemsize)
    out = body.reshape(itemsize, n).T.tobytes()
    return out + data[n * itemsize :]


def _shuffle(data: bytes, f: Filter, itemsize: int, expected: int) -> bytes:
    return unshuffle(data, itemsize)


def fletcher32(data: bytes) -> int:
    """HDF5's Fletcher-32 checksum of ``data`` (``H5_checksum_fletcher32``), computed exactly.

    Big-endian 16-bit words; both sums folded to 16 bits (plus carry) every 360 words, ``sum2``
    kept modulo 2**32 as the C code does; an odd last byte counts as a word's high byte. A block's
    360 steps are summed at once: ``sum1`` grows by the block's total, ``sum2`` by 360 times the
    old ``sum1`` plus each word weighted by the steps left.
    """
    n = len(data) // 2
    words = np.frombuffer(data, dtype=">u2", count=n).astype(np.int64)
    sum1 = sum2 = 0
    full = n - n % 360
    steps: list[tuple[int, int, int]] = []  # (words, their total, their weighted total)
    if full:
        blocks = words[:full].reshape(-1, 360)
        weights = np.arange(360, 0, -1, dtype=np.int64)
        steps += [(360, t, w) for t, w in zip(blocks.sum(axis=1).tolist(), (blocks @ weights).tolist(), strict=True)]
    if n > full:
        rest = words[full:]
        steps.append((rest.size, int(rest.sum()), int(rest @ np.arange(rest.size, 0, -1, dtype=np.int64))))
    if len(data) % 2:
        steps.append((1, data[-1] << 8, data[-1] << 8))
    for count, total, weighted in steps:
        sum2 = (sum2 + count * sum1 + weighted) & 0xFFFFFFFF
        sum1 += total
        sum1 = (sum1 & 0xFFFF) + (sum1 >> 16)
        sum2 = (sum2 & 0xFFFF) + (sum2 >> 16)
    sum1 = (sum1 & 0xFFFF) + (sum1 >> 16)
    sum2 = (sum2 & 0xFFFF) + (sum2 >> 16)
    return (sum2 << 16) | sum1


def fletcher32_matches(data: bytes) -> bool:
    """Whether a stored chunk's trailing 4 bytes (little-endian) are the Fletcher-32 of the rest.

    HDF5 before 1.6.3 stored the checksum with its 16-bit halves byte-swapped on little-endian
    machines; HDF5 accepts that form too, and so does this.
    """
    if len(data) < 4:
        return False
    stored = int.from_bytes(data[-4:], "little")
    computed = fletcher32(data[:-4])
    c = computed.to_bytes(4, sys.byteorder)
    swapped = int.from_bytes(bytes((c[1], c[0], c[3], c[2])), sys.byteorder)
    return stored in (computed, swapped)


def _fletcher32(data: bytes, f: Filter, itemsize: int, expected: int) -> bytes:
    if not fletcher32_matches(data):
        raise _fail("Fletcher-32 checksum")
    return data[:-4]


def _zstd_frame(data: bytes, size: int, what: str = "zstd") -> bytes:
    """One whole Zstd frame of ``size`` decoded bytes, ending exactly at the end of ``data``."""
    from backports.zstd import ZstdDecompressor, ZstdError, get_frame_info

    try:
        declared = get_frame_info(data).decompressed_size
        if declared is not None and declared != size:
            raise _fail(f"{what}: the frame declares {declared} bytes, not {size}")
        decompressor = ZstdDecompressor()
        out = decompressor.decompress(data, max_length=size + 1)
    except ZstdError as exc:
        raise _fail(f"{what}: {exc}") from None
    if not decompressor.eof or decompressor.unused_data or len(out) != size:
        raise _fail(f"{what}: the frame does not end where the chunk does, or decodes to {len(out)} bytes")
    return out


def _zstd(data: bytes, f: Filter, itemsize: int, expected: int) -> bytes:
    return _zstd_frame(data, expected)


def _bzip2(data: bytes, f: Filter, itemsize: int, expected: int) -> bytes:
    decompressor = bz2.BZ2Decompressor()
    try:
        out = decompressor.decompress(data, max_length=expected + 1)
    except (OSError, ValueError, EOFError):
        raise _fail("bzip2: the stream is damaged") from None
    if not decompressor.eof or decompressor.unused_data or len(out) != expected:
        raise _fail("bzip2: the stream does not end where the chunk does")
    return out


def _lz4_block(body: bytes, size: int) -> bytes:
    """One raw LZ4 block of ``size`` decoded bytes (``LZ4_decompress_safe``, numcodecs' framing)."""
    from numcodecs import lz4

    try:
        out = lz4.decompress(struct.pack("<I", size) + body)
    except (RuntimeError, ValueError) as exc:
        raise _fail(f"lz4: {exc}") from None
    if len(out) != size:
        raise _fail(f"lz4: a block decodes to {len(out)} bytes, not {size}")
    return bytes(out)


def _blocks(data: bytes, total: int, block: int, what: str) -> tuple[list[tuple[bytes, int]], int]:
    """hdf5plugin's containers after their 12-byte header: [4-byte big-endian size, body]* for
    ``total`` decoded bytes in blocks of ``block``; (each body with its decoded size, where they end)."""
    if block <= 0:
        raise _fail(f"{what}: a block size of {block}")
    pos, done, out = 12, 0, []
    while done < total:
        n = min(block, total - done)
        if pos + 4 > len(data):
            raise _fail(f"{what}: the blocks run past the chunk")
        (csize,) = struct.unpack(">I", data[pos : pos + 4])
        body = data[pos + 4 : pos + 4 + csize]
        if len(body) != csize:
            raise _fail(f"{what}: the blocks run past the chunk")
        out.append((body, n))
        pos += 4 + csize
        done += n
    return out, pos


def _header(data: bytes, expected: int, what: str) -> tuple[int, int]:
    if len(data) < 12:
        raise _fail(f"{what}: the chunk is shorter than its header")
    total, block = struct.unpack(">QI", data[:12])
    if total != expected:
        raise _fail(f"{what}: the chunk declares {total} bytes, not {expected}")
    return total, block


def _lz4(data: bytes, f: Filter, itemsize: int, expected: int) -> bytes:
    total, block = _header(data, expected, "lz4")
    parts, end = _blocks(data, total, min(block, total) or 1, "lz4")
    if end != len(data):
        raise _fail(f"lz4: {len(data) - end} bytes after the last block")
    return b"".join(body if len(body) == n else _lz4_block(body, n) for body, n in parts)


def unbitshuffle(planes: bytes, n: int, size: int) -> bytes:
    """Undo bitshuffle's bit transpose of one block of ``n`` elements (n % 8 == 0) of ``size`` bytes."""
    bits = np.unpackbits(np.frombuffer(planes, np.uint8).reshape(size * 8, n // 8), axis=1, bitorder="little")
    out = np.packbits(bits.reshape(size, 8, n).transpose(2, 0, 1), axis=2, bitorder="little")
    return out.reshape(n * size).tobytes()


def _bitshuffle(data: bytes, f: Filter, itemsize: int, expected: int) -> bytes:
    codec = _BITSHUFFLE_CODECS[f.values[4]]
    what = f"bitshuffle ({codec})"
    total, block_bytes = _header(data, expected, what)
    size = f.values[2] or itemsize
    n_total, block = total // size, block_bytes // size
    if block <= 0 or block % 8:
        raise _fail(f"{what}: a block of {block} elements")
    whole = n_total - n_total % 8  # the last n % 8 elements are stored as they are, after the blocks
    parts, end = _blocks(data, whole * size, block * size, what)
    out = bytearray()
    for body, n in parts:
        planes = _lz4_block(body, n) if codec == "lz4" else _zstd_frame(body, n, what)
        out += unbitshuffle(planes, n // size, size)
    if len(data) - end != (n_total - whole) * size:
        raise _fail(f"{what}: the chunk does not end after its blocks")
    return bytes(out) + data[end:]


def _blosc(data: bytes, f: Filter, itemsize: int, expected: int) -> bytes:
    from numcodecs import blosc

    if len(data) < 16:
        raise _fail("blosc: the chunk is shorter than its header")
    nbytes, _, cbytes = struct.unpack("<III", data[4:16])
    if nbytes != expected or cbytes != len(data):
        raise _fail(f"blosc: the header declares {nbytes} bytes in {cbytes}, not {expected} in {len(data)}")
    try:
        out = blosc.decompress(data)
    except (RuntimeError, ValueError) as exc:
        raise _fail(f"blosc: {exc}") from None
    return bytes(out)


_DECODERS: dict[int, Callable[[bytes, Filter, int, int], bytes]] = {
    FILTER_DEFLATE: _deflate,
    FILTER_SHUFFLE: _shuffle,
    FILTER_FLETCHER32: _fletcher32,
    FILTER_ZSTD: _zstd,
    FILTER_BZIP2: _bzip2,
    FILTER_LZ4: _lz4,
    FILTER_BITSHUFFLE: _bitshuffle,
    FILTER_BLOSC: _blosc,
}


def first_rows(dataset: h5py.Dataset, stop: int) -> np.ndarray:
    """Rows [0, stop): through HDF5, but a plugin's filters are undone by the checking decoders."""
    if dataset.chunks is None or not uses_plugins(filters := pipeline(dataset)) or not checkable(filters):
        return np.asarray(dataset[:stop])
    return read_rows(dataset, stop)


def read_rows(dataset: h5py.Dataset, stop: int) -> np.ndarray:
    """Rows [0, stop) of a chunked dataset, each stored chunk read raw and decoded here (the
    planner's first look at the data: no plugin filter decodes it)."""
    filters = pipeline(dataset)
    chunks = tuple(dataset.chunks or ())
    expected = int(np.prod(chunks)) * dataset.dtype.itemsize
    out = np.empty((stop, *dataset.shape[1:]), dtype=dataset.dtype)
    fill = dataset.fillvalue if dataset.fillvalue is not None else 0
    for r0 in range(0, stop, chunks[0]):
        for c0 in range(0, int(dataset.shape[1]) if dataset.ndim == 2 else 1, chunks[-1] if dataset.ndim == 2 else 1):
            offset = (r0, c0) if dataset.ndim == 2 else (r0,)
            info = dataset.id.get_chunk_info_by_coord(offset)
            if info.byte_offset is None:
                values = np.full(chunks, fill, dtype=dataset.dtype)
            else:
                mask, raw = dataset.id.read_direct_chunk(offset)
                data = decode(bytes(raw), filters, int(mask), expected, dataset.dtype.itemsize)
                values = np.frombuffer(data, dtype=dataset.dtype).reshape(chunks)
            r1 = min(stop, r0 + chunks[0])
            if dataset.ndim == 2:
                c1 = min(int(dataset.shape[1]), c0 + chunks[1])
                out[r0:r1, c0:c1] = values[: r1 - r0, : c1 - c0]
            else:
                out[r0:r1] = values[: r1 - r0]
    return out
