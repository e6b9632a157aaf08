"""The checking decoders (issue 17 item 1): every stored chunk of every plugin filter decodes to
h5py's values, and a damaged one either fails with HDF5's wording or decodes to what an
independent decoder of the same codec reads; never a crash, a hang or different bytes each time.

hdf5plugin's own filters are what is not trusted: its Zstd filter hands HDF5 uninitialised memory
for a frame the decoder rejects (a different output on every run), its LZ4 filter has no bounds
checks, Bitshuffle trusts its header, BZip2 can loop.
"""

from __future__ import annotations

import bz2
from pathlib import Path

import h5py
import numcodecs
import numpy as np
import pytest
from backports import zstd

from nwb2pennsieve.source.decoders import checkable, decode, pipeline, read_rows
from tests.factory import compression_filters

PLUGINS = {
    name: kw
    for name, kw in compression_filters().items()
    if name in {"zstd", "lz4", "bitshuffle", "bitshuffle-zstd", "bzip2"} or name.startswith("blosc-")
}


def _reference(name: str, raw: bytes) -> bytes | None:
    """An independent decoder of the codec (None: ours is the only one here)."""
    if name == "zstd":
        return zstd.decompress(raw)
    if name == "bzip2":
        return bz2.decompress(raw)
    if name.startswith("blosc-"):
        return bytes(numcodecs.Blosc().decode(raw))
    return None


def _dataset(path: Path, kw: dict, dtype: str, shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(5)
    data = np.cumsum(rng.integers(-40, 41, shape), axis=0).astype(dtype)
    with h5py.File(path, "w") as f:
        f.create_dataset("d", data=data, **{**kw, "chunks": (300, 2)})


@pytest.mark.parametrize("dtype", ["i2", "i4", "f8", ">i2"])
@pytest.mark.parametrize("name", sorted(PLUGINS))
def test_every_chunk_decodes_to_h5pys_values(tmp_path: Path, name: str, dtype: str) -> None:
    path = tmp_path / "d.h5"
    _dataset(path, PLUGINS[name], dtype, (1000, 3))  # partial chunks at both edges
    with h5py.File(path) as f:
        ds = f["d"]
        assert checkable(pipeline(ds))
        assert np.array_equal(read_rows(ds, 1000), ds[()])


@pytest.mark.parametrize("name", sorted(PLUGINS))
def test_every_damaged_byte_fails_or_decodes_as_an_independent_decoder_does(tmp_path: Path, name: str) -> None:
    path = tmp_path / "d.h5"
    _dataset(path, PLUGINS[name], "i2", (300, 2))
    with h5py.File(path) as f:
        ds = f["d"]
        filters = pipeline(ds)
        mask, raw = ds.id.read_direct_chunk((0, 0))
    expected = 300 * 2 * 2
    failed = 0
    for i in range(len(raw)):
        for bit in (0x01, 0x5A):
            damaged = bytearray(raw)
            damaged[i] ^= bit
            try:
                out = decode(bytes(damaged), filters, mask, expected, 2)
            except OSError as exc:
                message = str(exc)
                assert message.startswith("filter returned failure during read ("), message
                failed += 1
                continue
            assert len(out) == expected
            assert decode(bytes(damaged), filters, mask, expected, 2) == out  # the same every time
            try:
                reference = _reference(name, bytes(damaged))
            except Exception:  # the reference saw damage that ours did not
                pytest.fail(f"{name}: byte {i} ^ {bit:#x}: the independent decoder fails, ours does not")
            if reference is not None:
                assert reference == out, f"{name}: byte {i} ^ {bit:#x}"
    assert failed, "no damage was detected at all"
