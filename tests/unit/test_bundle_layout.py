"""Planning for the viewer bundle: level count, inner chunks, shards, and item windows."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nwb2pennsieve.bundle import align_windows, chunk_and_shard_bins, level_count, plan_levels


@pytest.mark.parametrize(
    ("n", "count"),
    [(0, 1), (4095, 1), (4096, 2), (4 * 4 * 1024 - 1, 2), (4 * 4 * 1024, 3), (4**7 * 1024, 8), (10**12, 8)],
)
def test_level_count_stops_at_8_or_when_the_next_level_has_under_1024_whole_bins(n: int, count: int) -> None:
    assert level_count(n) == count


def test_levels_shapes_periods_and_shards() -> None:
    levels = plan_levels(300_000, 30_000.0)
    assert [lv.level for lv in levels] == [0, 1, 2, 3, 4]  # 300000 // 4**4 = 1171; // 4**5 = 292 < 1024
    assert [lv.shape for lv in levels][:3] == [(300_000,), (75_000, 2), (18_750, 2)]
    assert levels[3].shape == (4688, 2)  # a trailing partial block is still a bin
    assert levels[2].period_us == pytest.approx(1e6 / 30_000 * 16)
    for lv in levels:
        assert lv.chunk_bins <= 8192 and lv.shard_bins % lv.chunk_bins == 0
        assert lv.shard_bins * lv.bin_bytes <= 16 * 2**20


def test_big_arrays_get_16_mib_shards_of_8192_bin_chunks() -> None:
    assert chunk_and_shard_bins(10**9, 4) == (8192, 8192 * 512)
    assert chunk_and_shard_bins(10**9, 8) == (8192, 8192 * 256)
    assert chunk_and_shard_bins(100, 8) == (100, 100)
    assert chunk_and_shard_bins(0, 4) == (1, 1)


@settings(max_examples=100, deadline=None)
@given(
    n=st.integers(1, 300_000),
    proposed=st.integers(1, 4_000_000),
    chunk=st.sampled_from([16, 64, 256, 8192]),
    target=st.sampled_from([1024, 8192, 65536, 16 * 2**20]),
)
def test_windows_never_share_a_shard_of_an_item_level(n: int, proposed: int, chunk: int, target: int) -> None:
    levels = plan_levels(n, 1000.0, inner_chunk_bins=chunk, target_shard_bytes=target)
    plan = align_windows(n, proposed, levels)
    assert plan.windows[0][0] == 0 and plan.windows[-1][1] == n
    assert all(a < b for a, b in plan.windows)
    assert all(b == a2 for (_, b), (a2, _) in zip(plan.windows, plan.windows[1:], strict=False))
    assert 1 <= plan.reduce_from <= len(levels)
    for lv in plan.item_levels:
        for shard in range(lv.shard_count):
            first = shard * lv.shard_bins * 4**lv.level
            last = min(n, (shard + 1) * lv.shard_bins * 4**lv.level) - 1
            owners = {w for w, (a, b) in enumerate(plan.windows) if a <= first < b or a <= last < b}
            assert len(owners) == 1, (lv, shard)
    if plan.reduce_from < len(levels):  # the first reduce level really has a shard across windows
        lv = levels[plan.reduce_from]
        assert any(b % lv.shard_span for _, b in plan.windows[:-1])
    coarsest = 4 ** (len(levels) - 1)
    assert all(b % coarsest == 0 for _, b in plan.windows[:-1])  # windows cut no bin of any level


def test_one_window_writes_every_level() -> None:
    levels = plan_levels(1_800_000, 30_000.0)  # 60 s of Neuropixels: under one level-0 shard
    plan = align_windows(1_800_000, 500_000, levels)
    assert plan.windows == [(0, 1_800_000)] and plan.reduce_levels == []


def test_an_hour_of_neuropixels_cuts_into_shard_windows_and_reduces_only_the_coarse_levels() -> None:
    n = 30_000 * 3600
    levels = plan_levels(n, 30_000.0)
    plan = align_windows(n, 2 * 4 * 2**20, levels)
    assert plan.windows[1][0] == 8 * 2**20  # two level-0 shards of 4 Mi samples
    # levels 1-4: one shard per level-0 shard (8, 2, 0.5, 0.125 MiB), so the items write them
    assert [lv.shard_bins for lv in levels[:5]] == [4 * 2**20, 2**20, 2**18, 2**16, 2**14]
    assert all(lv.shard_span == 4 * 2**20 for lv in levels[:5])
    assert plan.reduce_from == 5  # a level-5 shard of one level-0 shard would be 4,096 bins: under one chunk
    # the reduce reads level-5 bins: 1/512 of the level-0 bytes (2 float32 per 1,024 samples)
    assert levels[5].bins * levels[5].bin_bytes * 512 == pytest.approx(n * 4, rel=1e-3)


def test_shards_follow_the_producers_rule_when_level_0_has_one_shard() -> None:
    # 2 min of Neuropixels: one level-0 shard, so every level is written by one window anyway
    levels = plan_levels(30_000 * 120, 30_000.0)
    assert [lv.shard_bins for lv in levels] == [chunk_and_shard_bins(lv.bins, lv.bin_bytes)[1] for lv in levels]


@settings(max_examples=100, deadline=None)
@given(
    n=st.integers(1, 300_000),
    proposed=st.integers(1, 4_000_000),
    chunk=st.sampled_from([16, 64, 256]),
    target=st.sampled_from([1024, 8192, 65536]),
)
def test_the_reduce_starts_at_the_first_level_a_level_0_shard_cannot_hold_a_chunk_of(
    n: int, proposed: int, chunk: int, target: int
) -> None:
    levels = plan_levels(n, 1000.0, inner_chunk_bins=chunk, target_shard_bytes=target)
    plan = align_windows(n, proposed, levels)
    if len(plan.windows) < 2:
        assert plan.reduce_levels == []
        return
    aligned = [k for k in range(1, len(levels)) if levels[k].shard_span == levels[0].shard_span]
    assert aligned == list(range(1, len(aligned) + 1))  # the finest levels, in a run
    assert plan.reduce_from >= 1 + len(aligned)
