"""Files stored through any HDF5 filter neuroconv writes convert exactly; damaged chunks fail with one line.

The files are written with h5py + hdf5plugin (tests/factory.py), the output checked against the
independent computation in tests/expected.py. The cloud reading the same files (direct chunk
reader or h5py over S3) is in tests/integration/test_cloud_compression.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np
import pytest

from nwb2pennsieve.errors import InvalidSeriesError, Nwb2PennsieveError
from nwb2pennsieve.local import convert_file
from nwb2pennsieve.options import ConversionOptions
from nwb2pennsieve.source.direct import fletcher32, fletcher32_matches
from tests.expected import assert_matches
from tests.factory import DATA, compression_filters, corrupt_chunk, filtered_series, write_nwb

FILTERS = compression_filters()


@pytest.mark.parametrize("name", sorted(FILTERS))
def test_every_filter_converts_exactly(tmp_path: Path, name: str) -> None:
    nwb = write_nwb(tmp_path / "f.nwb", [filtered_series(FILTERS[name])])
    with h5py.File(nwb) as f:
        assert f[DATA]._filters, "the data must really be stored through the filter"
    convert_file(nwb, tmp_path / "out", ConversionOptions(chunk_size_mb=0.004), workers=1)
    assert assert_matches(nwb, tmp_path / "out") >= 3 * 3


def stored_chunks(path: Path, filters: dict) -> list[bytes]:
    with h5py.File(path, "w") as f:
        rng = np.random.default_rng(7)
        for i, (rows, dtype) in enumerate([(1, "i2"), (359, "i2"), (360, "i2"), (1000, "f8"), (4099, "i4")]):
            ds = f.create_dataset(f"d{i}", data=rng.integers(0, 60000, rows).astype(dtype), chunks=(rows,), **filters)
            ds[-1] = -1  # an 0xffff.. word: the fold's edge case
    out = []
    with h5py.File(path) as f:
        for ds in f.values():
            mask, raw = ds.id.read_direct_chunk((0,))
            assert mask == 0
            out.append(raw)
    return out


@pytest.mark.parametrize("filters", [{"fletcher32": True}, {"fletcher32": True, "compression": "gzip"}])
def test_fletcher32_is_hdf5s_checksum(tmp_path: Path, filters: dict) -> None:
    chunks = stored_chunks(tmp_path / "c.h5", filters)
    assert any(len(c) % 2 for c in chunks) or "compression" not in filters  # odd lengths are covered
    for raw in chunks:
        assert int.from_bytes(raw[-4:], "little") == fletcher32(raw[:-4])
        assert fletcher32_matches(raw)
        flipped = bytearray(raw)
        flipped[len(raw) // 3] ^= 0x10
        assert not fletcher32_matches(bytes(flipped))


def test_fletcher32_of_all_ones_words() -> None:
    # Every word 0xffff over several 360-word blocks: sum2 wraps modulo 2**32 inside a block in C.
    data = b"\xff" * (2 * 360 * 5 + 3)
    s1 = s2 = 0
    words = [0xFFFF] * (len(data) // 2)
    for start in range(0, len(words), 360):  # the C loop, word by word
        for w in words[start : start + 360]:
            s1 += w
            s2 = (s2 + s1) & 0xFFFFFFFF
        s1, s2 = (s1 & 0xFFFF) + (s1 >> 16), (s2 & 0xFFFF) + (s2 >> 16)
    s1 += 0xFF << 8
    s2 = (s2 + s1) & 0xFFFFFFFF
    s1, s2 = (s1 & 0xFFFF) + (s1 >> 16), (s2 & 0xFFFF) + (s2 >> 16)
    s1, s2 = (s1 & 0xFFFF) + (s1 >> 16), (s2 & 0xFFFF) + (s2 >> 16)
    assert fletcher32(data) == (s2 << 16) | s1


LINE = re.compile(
    r"^f\.nwb: series /acquisition/ElectricalSeries: samples (\d+)-(\d+) \(channels 0-1\) cannot be read: "
    r"a compressed chunk does not decompress or a chunk's checksum does not match: the file is damaged or truncated$"
)


@pytest.mark.parametrize(
    "filters",
    [
        {"fletcher32": True},
        {"fletcher32": True, "compression": "gzip", "shuffle": True},
        {"compression": "gzip"},
    ],
)
def test_a_corrupted_chunk_fails_naming_file_series_and_samples(tmp_path: Path, filters: dict) -> None:
    spec = filtered_series({**filters, "chunks": (300, 2)}, samples=9000, channels=2)
    nwb = write_nwb(tmp_path / "f.nwb", [spec])
    first, stop = corrupt_chunk(nwb, 6000)  # past the rows planning reads
    out = tmp_path / "out"
    with pytest.raises(InvalidSeriesError) as caught:
        convert_file(nwb, out, ConversionOptions(chunk_size_mb=0.004), workers=1)
    line = str(caught.value)
    match = LINE.match(line)
    assert match, line
    assert int(match[1]) < stop and int(match[2]) >= first  # the chunk file holding the damaged rows
    assert not any(p.name.endswith(".bin.gz") for p in out.rglob("*"))


def test_a_filter_that_is_not_available_is_named(tmp_path: Path) -> None:
    # Blosc2: read through HDF5's plugin (Zstd, LZ4, Blosc, ... are decoded without it).
    nwb = write_nwb(tmp_path / "f.nwb", [filtered_series(FILTERS["blosc2-lz4"])])
    h5py.h5z.unregister_filter(hdf5plugin.Blosc2.filter_id)
    try:
        with pytest.raises(Nwb2PennsieveError) as caught:
            convert_file(nwb, tmp_path / "out", ConversionOptions(), workers=1)
    finally:
        assert hdf5plugin.register("blosc2", force=True)
    line = str(caught.value)
    assert "stored with an HDF5 filter (compression plugin) that is not available here" in line, line
    assert "\n" not in line and "/usr/local" not in line
