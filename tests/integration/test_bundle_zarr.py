"""The bundle as a reader sees it: zarr-python (consolidated metadata only), shard indexes by suffix range.

Small inner chunks and shards here, so a short series has many shards, many work-item windows
and a reduce step, and so a gap covers whole inner chunks and a whole shard.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import boto3
import google_crc32c
import numpy as np
import pytest
import zarr
from backports import zstd
from moto import mock_aws

from nwb2pennsieve.bundle import (
    ChannelInfo,
    UnitsTable,
    align_windows,
    continuous_documents,
    plan_levels,
    unit_channels,
    write_documents,
    write_series,
    write_unit_channel,
)
from nwb2pennsieve.output.storage import LocalStore, S3Store, Store

RATE = 1000.0
N = 20_000
SMALL = {"inner_chunk_bins": 64, "target_shard_bytes": 1024, "min_bins": 16}
GAP = slice(3000, 3800)  # covers level-0 inner chunks 47..58 and shard 12 ([3072, 3328)) whole


def series_data() -> np.ndarray:
    rng = np.random.default_rng(7)
    data = rng.normal(0, 50, size=(N, 3)).astype(np.float32)
    data[GAP] = np.nan
    data[12_345, 1] = np.nan  # a single missing sample
    return data


def loop_levels(column: np.ndarray, count: int) -> list[np.ndarray]:
    """An independent fold: Python loops over blocks of 4, NaN in a block -> NaN."""
    out = [column.astype(np.float32)]
    pairs = [(float(v), float(v)) for v in column]
    for _ in range(1, count):
        nxt = []
        for i in range(0, len(pairs), 4):
            block = pairs[i : i + 4]
            lows, highs = [p[0] for p in block], [p[1] for p in block]
            nan_lo, nan_hi = any(np.isnan(lows)), any(np.isnan(highs))
            nxt.append((np.nan if nan_lo else min(lows), np.nan if nan_hi else max(highs)))
        pairs = nxt
        out.append(np.array(pairs, dtype=np.float32))
    return out


def write_bundle(store: Store, proposed: int = 1024) -> None:
    data = series_data()
    levels = plan_levels(N, RATE, **SMALL)
    plan = align_windows(N, proposed, levels)
    channels = [0, 1, 2]
    write_series(store, channels, data, plan, slab_rows=700)
    docs: dict = {}
    for c in channels:
        info = ChannelInfo(index=c, id=f"ElectricalSeries/{c}", name=f"ch{c}", rate_hz=RATE, start_us=1_700_000_000)
        docs |= continuous_documents(info, levels)
    table = UnitsTable(
        name="units",
        spike_times_us=[np.array([1_700_000_000 + 1000 * (u % 17) + u], dtype=np.int64) for u in range(300)],
        waveform_means=np.arange(300 * 5, dtype=np.float32).reshape(300, 5),
    )
    for channel in unit_channels(table, first_index=3, rate_hz=30_000.0, start_us=1_700_000_000):
        docs |= write_unit_channel(store, channel)
    write_documents(store, docs)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("b") / "rec.zarr"
    write_bundle(LocalStore(root))
    return root


def test_plan_has_windows_and_a_reduce() -> None:
    plan = align_windows(N, 1024, plan_levels(N, RATE, **SMALL))
    assert len(plan.windows) > 10 and 0 < plan.reduce_from < len(plan.levels)


def test_zarr_reads_every_level_from_consolidated_metadata_only(bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy.zarr"
    shutil.copytree(bundle, copy)
    for meta in copy.rglob("zarr.json"):
        if meta.parent != copy:
            meta.unlink()  # the reader must not need them
    root = zarr.open_group(zarr.storage.LocalStore(copy, read_only=True), mode="r", use_consolidated=True)
    data = series_data()
    levels = plan_levels(N, RATE, **SMALL)
    assert sorted(root.group_keys()) == ["0", "1", "2", "3", "4"]
    for c in range(3):
        group = root[str(c)]
        assert dict(group.attrs) == {
            "id": f"ElectricalSeries/{c}",
            "rate_hz": RATE,
            "start_us": 1_700_000_000,
            "kind": "continuous",
            "name": f"ch{c}",
            "unit": "uV",
        }
        expected = loop_levels(data[:, c], len(levels))
        assert sorted(group.array_keys(), key=int) == [str(k) for k in range(len(levels))]
        for k, want in enumerate(expected):
            array = group[str(k)]
            assert array.shape == want.shape and array.dtype == np.float32
            assert array.attrs["period_us"] == pytest.approx(1000.0 * 4**k)
            np.testing.assert_array_equal(array[:], want)


def test_gaps_cost_nothing_stored(bundle: Path) -> None:
    assert not (bundle / "0" / "0" / "c" / "12").exists()  # a shard that is all gap
    assert (bundle / "0" / "0" / "c" / "11").exists()


def shard_tail(path: Path, chunks: int) -> bytes:
    """The shard index as a reader fetches it: the last 16 n + 4 bytes (a suffix range)."""
    with path.open("rb") as f:
        f.seek(-(16 * chunks + 4), 2)
        return f.read()


def test_shard_index_by_suffix_range(bundle: Path) -> None:
    data = series_data()[:, 0]
    meta = json.loads((bundle / "0" / "0" / "zarr.json").read_text())
    (sharding,) = meta["codecs"]
    per_shard = meta["chunk_grid"]["configuration"]["chunk_shape"][0] // sharding["configuration"]["chunk_shape"][0]
    chunk = sharding["configuration"]["chunk_shape"][0]
    assert sharding["configuration"]["index_codecs"][-1] == {"name": "crc32c"}
    shard = 11  # holds [2816, 3072): chunks 44..46 with data, 47 all gap
    tail = shard_tail(bundle / "0" / "0" / "c" / str(shard), per_shard)
    raw, crc = tail[:-4], int.from_bytes(tail[-4:], "little")
    assert google_crc32c.value(raw) == crc
    entries = np.frombuffer(raw, dtype="<u8").reshape(per_shard, 2)
    assert (entries[3] == 2**64 - 1).all()  # the gap's chunk is not stored
    blob = (bundle / "0" / "0" / "c" / str(shard)).read_bytes()
    for i in range(3):
        offset, nbytes = (int(v) for v in entries[i])
        values = np.frombuffer(zstd.decompress(blob[offset : offset + nbytes]), dtype="<f4")
        start = shard * per_shard * chunk + i * chunk
        np.testing.assert_array_equal(values, data[start : start + chunk])


def test_unit_channels_split_past_256_units(bundle: Path) -> None:
    root = zarr.open_group(zarr.storage.LocalStore(bundle, read_only=True), mode="r", use_consolidated=True)
    first, second = root["3"], root["4"]
    assert first.attrs["kind"] == "unit" and first.attrs["name"] == "units (units 1-256)"
    assert second.attrs["id"] == "units#1" and second.attrs["rate_hz"] == 30_000.0
    events, units, waves = second["events"][:], second["units"][:], second["waveforms"][:]
    assert events.dtype == np.int64 and units.dtype == np.uint8 and waves.shape == (44, 5)
    assert (np.diff(events) >= 0).all()
    rows = units.astype(int) + 256
    np.testing.assert_array_equal(events, 1_700_000_000 + 1000 * (rows % 17) + rows)
    np.testing.assert_array_equal(waves, np.arange(1500, dtype=np.float32).reshape(300, 5)[rows])
    assert second["waveforms"].attrs["period_us"] == pytest.approx(1e6 / 30_000)


def all_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_bytes_are_deterministic_and_do_not_depend_on_the_windows(bundle: Path, tmp_path: Path) -> None:
    again = tmp_path / "again.zarr"
    write_bundle(LocalStore(again), proposed=4096)  # other windows, other reduce split
    assert all_bytes(again) == all_bytes(bundle)


@pytest.fixture
def s3_store() -> Iterator[S3Store]:
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="out")
        yield S3Store("out", "prefix/rec.zarr", client)


def test_s3_store_gets_the_same_objects(bundle: Path, s3_store: S3Store) -> None:
    write_bundle(s3_store)
    client = s3_store.client
    keys = [o["Key"] for p in client.get_paginator("list_objects_v2").paginate(Bucket="out") for o in p["Contents"]]
    got = {k.removeprefix("prefix/rec.zarr/"): client.get_object(Bucket="out", Key=k)["Body"].read() for k in keys}
    assert got == all_bytes(bundle)
