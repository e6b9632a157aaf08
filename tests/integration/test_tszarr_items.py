"""The TS-Zarr continuous writer: work items (windows of any cut, slabs of any size) and the reduce
give every level's env, mean and valid of an independent numpy computation, NaN and inf included,
and the same bytes however the series is cut."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from nwb2pennsieve.bundle.metadata import write_documents
from nwb2pennsieve.bundle.tszarr.items import StatItemWriter
from nwb2pennsieve.bundle.tszarr.layout import ValidPolicy, continuous_attributes, continuous_documents
from nwb2pennsieve.bundle.tszarr.partials import StatPartial
from nwb2pennsieve.bundle.tszarr.reduce import ChannelLevels, reduce_blocks
from nwb2pennsieve.output.storage import LocalStore
from nwb2pennsieve.plan import bundle_layout as layout
from nwb2pennsieve.plan.bundle_layout import align_windows, plan_levels
from tests.expected_tszarr import Continuous, check_level, level_count

RATE = 1000.0


@pytest.fixture(autouse=True)
def small(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"INNER_CHUNK_BINS": 16, "TARGET_SHARD_BYTES": 256, "MIN_BINS": 4}.items():
        monkeypatch.setattr(layout, name, value)


def write(folder: Path, data: np.ndarray, proposed: int, policies: list[ValidPolicy], slab: int = 37) -> Path:
    """Every window of ``data`` (``(n, channels)``) as work items, partials round-tripped, then the reduce."""
    n, width = data.shape
    levels = plan_levels(n, RATE)
    plan = align_windows(n, proposed, levels)
    store = LocalStore(folder, atomic_names=False)
    blocks: dict[int, list[StatPartial]] = {}
    for w, (a, b) in enumerate(plan.windows):
        for c, policy in enumerate(policies):  # one channel a block: each its own policy
            writer = StatItemWriter(store, plan, w, [c], zstd_level=1, policy=policy)
            for s in range(a, b, slab):
                writer.feed(data[s : min(b, s + slab), c : c + 1])
            blocks.setdefault(c, []).append(StatPartial.from_bytes(writer.finish().to_bytes()))
    channels = {c: ChannelLevels(levels, p) for c, p in enumerate(policies)}
    with_counts = reduce_blocks(store, channels, blocks.values(), 1)
    docs = {}
    for c in range(width):
        attrs = continuous_attributes(f"c{c}", f"c{c}", 0, RATE, "uV")
        docs |= continuous_documents(c, attrs, levels, 1, valid=c in with_counts)
    write_documents(store, docs)
    return folder


def check(folder: Path, data: np.ndarray) -> None:
    root = zarr.open_group(zarr.storage.LocalStore(folder, read_only=True), mode="r", use_consolidated=True)
    for c in range(data.shape[1]):
        raw = data[:, c]
        group = root[str(c)]
        np.testing.assert_array_equal(group["raw"][:], raw)
        exp = Continuous("x", 0, RATE, "uV", raw)
        nonfinite = not np.isfinite(raw).all()
        assert sorted(int(k) for k in group.group_keys()) == list(range(1, level_count(raw.size, 4)))
        for k in range(1, level_count(raw.size, 4)):
            check_level(group[str(k)], exp, k, nonfinite, c)


def objects(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def series(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    data = (rng.normal(0, 100, (n, 3)) + 1e4).astype(np.float32)  # an offset: the mean must not lose it
    data[n // 3 : n // 3 + 50, 1] = np.nan  # a gap
    data[5, 1] = np.inf
    data[n - 2, 2] = -np.inf  # in the series' last (partial) bin
    return data


@pytest.mark.parametrize("n", [4096 + 3, 9000])
def test_every_level_matches_numpy_and_every_cut_gives_the_same_bytes(tmp_path: Path, n: int) -> None:
    data = series(n)
    data[:, 0] = np.round(data[:, 0])  # finite everywhere: no valid member
    policies: list[ValidPolicy] = ["if-nonfinite", "always", "if-nonfinite"]
    runs = []
    for cut, proposed in enumerate((1, 1000, 10**6)):
        folder = write(tmp_path / str(cut), data, proposed, policies, slab=1 + 50 * cut)
        check(folder, data)
        runs.append(objects(folder))
    assert runs[0] == runs[1] == runs[2]
    assert not any("/valid/" in name for name in runs[0] if name.startswith("0/")), "a finite channel has no valid"


def test_a_non_finite_sample_in_one_window_gives_valid_counts_at_every_level(tmp_path: Path) -> None:
    """The windows that were clean write no valid shard; the reduce writes them once it knows."""
    data = series(8192, seed=3)[:, :1].copy()
    data[:] = np.round(data)
    data[-100, 0] = np.nan  # only the last window sees it
    one = objects(write(tmp_path / "one", data, 10**6, ["if-nonfinite"]))
    many = objects(write(tmp_path / "many", data, 1, ["if-nonfinite"]))
    assert one == many
    assert sum("/valid/c/" in name for name in many) > 2
    check(tmp_path / "many", data)


def test_integer_data_without_gaps_keeps_no_counts(tmp_path: Path) -> None:
    data = np.round(series(4100)[:, :1])
    data[:] = np.nan_to_num(data, nan=0.0, posinf=0.0, neginf=0.0)
    folder = write(tmp_path / "x", data, 1, ["never"])
    assert not any("valid" in name for name in objects(folder))
    check(folder, data)
