"""The plan: JSON round trip, work-item layout, chunk arithmetic, and the `plan` command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nwb2pennsieve.local import plan_file
from nwb2pennsieve.local.cli import main, sample_path
from nwb2pennsieve.options import ConversionOptions
from nwb2pennsieve.plan.models import Plan
from tests.factory import SeriesSpec, gappy_timestamps, write_nwb


def test_plan_round_trips_through_json() -> None:
    plan = plan_file(sample_path(), ConversionOptions(chunk_size_mb=0.01, max_item_mb=0.05))
    again = Plan.model_validate_json(plan.model_dump_json())
    assert again == plan
    assert again.file_names() == plan.file_names()


def test_work_items_cover_every_chunk_file_once(tmp_path: Path) -> None:
    t = gappy_timestamps(5000, 1000.0, {1234: 3.0})
    nwb = write_nwb(tmp_path / "w.nwb", [SeriesSpec(data=np.zeros((5000, 20)), timestamps=t, chunks=(1000, 6))])
    plan = plan_file(
        nwb, ConversionOptions(chunk_size_mb=0.002, max_item_mb=0.02)
    )  # 262 samples/chunk, ≤ 10 chunk files/item
    names = plan.file_names()
    assert len(names) == len(set(names)) == 20 * sum(len(s.chunks) for s in plan.series)
    for item in plan.work_items:
        series = plan.series[item.series]
        chunks = series.chunks[item.chunk_start : item.chunk_stop]
        assert len({c.segment for c in chunks}) == 1, "an item never spans a gap"
        assert item.column_start % 6 == 0, "channel blocks start on HDF5 chunk columns"
        assert item.output_bytes <= 0.02 * 2**20 or item.chunk_stop - item.chunk_start == 1
    assert [c.stop - c.start for c in plan.series[0].chunks][:5] == [262, 262, 262, 262, 186]


def test_chunk_size_rounding_and_times() -> None:
    plan = plan_file(sample_path(), ConversionOptions(chunk_size_mb=1))
    raw = plan.series[0]
    assert plan.chunk_samples == 131072
    assert raw.chunks[0].start_us == plan.session_start_us + 500_000  # starting_time 0.5 s
    assert raw.chunks[-1].end_us == plan.session_start_us + 500_000 + 19_999 * 100  # 10 kHz, 20,000 samples


def test_plan_command_prints_json(capsys) -> None:
    assert main(["plan", str(sample_path())]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["channels"] == 16
    assert [s["path"] for s in report["series"]] == [
        "/acquisition/ElectricalSeriesRaw",
        "/processing/ecephys/LFP/ElectricalSeriesLFP",
    ]
    assert len(report["series"][1]["segments"]) == 2
    assert report["work_items"] >= 2


def test_plan_full_is_the_plan(capsys) -> None:
    assert main(["plan", "--full", str(sample_path())]) == 0
    assert Plan.model_validate_json(capsys.readouterr().out).source == "sample.nwb"


def test_column_chunked_data_gets_narrow_items(tmp_path: Path, monkeypatch) -> None:
    """Data chunked one tall chunk per channel: a channel block's chunk row must fit the cache budget."""
    import nwb2pennsieve.plan.items as planner

    data = np.zeros((4000, 12), dtype=np.int16)
    nwb = write_nwb(tmp_path / "cols.nwb", [SeriesSpec(data=data, chunks=(4000, 1))])
    assert plan_file(nwb, ConversionOptions(chunk_size_mb=0.01)).work_items[0].column_stop == 12
    monkeypatch.setattr(planner, "CHUNK_ROW_BUDGET", 4000 * 2 * 5)  # room for a row of 5 chunks
    plan = plan_file(nwb, ConversionOptions(chunk_size_mb=0.01))
    assert {i.column_stop - i.column_start for i in plan.work_items} == {5, 2}


def test_the_local_pool_recuts_big_items_by_the_planners_rules(tmp_path: Path, monkeypatch) -> None:
    import nwb2pennsieve.plan.items as items_module

    nwb = write_nwb(tmp_path / "big.nwb", [SeriesSpec(data=np.zeros((20000, 2)), chunks=(1000, 1))])
    plan = plan_file(nwb, ConversionOptions(chunk_size_mb=0.01))
    assert len(plan.work_items) == 1  # one item fits the default budget
    monkeypatch.setattr(items_module, "MIN_ITEM_BYTES", 1)
    items = items_module.recut_items(plan, n_workers=2)
    assert len(items) >= 8
    assert sorted(n for u in items for n in plan.item_file_names(u)) == sorted(plan.file_names())
    assert [u.output_bytes for u in items] == sorted((u.output_bytes for u in items), reverse=True)


def test_local_bundle_items_of_compressed_data_are_never_narrower_than_an_hdf5_chunk(tmp_path: Path) -> None:
    """A bundle window cannot be shorter than a level-0 shard, so a budget narrows the channel block
    instead. In the plan (the cloud: an S3 store holds a shard until it is put) the budget bounds
    memory and wins; the local pool streams shards to files, so it keeps compressed data in whole
    HDF5 chunks, which narrower blocks would each decompress again."""
    from nwb2pennsieve.plan.items import recut_items

    data = np.arange(20000 * 16, dtype=np.int16).reshape(20000, 16)
    planned, recut = {}, {}
    for compression in ("gzip", None):
        nwb = write_nwb(
            tmp_path / f"{compression}.nwb", [SeriesSpec(data=data, chunks=(1000, 8), compression=compression)]
        )
        plan = plan_file(nwb, ConversionOptions(chunk_size_mb=0.01, max_item_mb=0.5, formats="bundle"))
        planned[compression] = {i.column_stop - i.column_start for i in plan.work_items}
        items = recut_items(plan, n_workers=2)
        recut[compression] = {i.column_stop - i.column_start for i in items}
        assert sorted((i.window, c) for i in items for c in range(i.column_start, i.column_stop)) == sorted(
            (i.window, c) for i in plan.work_items for c in range(i.column_start, i.column_stop)
        )  # the same windows, every channel once
    assert max(planned["gzip"]) < 8 and max(planned[None]) < 8  # the budget (memory) narrows both
    assert recut == {"gzip": {8}, None: planned[None]}


@pytest.mark.parametrize(("chunk_size_mb", "samples"), [(1, 131072), (0.01, 1310), (0.3, 39321), (1e-9, 1)])
def test_samples_per_chunk_round_down_as_the_reference_does(chunk_size_mb: float, samples: int) -> None:
    """Pennsieve's reference: int(CHUNK_SIZE_MB × 1 MiB / 8 bytes), rounded down (never up past the size)."""
    assert ConversionOptions(chunk_size_mb=chunk_size_mb).chunk_samples == samples
