"""The floor: the same reads and the same bytes as ``nwb2pennsieve convert``, in a tight loop.

What it does, per chunk of every work item of the file's plan (the very plan ``convert`` makes):
read the chunk's whole slab (all the item's columns, the chunk's rows) with one h5py
``read_direct``; for groups of channels, transpose it in blocks of rows while scaling into a reused
float64 buffer (``np.multiply(..., out=)``), add the offset in place, byte-swap in place to
big-endian; then write each channel's file with **one** ``os.writev`` of the gzip "stored" framing
(header, stored-block headers interleaved with views of the channel's row, CRC-32 + size trailer).
Files are written straight under their final names (no temporary name, no rename, no metadata).
Chunks are dealt round-robin to ``--workers`` forked processes, which is as even as it gets.

Nothing in it is shared with the converter but the plan, so its output checks ours: the bench
compares the two byte for byte.

    python bench/floor.py FILE OUTDIR [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
import time
import zlib
from multiprocessing import get_context
from pathlib import Path

import h5py
import numpy as np
from nwb2pennsieve.models import chunk_file_name
from nwb2pennsieve.runner import plan_file

HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
MAX_BLOCK = 65_535
GROUP_BYTES = 64 * 1024 * 1024  # float64 bytes per group of channels
ROW_BLOCK = 4096  # rows per transpose block


def _block_headers(nbytes: int) -> list[tuple[int, int, bytes]]:
    """(offset, length, 5-byte header) of each stored deflate block of an ``nbytes`` payload."""
    out = []
    for off in range(0, nbytes, MAX_BLOCK):
        n = min(MAX_BLOCK, nbytes - off)
        out.append((off, n, struct.pack("<BHH", 1 if off + n == nbytes else 0, n, n ^ 0xFFFF)))
    return out or [(0, 0, b"\x01\x00\x00\xff\xff")]


def _writev_all(fd: int, parts: list[bytes | memoryview]) -> None:
    views = [memoryview(p) for p in parts]
    while views:
        written = os.writev(fd, views[:1024])  # IOV_MAX
        while views and written >= views[0].nbytes:
            written -= views[0].nbytes
            views.pop(0)
        if written:
            views[0] = views[0][written:]


def _buffer(cache: dict, tag: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A reused buffer of at least ``shape`` (first axis may be shorter in use)."""
    key = (tag, shape[1:], dtype.str)
    have = cache.get(key)
    if have is None or have.shape[0] < shape[0]:
        have = cache[key] = np.empty(shape, dtype=dtype)
    return have[: shape[0]]


def _work(args: tuple[str, str, str, list[tuple[int, int, int, int]]]) -> int:
    path, plan_json, out_dir, units = args
    from nwb2pennsieve.models import Plan

    plan = Plan.model_validate_json(plan_json)
    written = 0
    cache: dict = {}
    # A chunk cache holding one row of the dataset's HDF5 chunks (without one, HDF5 reads a
    # partially selected chunk row by row); the widest series sets it.
    cache_bytes = 1 << 20
    for s in plan.series:
        if s.hdf5_chunks:
            row_bytes = (
                s.hdf5_chunks[0] * (s.shape[1] if len(s.shape) == 2 else 1) * np.dtype(s.dtype).itemsize
            )
            cache_bytes = max(cache_bytes, int(1.25 * row_bytes) + (1 << 20))
    with h5py.File(path, "r", rdcc_nbytes=cache_bytes, rdcc_nslots=100_003) as h5:
        for s_idx, c_idx, col0, col1 in units:
            series = plan.series[s_idx]
            chunk = series.chunks[c_idx]
            ds = h5[series.data_path]
            n, width = chunk.samples, col1 - col0
            two_d = len(series.shape) == 2
            raw = _buffer(
                cache, "raw", (n, width) if two_d else (n,), np.dtype(series.dtype).newbyteorder("=")
            )
            if two_d:
                ds.read_direct(raw, np.s_[chunk.start : chunk.stop, col0:col1])
            else:
                ds.read_direct(raw, np.s_[chunk.start : chunk.stop])
                raw = raw[:, None]
            channels = series.channels[col0:col1]
            scale = np.array([c.scale for c in channels])[:, None]
            offset = np.array([c.offset for c in channels])[:, None]
            blocks = _block_headers(n * 8)
            group = max(1, min(width, GROUP_BYTES // (8 * n)))
            buf = _buffer(cache, "out", (n * group,), np.dtype(np.float64))[: n * group].reshape(group, n)
            for g0 in range(0, width, group):
                g1 = min(width, g0 + group)
                out = buf[: g1 - g0]
                for r0 in range(0, n, ROW_BLOCK):
                    r1 = min(n, r0 + ROW_BLOCK)
                    np.multiply(raw[r0:r1, g0:g1].T, scale[g0:g1], out=out[:, r0:r1])
                if np.any(offset[g0:g1]):
                    np.add(out, offset[g0:g1], out=out)
                out.byteswap(inplace=True)
                for j in range(g1 - g0):
                    row = memoryview(out[j]).cast("B")
                    parts: list[bytes | memoryview] = [HEADER]
                    for off, ln, head in blocks:
                        parts.append(head)
                        parts.append(row[off : off + ln])
                    parts.append(struct.pack("<II", zlib.crc32(row), (n * 8) & 0xFFFFFFFF))
                    name = chunk_file_name(channels[g0 + j].index, chunk.start_us, chunk.end_us)
                    fd = os.open(os.path.join(out_dir, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                    try:
                        _writev_all(fd, parts)
                    finally:
                        os.close(fd)
                    written += n * 8
    return written


def run(path: str, out_dir: str, workers: int) -> tuple[int, float]:
    started = time.perf_counter()
    plan = plan_file(path)
    units = [
        (item.series, c, item.column_start, item.column_stop)
        for item in plan.work_items
        for c in range(item.chunk_start, item.chunk_stop)
    ]
    os.makedirs(out_dir, exist_ok=True)
    plan_json = plan.model_dump_json()
    shares = [(path, plan_json, out_dir, units[w::workers]) for w in range(workers)]
    if workers == 1:
        total = _work(shares[0])
    else:
        with get_context("fork").Pool(workers) as pool:
            total = sum(pool.map(_work, shares, chunksize=1))
    return total, time.perf_counter() - started


def main() -> int:
    p = argparse.ArgumentParser(description="the floor for nwb2pennsieve convert")
    p.add_argument("file")
    p.add_argument("output")
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    total, seconds = run(args.file, args.output, args.workers)
    print(
        f"floor: {Path(args.file).name}: {total / 1e6:.1f} MB in {seconds:.2f} s "
        f"({total / 1e6 / seconds:.1f} MB/s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
