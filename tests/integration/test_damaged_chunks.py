"""A damaged chunk stored through a plugin's filter fails in one line, the same on every run
(issue 17 item 1), through the command line as a user meets it.

Before: hdf5plugin's Zstd filter ignored the decoder's error (a damaged frame converted, exit 0,
to different values on every run), its LZ4 filter trusted a size field (a loop, or ``cannot
malloc`` printed to stdout), Bitshuffle crashed the command (SIGSEGV, no message), BZip2 looped.
The damage is placed by meaning (the frame's last byte, a container's size field), not at a fixed
offset, and in a chunk past the rows planning reads, so the writers meet it.
"""

from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest

from tests.factory import DATA, compression_filters, filtered_series, write_nwb

FILTERS = compression_filters()
LINE = re.compile(
    r"^error: f\.nwb: series /acquisition/ElectricalSeries: samples \d+-\d+ \(channels 0-1\) cannot be read: "
    r"a compressed chunk does not decompress or a chunk's checksum does not match: the file is damaged or truncated$"
)


def _run(nwb: Path, out: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "nwb2pennsieve.local.cli", "convert", str(nwb), "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        # Small chunk files and work items: a 9000-sample file makes many items, for two workers.
        env={**os.environ, "CHUNK_SIZE_MB": "0.004", "MAX_ITEM_MB": "0.01", **env},
    )
    return proc, time.monotonic() - started


def _damage(path: Path, how: str) -> None:
    with h5py.File(path) as f:
        info = f[DATA].id.get_chunk_info_by_coord((6000, 0))
    start, size = int(info.byte_offset), int(info.size)
    with open(path, "r+b") as fh:
        fh.seek(start)
        raw = bytearray(fh.read(size))
        if how == "last byte":
            raw[-1] ^= 0x5A
        elif how == "size field":  # LZ4 / Bitshuffle containers: 8-byte big-endian decoded size first
            raw[:8] = struct.pack(">Q", 2**40)
        else:  # "middle": inside the compressed data (bzip2's CRCs see it)
            raw[size // 2] ^= 0x5A
        fh.seek(start)
        fh.write(bytes(raw))


@pytest.mark.parametrize(
    ("name", "how"),
    [("zstd", "last byte"), ("lz4", "size field"), ("bitshuffle", "size field"), ("bzip2", "middle")],
)
def test_a_damaged_plugin_chunk_fails_in_one_line_every_time(tmp_path: Path, name: str, how: str) -> None:
    spec = filtered_series({**FILTERS[name], "chunks": (300, 2)}, samples=9000, channels=2)
    nwb = write_nwb(tmp_path / "f.nwb", [spec])
    _damage(nwb, how)
    lines = set()
    for run, workers in enumerate(("1", "2", "1")):
        out = tmp_path / f"out{run}"
        proc, took = _run(nwb, out, WORKERS=workers, MAX_ITEM_MB="512")
        assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
        assert proc.stdout == ""  # nothing a plugin printed, no summary
        err = proc.stderr.strip().splitlines()
        assert len(err) == 1 and LINE.match(err[0]), err
        assert took < 10
        assert not out.exists() and not list(tmp_path.glob(f".out{run}*"))
        lines.add(err[0])
    assert len(lines) == 1


CRASH = (
    "error: f.nwb: series /acquisition/ElectricalSeries: reading its data crashed a worker process (SIGSEGV): "
    "a decompression filter failed on damaged data, so the file is damaged"
)


@pytest.mark.parametrize(("name", "workers"), [("gzip+shuffle", "2"), ("blosc2-lz4", "1")])
def test_a_decoder_crash_is_one_line(tmp_path: Path, name: str, workers: str) -> None:
    """A worker killed by SIGSEGV (a plugin crashing in C) ends the conversion in one line, exit 1.
    With one worker too, when the series is read through a plugin (Blosc2): the item then runs in
    a worker process, never in the command's own (whose crash would leave no line at all)."""
    spec = filtered_series({**FILTERS[name], "chunks": (300, 2)}, samples=9000, channels=2)
    nwb = write_nwb(tmp_path / "f.nwb", [spec])
    out = tmp_path / "out"
    proc, took = _run(nwb, out, WORKERS=workers, NWB2PENNSIEVE_TEST_CRASH_AT="reading")
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
    assert proc.stderr.strip().splitlines() == [CRASH]
    assert not out.exists() and not list(tmp_path.glob(".out*"))
    assert took < 20


def test_a_worker_that_stops_reading_is_stopped_within_read_stall_s(tmp_path: Path) -> None:
    """A filter looping for ever inside C (as hdf5plugin's LZ4 and BZip2 did on damaged chunks) is
    seen as a pool that reads nothing: stopped after READ_STALL_S, in one line."""
    spec = filtered_series({**FILTERS["gzip+shuffle"], "chunks": (300, 2)}, samples=9000, channels=2)
    nwb = write_nwb(tmp_path / "f.nwb", [spec])
    out = tmp_path / "out"
    proc, took = _run(nwb, out, WORKERS="2", READ_STALL_S="2", NWB2PENNSIEVE_TEST_STOP_AT="reading")
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
    assert proc.stderr.strip().splitlines() == [
        "error: f.nwb: series /acquisition/ElectricalSeries: reading its data made no progress for 2 s "
        "(READ_STALL_S), so the workers were stopped: a decompression filter may be looping on damaged data "
        "(raise READ_STALL_S for a slow disk)"
    ]
    assert 2 <= took < 10
    assert not out.exists() and not list(tmp_path.glob(".out*"))
