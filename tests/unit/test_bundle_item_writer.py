"""The item writer's level arrays against an independent fold, whatever the slabs it is fed.

The writer folds each slab as it comes (a block of 4 cut by a slab boundary is carried over) and
is handed the producer's reused buffer: slabs of any size, overwritten after each feed, must give
the same objects as the whole window fed at once, and levels equal to :func:`pyramid`'s.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from backports import zstd

from nwb2pennsieve.bundle import ItemWriter, align_windows, decode_index, plan_levels, pyramid, write_window
from nwb2pennsieve.bundle.encode import ArraySpec
from nwb2pennsieve.bundle.metadata import level_spec
from nwb2pennsieve.output.storage import LocalStore

N_BINS = 5000
CHANNELS = (3, 4, 5)


def _plan(window_bins: int):  # type: ignore[no-untyped-def]
    levels = plan_levels(N_BINS, 1000.0, min_bins=8, inner_chunk_bins=64, target_shard_bytes=1024)
    return align_windows(N_BINS, window_bins, levels)


def _data() -> np.ndarray:
    rng = np.random.default_rng(5)
    data = rng.normal(scale=100, size=(N_BINS, len(CHANNELS))).astype(np.float32)
    data[0:3] = np.nan  # a chunk that starts with NaN but holds data
    data[640:1024, 1] = np.nan  # whole chunks of one channel with no data (not stored)
    data[2001, 2] = np.nan  # one NaN: its bin is NaN at every level
    return data


def _objects(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _read_level(root: Path, spec: ArraySpec, channel: int, level: int) -> np.ndarray:
    """A level array decoded from its shard objects (NaN where a chunk or shard is absent)."""
    out = np.full((spec.shard_count * spec.shard_rows, *spec.shape[1:]), np.nan, dtype=np.float32)
    for shard in range(spec.shard_count):
        path = root / str(channel) / str(level) / spec.shard_key(shard)
        if not path.exists():
            continue
        data = path.read_bytes()
        index = decode_index(data[-(16 * spec.chunks_per_shard + 4) :], spec.chunks_per_shard)
        for i, (offset, nbytes) in enumerate(index):
            if offset == 2**64 - 1:
                continue
            chunk = np.frombuffer(zstd.decompress(data[offset : offset + nbytes]), dtype="<f4")
            a = shard * spec.shard_rows + i * spec.chunk_rows
            out[a : a + spec.chunk_rows] = chunk.reshape(spec.chunk_rows, *spec.shape[1:])
    return out[: spec.rows]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_any_slabs_from_a_reused_buffer_give_the_objects_of_one_feed(tmp_path: Path, seed: int) -> None:
    plan = _plan(2048)
    assert len(plan.windows) > 1 and plan.reduce_from < len(plan.levels)  # items write some levels, reduce the rest
    data = _data()
    rng = np.random.default_rng(seed)
    whole_store, sliced_store = LocalStore(tmp_path / "whole"), LocalStore(tmp_path / "sliced")
    buffer = np.empty((700, len(CHANNELS)), dtype=np.float32)
    for w, (a, b) in enumerate(plan.windows):
        whole = write_window(whole_store, plan, w, CHANNELS, data[a:b])
        writer = ItemWriter(sliced_store, plan, w, CHANNELS)
        at = a
        while at < b:
            n = min(b - at, int(rng.choice([1, 2, 3, 5, 7, 64, 333, 700])))
            slab = buffer[:n]
            slab[...] = data[at : at + n]
            writer.feed(slab)
            buffer[...] = -12345.0  # the producer reuses its buffer for the next block
            at += n
        sliced = writer.finish()
        assert whole is not None and sliced is not None
        np.testing.assert_array_equal(sliced.bins, whole.bins)
        assert (sliced.start_bin, sliced.channels) == (whole.start_bin, whole.channels)
    assert _objects(tmp_path / "sliced") == _objects(tmp_path / "whole")
    assert _objects(tmp_path / "whole")


def test_levels_equal_an_independent_fold(tmp_path: Path) -> None:
    plan = _plan(N_BINS)  # one window: the item writes every level
    assert plan.reduce_from == len(plan.levels) >= 4
    data = _data()
    store = LocalStore(tmp_path)
    writer = ItemWriter(store, plan, 0, CHANNELS)
    for a in range(0, N_BINS, 999):
        writer.feed(data[a : a + 999])
    assert writer.finish() is None
    for c, channel in enumerate(CHANNELS):
        expected = pyramid(data[:, c], len(plan.levels))
        for level, layout in enumerate(plan.levels):
            got = _read_level(tmp_path, level_spec(layout), channel, level)
            np.testing.assert_array_equal(got, expected[level])
    # The chunks of channel 4 with no data were not stored; its other chunks were.
    spec0 = level_spec(plan.levels[0])
    shard = tmp_path / "4" / "0" / spec0.shard_key(640 // spec0.shard_rows)
    tail = shard.read_bytes()[-(16 * spec0.chunks_per_shard + 4) :]
    index = decode_index(tail, spec0.chunks_per_shard)
    stored = [bool(offset != 2**64 - 1) for offset, _ in index]
    assert not all(stored) and any(stored)
