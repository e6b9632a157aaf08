"""The floor: the same reads and the same bytes as ``nwb2pennsieve convert``, in a tight loop.

What it does, per chunk of every work item of the file's plan (the very plan ``convert`` makes)
and per column group (the columns of one HDF5 chunk): read the chunk's rows of the group with one
h5py ``read_direct`` into a contiguous buffer (no chunk cache unless the data is compressed, so
HDF5 copies uncompressed chunks straight from the file), transpose and scale it into a reused
float64 buffer with one ``np.multiply(..., out=)``, add the offset in place, byte-swap in place to
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

try:  # the same CRC-32 function as nwb2pennsieve.output.gzipstored picks
    from isal.isal_zlib import crc32
except ImportError:
    from zlib import crc32
from multiprocessing import get_context
from pathlib import Path

import h5py
import numpy as np

from nwb2pennsieve.local import plan_file
from nwb2pennsieve.options import ConversionOptions
from nwb2pennsieve.plan.models import chunk_file_name

HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
MAX_BLOCK = 65_535
BLOCK_BYTES = 32 * 1024 * 1024  # float64 bytes per block of rows (per column group)


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


def _buffer(cache: dict, tag: str, shape: tuple[int], dtype: np.dtype) -> np.ndarray:
    """A reused flat buffer of ``shape[0]`` items (grown when needed)."""
    key = (tag, dtype.str)
    have = cache.get(key)
    if have is None or have.shape[0] < shape[0]:
        have = cache[key] = np.empty(shape, dtype=dtype)
    return have[: shape[0]]


def _work(args: tuple[str, str, str, list[tuple[int, int, int, int]], bool]) -> int:
    path, plan_json, out_dir, units, whole = args
    from nwb2pennsieve.plan.models import Plan

    plan = Plan.model_validate_json(plan_json)
    written = 0
    cache: dict = {}
    with h5py.File(path, "r") as h5:
        datasets = {}
        for s_idx, c_idx, col0, col1 in units:
            series = plan.series[s_idx]
            chunk = series.chunks[c_idx]
            if s_idx not in datasets:
                datasets[s_idx] = _open(h5, series)
            ds = datasets[s_idx]
            n = chunk.samples
            two_d = len(series.shape) == 2
            step = series.hdf5_chunks[1] if two_d and series.hdf5_chunks else col1 - col0
            blocks = _block_headers(n * 8)
            for g0 in range(col0, col1, step):  # the columns of one HDF5 chunk at a time
                g1 = min(col1, g0 + step)
                gw = g1 - g0
                channels = series.channels[g0:g1]
                # µV = (x·scale + offset)·factor; without an offset, x·(scale·factor)
                scale = np.array([c.scale for c in channels])[:, None]
                offset = np.array([c.offset for c in channels])[:, None]
                shifted = bool(np.any(offset))
                if not shifted:
                    scale = scale * series.unit_factor
                rows = n if whole else max(1, min(n, BLOCK_BYTES // (8 * gw)))
                fds = []
                for c in channels:
                    name = chunk_file_name(c.index, chunk.start_us, chunk.end_us)
                    fds.append(os.open(os.path.join(out_dir, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644))
                crcs = [0] * gw
                try:
                    for r0 in range(0, n, rows):
                        r1 = min(n, r0 + rows)
                        m = r1 - r0
                        raw = _buffer(cache, "raw", (m * gw,), np.dtype(series.dtype).newbyteorder("="))
                        if two_d:
                            raw = raw.reshape(m, gw)
                            ds.read_direct(raw, np.s_[chunk.start + r0 : chunk.start + r1, g0:g1])
                        else:
                            ds.read_direct(raw, np.s_[chunk.start + r0 : chunk.start + r1])
                            raw = raw[:, None]
                        out = _buffer(cache, "out", (m * gw,), np.dtype(np.float64)).reshape(gw, m)
                        if shifted:
                            np.multiply(raw.T, scale, out=out)
                            np.add(out, offset, out=out)
                            np.multiply(out, series.unit_factor, out=out)
                            out.byteswap(inplace=True)
                        else:
                            np.multiply(raw.T, scale, out=out.view(">f8"))
                        p0, p1 = r0 * 8, r1 * 8
                        for j in range(gw):
                            row = memoryview(out[j]).cast("B")
                            crcs[j] = crc32(row, crcs[j])
                            parts: list[bytes | memoryview] = [HEADER] if r0 == 0 else []
                            for off, ln, head in blocks[p0 // MAX_BLOCK :]:
                                if off >= p1:
                                    break
                                if off >= p0:
                                    parts.append(head)
                                parts.append(row[max(off, p0) - p0 : min(off + ln, p1) - p0])
                            if r1 == n:
                                parts.append(struct.pack("<II", crcs[j], (n * 8) & 0xFFFFFFFF))
                            _writev_all(fds[j], parts)
                finally:
                    for fd in fds:
                        os.close(fd)
                written += n * 8 * gw
    return written


def _open(h5: h5py.File, series) -> h5py.Dataset:  # type: ignore[no-untyped-def]
    """The data with a chunk cache of one HDF5 chunk row if it is filtered (compressed), else none:
    uncompressed chunks read whole-width into a contiguous buffer come straight from the file."""
    dapl = h5py.h5p.create(h5py.h5p.DATASET_ACCESS)
    plain = h5[series.data_path]
    nbytes = 0
    if series.hdf5_chunks and plain.id.get_create_plist().get_nfilters():
        row = series.hdf5_chunks[0] * (series.shape[1] if len(series.shape) == 2 else 1)
        nbytes = int(1.25 * row * plain.dtype.itemsize) + (1 << 20)
    dapl.set_chunk_cache(100_003, nbytes, 1.0)
    return h5py.Dataset(h5py.h5d.open(h5.id, series.data_path.encode(), dapl))


def run(path: str, out_dir: str, workers: int, whole: bool = False) -> tuple[int, float]:
    started = time.perf_counter()
    plan = plan_file(path, ConversionOptions())
    units = [
        (item.series, c, item.column_start, item.column_stop)
        for item in plan.work_items
        for c in range(item.chunk_start, item.chunk_stop)
    ]
    os.makedirs(out_dir, exist_ok=True)
    plan_json = plan.model_dump_json()
    shares = [(path, plan_json, out_dir, units[w::workers], whole) for w in range(workers)]
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
    p.add_argument(
        "--whole-files",
        action="store_true",
        help="transpose a whole chunk of a column group, then write each file with one writev",
    )
    args = p.parse_args()
    total, seconds = run(args.file, args.output, args.workers, args.whole_files)
    print(f"floor: {Path(args.file).name}: {total / 1e6:.1f} MB in {seconds:.2f} s ({total / 1e6 / seconds:.1f} MB/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
