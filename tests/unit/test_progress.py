"""The progress bar and the summary line say what happened, at every gzip level and format.

The bar's total is the plan's float64 bytes (``output_bytes``); what the pool reports must add up
to exactly that (it once counted compressed file bytes: at GZIP_LEVEL 1-3 the bar stopped near
a quarter, then jumped to done). The summary line's files and MB are the output folder's own.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from nwb2pennsieve.bundle.metadata import ASSET_PROPERTIES
from nwb2pennsieve.local import convert_file, plan_file
from nwb2pennsieve.options import ConversionOptions
from nwb2pennsieve.output.publish import MARKER_NAME
from tests.factory import SeriesSpec, write_nwb


@pytest.fixture(scope="module")
def walk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random walk (deflate shrinks it about 4x), two series, with a gap in the second."""
    rng = np.random.default_rng(3)
    data = np.cumsum(rng.integers(-40, 41, size=(24_000, 6)), axis=0).astype(np.int16)
    times = np.concatenate([np.arange(6_000), np.arange(6_000) + 9_000]) / 1000.0
    series = [
        SeriesSpec(data=data, chunks=(4096, 2), compression="gzip"),
        SeriesSpec(name="Second", data=data[:12_000, :3], rate=None, timestamps=times, electrodes=[0, 1, 2]),
    ]
    return write_nwb(tmp_path_factory.mktemp("in") / "walk.nwb", series)


LINE = re.compile(
    r"walk\.nwb: 9 channels, (?:(\d+) files \((\d+) chunk files \+ (\d+) channel metadata\), ([\d.]+) MB)?"
    r"(?:, )?(?:bundle ([\d.]+) MB)? in [\d.]+ s \(([\d.]+) MB of samples(?:, [\d.]+ MB/s)?\) -> "
)


def on_disk(out: Path, *, bundle: bool) -> tuple[int, int, int]:
    """(files, their bytes) of the chunk files and channel metadata, and the bundle's bytes."""
    bundle_parts = {"walk.zarr", ASSET_PROPERTIES}
    files = [p for p in out.iterdir() if p.name != MARKER_NAME and p.name not in bundle_parts]
    in_bundle = [p for p in out.rglob("*") if p.is_file() and p.relative_to(out).parts[0] in bundle_parts]
    assert bool(in_bundle) == bundle
    return len(files), sum(p.stat().st_size for p in files), sum(p.stat().st_size for p in in_bundle)


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize(
    ("formats", "level"),
    [
        ("chunks", 0),
        ("chunks", 1),
        ("chunks", 2),
        ("chunks", 3),
        ("chunks,bundle", 0),
        ("chunks,bundle", 1),
        ("bundle", 1),
    ],
)
def test_progress_reaches_the_bar_total_and_the_summary_is_the_folder(
    walk: Path, tmp_path: Path, formats: str, level: int, workers: int
) -> None:
    options = ConversionOptions(formats=formats, gzip_level=level, chunk_size_mb=0.02, max_item_mb=0.1)
    plan = plan_file(walk, options)
    total = sum(i.output_bytes for i in plan.work_items)  # what the command's bar counts to
    told: list[int] = []
    result = convert_file(walk, tmp_path / "out", plan, workers=workers, progress=told.append)
    assert sum(told) == total and all(n > 0 for n in told)
    if workers == 1:  # chunk by chunk (a pool's counter is read five times a second: any number of times)
        assert len(told) > 4

    found = LINE.match(result.summary_line())
    assert found, result.summary_line()
    files, disk, bundle = on_disk(tmp_path / "out", bundle="bundle" in formats)
    if "chunks" in formats:
        assert int(found[1]) == files == int(found[2]) + int(found[3])
        assert int(found[3]) == 9  # a channel metadata file per channel
        assert float(found[4]) == round(disk / 1e6, 1)
    if "bundle" in formats:
        assert float(found[5]) == round(bundle / 1e6, 1)
    assert float(found[6]) == round(total / 1e6, 1)
    if level > 0:  # compressed: the size on disk is not the samples' size
        assert disk < total / 2 or formats == "bundle"
