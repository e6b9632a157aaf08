"""The viewer bundle of whole conversions, read the way Pennsieve's reader reads it (Zarr v3,
consolidated metadata only, shard index by suffix range), against tests/expected.py's own fold
of the NWB data: LFP, timestamps with gaps, timestamps_reference_time, a Units table.

Shards and inner chunks are shrunk so a small file has many shards, many work-item windows
(items read leading rows of a chunk owned by the previous window) and a reduce step.
"""

from __future__ import annotations

import json
import multiprocessing
import shutil
from collections.abc import Iterable, Iterator
from datetime import timedelta
from pathlib import Path

import google_crc32c
import h5py
import numpy as np
import pytest
import zarr

from nwb2pennsieve.bundle.continuous import ItemPartial
from nwb2pennsieve.bundle.finish import reduce_partials
from nwb2pennsieve.local import convert as local
from nwb2pennsieve.local import convert_file, pool
from nwb2pennsieve.options import ConversionOptions
from nwb2pennsieve.output.storage import LocalStore
from nwb2pennsieve.plan import bundle_layout as layout
from nwb2pennsieve.plan.models import Plan
from tests.expected import assert_matches, expected_bundle, read_output
from tests.factory import START, SeriesSpec, gappy_timestamps, write_nwb

SMALL = {"INNER_CHUNK_BINS": 64, "TARGET_SHARD_BYTES": 1024, "MIN_BINS": 16}


