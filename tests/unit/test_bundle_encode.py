"""The shard encoder's Zstd frames: a reused compressor gives the one-shot bytes, whatever came before."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from backports import zstd

from nwb2pennsieve.bundle.encode import ArraySpec, ShardBuilder, compress, encode_shard
from nwb2pennsieve.output.storage import LocalStore


@pytest.mark.parametrize("level", [1, 3, 5])
def test_reused_compressor_gives_the_one_shot_frames(level: int) -> None:
    rng = np.random.default_rng(level)
    pieces = [rng.normal(size=n).astype(np.float32).tobytes() for n in (8192, 3, 8192, 0, 100, 8192)]
    pieces.append(bytes(32768))  # very compressible after noise: no state carried over
    assert [compress(p, level) for p in pieces] == [zstd.compress(p, level=level) for p in pieces]
    assert [zstd.decompress(compress(p, level)) for p in pieces] == pieces


def test_shards_are_the_same_bytes_from_any_number_of_threads() -> None:
    rng = np.random.default_rng(7)
    spec = ArraySpec(shape=(4096,), dtype="float32", chunk_rows=256, shard_rows=1024, zstd_level=3)
    data = rng.normal(size=4096).astype(np.float32)

    def shard(i: int) -> list[bytes] | None:
        return encode_shard(spec, i, data[i * 1024 : (i + 1) * 1024])

    alone = [shard(i) for i in range(4)]
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(shard, range(4))) == alone


def test_the_level_is_declared_in_the_array_metadata() -> None:
    spec = ArraySpec(shape=(10,), dtype="float32", chunk_rows=5, shard_rows=10, zstd_level=2)
    (sharding,) = spec.metadata()["codecs"]
    assert sharding["configuration"]["codecs"][1] == {"name": "zstd", "configuration": {"level": 2, "checksum": False}}


def test_a_streamed_shard_is_the_held_shard_byte_for_byte(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    spec = ArraySpec(shape=(1000,), dtype="float32", chunk_rows=64, shard_rows=512)
    data = np.random.default_rng(3).normal(size=1000).astype(np.float32)
    data[64:192] = np.nan  # two all-NaN chunks: not stored either way
    for shard in range(2):
        streamed = ShardBuilder(spec, shard, lambda shard=shard: store.open_pending(f"s{shard}"))
        for piece in np.array_split(data[shard * 512 : (shard + 1) * 512], 7):
            streamed.append(piece)
        assert streamed.commit()
        assert store.read_bytes(f"s{shard}") == b"".join(encode_shard(spec, shard, data[shard * 512 :][:512]) or [])


def test_an_empty_streamed_shard_is_no_object_and_abort_leaves_nothing(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    spec = ArraySpec(shape=(128,), dtype="float32", chunk_rows=64, shard_rows=128)
    empty = ShardBuilder(spec, 0, lambda: store.open_pending("empty"))
    empty.append(np.full(128, np.nan, dtype=np.float32))
    assert not empty.commit() and not list(store.list_names())
    half = ShardBuilder(spec, 0, lambda: store.open_pending("half"))
    half.append(np.ones(64, dtype=np.float32))  # one chunk written, the shard not complete
    half.abort()
    assert not list(tmp_path.iterdir())