@pytest.fixture
def small_shards(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SMALL.items():
        monkeypatch.setattr(layout, name, value)


def make_file(path: Path) -> Path:
    rng = np.random.default_rng(5)
    n = 30_000
    gappy = rng.integers(-2000, 2000, size=(n, 3), dtype=np.int16)
    ts = gappy_timestamps(n, 1000.0, {9_000: 2.5, 21_037: 0.0123}, start=3.0)
    lfp = rng.normal(0, 1e-4, size=(7_777, 2))
    spikes = [np.sort(rng.uniform(3.0, 40.0, size=k)) for k in (5, 40, 0, 17)]
    return write_nwb(
        path,
        [
            SeriesSpec(data=gappy, rate=None, timestamps=ts, conversion=0.195e-6, chunks=(1000, 2)),
            SeriesSpec(name="LFP1", data=lfp, rate=250.0, starting_time=0.5, where="lfp", electrodes=[0, 1]),
        ],
        timestamps_reference=START + timedelta(seconds=7, microseconds=250),
        units=spikes,
        waveform_means=rng.normal(size=(4, 12)).astype(np.float32),
    )


def reader_view(bundle: Path, tmp: Path) -> zarr.Group:
    """The bundle with every zarr.json but the root's removed: the reader uses consolidated metadata only."""
    copy = tmp / bundle.name
    shutil.copytree(bundle, copy)
    for meta in copy.rglob("zarr.json"):
        if meta.parent != copy:
            meta.unlink()
    return zarr.open_group(zarr.storage.LocalStore(copy, read_only=True), mode="r", use_consolidated=True)


@pytest.mark.parametrize("workers", [1, 2])
def test_every_level_of_every_channel_matches_an_independent_fold(
    small_shards: None, tmp_path: Path, workers: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The pool's workers must see the shrunk sizes: fork them (a forkserver worker imports afresh).
    monkeypatch.setattr(pool, "pool_context", lambda: multiprocessing.get_context("fork"))
    nwb = make_file(tmp_path / "rec.nwb")
    out = tmp_path / "out"
    result = convert_file(
        nwb,
        out,
        ConversionOptions(bundle_layout="legacy", formats="chunks,bundle", chunk_size_mb=0.01, max_item_mb=0.05),
        workers=workers,
    )
    assert len({i.window for i in result.plan.work_items if i.series == 0}) > 5  # many windows
    assert assert_matches(nwb, out) > 0  # the chunk files are what they always were
    assert json.loads((out / "asset-properties.json").read_text()) == {"root_path": "rec.zarr"}
    root = reader_view(out / "rec.zarr", tmp_path / "view")
    _, meta = read_output(out)
    want = expected_bundle(nwb, min_bins=SMALL["MIN_BINS"])
    assert sorted(root.group_keys(), key=int) == [str(i) for i in range(len(want) + 1)]
    for index, exp in enumerate(want):
        group = root[str(index)]
        assert dict(group.attrs) == {
            "id": f"channel-{index:05d}",
            "rate_hz": pytest.approx(exp.rate, rel=1e-9),
            "start_us": exp.start_us,
            "kind": "continuous",
            "name": meta[index]["name"],
            "unit": "uV",
        }
        assert group.attrs["start_us"] == meta[index]["start"]  # the chunk files' first time
        assert sorted(group.array_keys(), key=int) == [str(k) for k in range(len(exp.levels))]
        for k, level in enumerate(exp.levels):
            array = group[str(k)]
            assert array.shape == level.shape and array.dtype == np.float32
            assert array.attrs["period_us"] == pytest.approx(1e6 / exp.rate * 4**k, rel=1e-9)
            np.testing.assert_array_equal(array[:], level, err_msg=f"channel {index} level {k}")
    # the gap of the timestamped series: NaN on the grid, and its all-NaN chunks are not stored
    level0 = root["0"]["0"][:]
    assert np.isnan(level0[9_000:11_000]).all() and np.isnan(level0[11_500 + 12_037]).any()
    assert not (out / "rec.zarr" / "0" / "0" / "c" / str(10_000 // 256)).exists()


def test_units_table_becomes_a_unit_channel(small_shards: None, tmp_path: Path) -> None:
    nwb = make_file(tmp_path / "rec.nwb")
    result = convert_file(nwb, tmp_path / "out", ConversionOptions(bundle_layout="legacy", formats="bundle"), workers=1)
    size = sum(f.stat().st_size for f in (tmp_path / "out" / "rec.zarr").rglob("*") if f.is_file())
    size += (tmp_path / "out" / "asset-properties.json").stat().st_size  # the bundle's too
    assert result.bundle_bytes == size > 0
    assert result.summary_line().startswith(f"rec.nwb: 5 channels, bundle {size / 1e6:.1f} MB in ")
    root = reader_view(tmp_path / "out" / "rec.zarr", tmp_path / "view")
    unit = root["5"]
    assert unit.attrs["kind"] == "unit" and unit.attrs["id"] == "units" and unit.attrs["unit"] == "uV"
    import h5py

    with h5py.File(nwb) as f:
        times = f["units/spike_times"][()]
        ends = f["units/spike_times_index"][()]
        means = f["units/waveform_mean"][()]
    reference_us = round((START + timedelta(seconds=7, microseconds=250)).timestamp() * 1e6)
    rows = np.repeat(np.arange(4), np.diff(np.concatenate([[0], ends])))
    us = reference_us + np.rint(times * 1e6).astype(np.int64)
    order = np.argsort(us, kind="stable")
    np.testing.assert_array_equal(unit["events"][:], us[order])
    np.testing.assert_array_equal(unit["units"][:], rows[order].astype(np.uint8))
    np.testing.assert_array_equal(unit["waveforms"][:], means[rows[order]].astype(np.float32))
    assert not list((tmp_path / "out").glob("*.bin.gz"))  # bundle only: no chunk files


def test_shard_index_by_suffix_range(small_shards: None, tmp_path: Path) -> None:
    nwb = make_file(tmp_path / "rec.nwb")
    convert_file(nwb, tmp_path / "out", ConversionOptions(bundle_layout="legacy", formats="bundle"), workers=1)
    array = tmp_path / "out" / "rec.zarr" / "3" / "0"
    meta = json.loads((array / "zarr.json").read_text())
    (sharding,) = meta["codecs"]
    chunks = meta["chunk_grid"]["configuration"]["chunk_shape"][0] // sharding["configuration"]["chunk_shape"][0]
    shard = array / "c" / "1"
    with shard.open("rb") as f:
        f.seek(-(16 * chunks + 4), 2)  # the reader's suffix range request
        tail = f.read()
    assert google_crc32c.value(tail[:-4]) == int.from_bytes(tail[-4:], "little")
    entries = np.frombuffer(tail[:-4], dtype="<u8").reshape(chunks, 2)
    assert (entries[:, 0] + entries[:, 1] <= shard.stat().st_size - len(tail)).all()


def test_series_selection_writes_only_those_channels_with_their_whole_file_ids(
    small_shards: None, tmp_path: Path
) -> None:
    """--series: the selected series become the bundle's channels (groups dense from 0, ``id`` the
    whole-file channel index), the unit channel follows them; the same data as the whole file's."""
    nwb = make_file(tmp_path / "rec.nwb")
    whole = local.plan_file(nwb, ConversionOptions(bundle_layout="legacy", formats="bundle"))
    lfp = whole.series[1]
    plan = local.plan_file(
        nwb, ConversionOptions(bundle_layout="legacy", formats="chunks,bundle", series=(lfp.path,), chunk_size_mb=0.01)
    )
    assert [c.index for s in plan.series for c in s.channels] == [3, 4]
    out = tmp_path / "out"
    convert_file(nwb, out, plan, workers=1)
    root = reader_view(out / "rec.zarr", tmp_path / "view")
    assert sorted(root.group_keys(), key=int) == ["0", "1", "2"]
    assert [root[g].attrs["id"] for g in ("0", "1")] == ["channel-00003", "channel-00004"]
    assert root["2"].attrs["kind"] == "unit"
    want = expected_bundle(nwb, min_bins=SMALL["MIN_BINS"])
    for group, index in (("0", 3), ("1", 4)):
        for k, level in enumerate(want[index].levels):
            np.testing.assert_array_equal(root[group][str(k)][:], level, err_msg=f"channel {index} level {k}")
    _, meta = read_output(out)
    assert sorted(meta) == [3, 4]  # the chunk files' channels are the same ones


def test_a_second_conversion_replaces_the_bundle_whole(small_shards: None, tmp_path: Path) -> None:
    """The bundle is inside the published output (the marker lists it): a rerun is not refused as
    foreign files, and its bundle replaces the old one, leaving no shard of it behind."""
    nwb = make_file(tmp_path / "rec.nwb")
    out = tmp_path / "out"
    convert_file(nwb, out, ConversionOptions(bundle_layout="legacy", formats="bundle"), workers=1)
    marker = json.loads((out / ".nwb2pennsieve.json").read_text())
    assert "rec.zarr/" in marker["files"] and "asset-properties.json" in marker["files"]
    planted = out / "rec.zarr" / "0" / "0" / "c" / "999999"
    planted.write_bytes(b"old")
    convert_file(nwb, out, ConversionOptions(bundle_layout="legacy", formats="bundle"), workers=1)
    assert not planted.exists()
    assert (out / "rec.zarr" / "zarr.json").is_file()


def test_the_zstd_level_setting_reaches_every_array(small_shards: None, tmp_path: Path) -> None:
    nwb = make_file(tmp_path / "rec.nwb")
    result = convert_file(
        nwb,
        tmp_path / "out",
        ConversionOptions(bundle_layout="legacy", formats="bundle", bundle_zstd_level=7),
        workers=1,
    )
    assert result.plan.options.bundle_zstd_level == 7
    root = json.loads((tmp_path / "out" / "rec.zarr" / "zarr.json").read_text())
    levels = {
        codec["configuration"]["level"]
        for meta in root["consolidated_metadata"]["metadata"].values()
        if meta["node_type"] == "array"
        for sharding in meta["codecs"]
        for codec in sharding["configuration"]["codecs"]
        if codec["name"] == "zstd"
    }
    assert levels == {7}
    view = reader_view(tmp_path / "out" / "rec.zarr", tmp_path / "view")
    assert np.isfinite(view["3"]["0"][:100]).all()


def test_the_reduce_takes_the_partial_results_a_channel_block_at_a_time(
    small_shards: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocks: list[list[ItemPartial]] = []
    real = local.finish_bundle

    def watching(store: LocalStore, plan: Plan, h5: h5py.File, partials: Iterable[list[ItemPartial]], **kw: int) -> int:
        def each() -> Iterator[list[ItemPartial]]:
            for block in partials:
                blocks.append(block)
                yield block

        return real(store, plan, h5, each(), **kw)

    monkeypatch.setattr(local, "finish_bundle", watching)
    nwb = make_file(tmp_path / "rec.nwb")
    result = convert_file(
        nwb,
        tmp_path / "out",
        ConversionOptions(bundle_layout="legacy", formats="bundle", chunk_size_mb=0.01, max_item_mb=0.05),
        workers=1,
    )
    plan = result.plan
    assert not list((tmp_path / "out").glob(".*partials*"))  # the spilled partial results are gone
    blocks.sort(key=lambda b: min(b[0].channels))
    # one block per column group: the gappy series' (HDF5 chunks 2 wide), then the LFP's
    assert [sorted({c for p in b for c in p.channels}) for b in blocks] == [[0, 1], [2], [3, 4]]
    for block in blocks:  # one partial result per window (the reduce checks that they cover the series)
        assert len({p.window for p in block}) == len(block) > 1
    store = LocalStore(tmp_path / "again")
    with pytest.raises(ValueError, match="partial results for 2 of its 3 channels"):
        reduce_partials(store, plan, [blocks[0]])
    with pytest.raises(ValueError, match="in two blocks"):
        reduce_partials(store, plan, [blocks[0], blocks[0]])
    with pytest.raises(ValueError, match="does not continue level"):
        reduce_partials(store, plan, [blocks[0][1:], blocks[1]])  # a window missing
