"""Compare our viewer bundle with Pennsieve's producer (ts-zarr-py) on a file it handles correctly.

Writes a small rate-based acquisition NWB file (int16, conversion, channel_conversion, offset;
no gaps), runs ts-zarr-py on it in a virtual environment of its own (made here on first use,
outside the repository's .venv), writes our bundle of the same samples with
``nwb2pennsieve.bundle``, and compares every array (values, shapes, dtypes), every attribute,
and the chunk/shard shapes, with zarr-python from our dev extras. Prints what matched and what
differs; exits 1 when values, shapes or attributes differ beyond the documented differences.

    .venv/bin/python -m bench.compare_bundle_anchor --anchor PATH/TO/ts-zarr-py [--venv DIR]

With ``--nwb FILE ...`` it compares whole conversions instead: ``nwb2pennsieve convert FILE
--formats bundle`` against the anchor on each file (rate-based acquisition files, e.g. from
bench/generate.py). Two documented differences are then expected and reported, not counted:
``id`` (ours is the chunk files' channel name, docs/bundle.md) and the shards of levels 1-4 of
a channel longer than one level-0 shard (they span one level-0 shard).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np
import zarr

from nwb2pennsieve.bundle import ChannelInfo, align_windows, continuous_documents, plan_levels, write_series
from nwb2pennsieve.bundle.metadata import write_documents
from nwb2pennsieve.output.storage import LocalStore
from nwb2pennsieve.source.nwb import session_start
from tests.factory import SeriesSpec, write_nwb

ANCHOR_PACKAGES = ["zarr", "numcodecs", "numpy", "pynwb", "h5py"]


def anchor_venv(venv: Path) -> Path:
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *ANCHOR_PACKAGES], check=True)
    return python


def make_file(path: Path) -> Path:
    rng = np.random.default_rng(3)
    data = rng.integers(-3000, 3000, size=(70_000, 4), dtype=np.int16)
    spec = SeriesSpec(
        data=data, rate=30_000.0, starting_time=1.25, conversion=0.195e-6, offset=1e-5,
        channel_conversion=[1.0, 0.5, 2.0, 1.5],
    )  # fmt: skip
    return write_nwb(path, [spec])


def ours(nwb: Path, out: Path) -> None:
    """Our bundle of the file's one series: scaled as the anchor and our chunk files scale, float32 µV."""
    with h5py.File(nwb, "r") as h5:
        series = h5["acquisition/ElectricalSeries"]
        data = series["data"]
        raw = data[()].astype(np.float64)
        conversion = float(data.attrs["conversion"])
        offset = float(data.attrs.get("offset", 0.0))
        per_channel = series["channel_conversion"][()] if "channel_conversion" in series else np.ones(raw.shape[1])
        values = ((raw * conversion * per_channel + offset) * 1e6).astype(np.float32)
        rate = float(series["starting_time"].attrs["rate"])
        start_us = session_start(h5)[1] + int(np.rint(float(series["starting_time"][()]) * 1e6))
        ids = [int(i) for i in h5["general/extracellular_ephys/electrodes/id"][()]]
    store = LocalStore(out)
    levels = plan_levels(values.shape[0], rate)
    plan = align_windows(values.shape[0], values.shape[0], levels)
    channels = list(range(values.shape[1]))
    write_series(store, channels, values, plan)
    docs: dict = {}
    for c in channels:
        info = ChannelInfo(index=c, id=str(ids[c]), name=str(ids[c]), rate_hz=rate, start_us=start_us)
        docs |= continuous_documents(info, levels)
    write_documents(store, docs)


def compare(a_path: Path, b_path: Path, *, whole_file: bool = False) -> list[str]:
    """Differences between the anchor's bundle (a) and ours (b); prints what matched.

    ``whole_file``: ours is a whole conversion, so ``id`` and the aligned shards of levels 1-4
    differ by design (noted, not counted).
    """
    a = zarr.open_group(a_path, mode="r", use_consolidated=True)
    b = zarr.open_group(b_path, mode="r", use_consolidated=True)
    problems: list[str] = []
    notes: set[str] = set()
    if sorted(a.group_keys()) != sorted(b.group_keys()):
        return [f"channel groups differ: {sorted(a.group_keys())} vs {sorted(b.group_keys())}"]
    arrays = 0
    for key in sorted(a.group_keys(), key=int):
        ga, gb = a[key], b[key]
        attrs_a, attrs_b = dict(ga.attrs), dict(gb.attrs)
        if whole_file and attrs_a.get("id") != attrs_b.get("id"):
            notes.add("id: anchor the electrode id ('7'), ours the chunk files' channel name ('channel-00007')")
            attrs_a["id"] = attrs_b.get("id")
        if attrs_a != attrs_b:
            problems.append(f"{key}: attributes {attrs_a} vs {attrs_b}")
        if sorted(ga.array_keys()) != sorted(gb.array_keys()):
            problems.append(f"{key}: levels {sorted(ga.array_keys())} vs {sorted(gb.array_keys())}")
            continue
        for name in sorted(ga.array_keys(), key=int):
            xa, xb = ga[name], gb[name]
            arrays += 1
            if (xa.shape, xa.dtype, dict(xa.attrs)) != (xb.shape, xb.dtype, dict(xb.attrs)):
                problems.append(f"{key}/{name}: {xa.shape} {xa.dtype} {dict(xa.attrs)} vs {xb.shape} {xb.dtype}")
            if not np.array_equal(xa[:], xb[:], equal_nan=True):
                diff = np.nanmax(np.abs(xa[:].astype(np.float64) - xb[:]))
                problems.append(f"{key}/{name}: values differ (max |diff| {diff})")
            level0 = gb["0"]
            several = level0.shards is not None and level0.shape[0] > level0.shards[0]
            if whole_file and 1 <= int(name) <= 4 and several and xb.shards[0] * 4 ** int(name) == level0.shards[0]:
                notes.add("shards of levels 1-4 span one level-0 shard (ours), ~16 MiB (anchor)")
            elif (xa.chunks, xa.shards) != (xb.chunks, xb.shards):
                problems.append(f"{key}/{name}: chunks/shards {xa.chunks}/{xa.shards} vs {xb.chunks}/{xb.shards}")
            if not (np.isnan(xb.fill_value) and xa.fill_value == 0):
                notes.add(f"fill values: anchor {xa.fill_value}, ours {xb.fill_value}")
            else:
                notes.add("fill value: anchor 0.0, ours NaN (an unwritten chunk reads as a gap, not as 0 µV)")
    print(f"compared {len(list(a.group_keys()))} channels, {arrays} level arrays: values, shapes, dtypes, ")
    print("  channel attributes, period_us, chunk and shard shapes")
    for note in sorted(notes):
        print(f"  known difference: {note}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--anchor", type=Path, required=True, help="the ts-zarr-py source folder (read only)")
    parser.add_argument("--venv", type=Path, default=Path(tempfile.gettempdir()) / "ts-zarr-anchor-venv")
    parser.add_argument("--nwb", type=Path, nargs="+", help="compare whole conversions of these files instead")
    args = parser.parse_args()
    python = anchor_venv(args.venv)
    if args.nwb:
        return compare_files(python, args.anchor, args.nwb)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        shutil.copytree(args.anchor / "ts_zarr", work / "anchor" / "ts_zarr")  # it may write beside itself
        nwb = make_file(work / "rec.nwb")
        subprocess.run(
            [str(python), "-m", "ts_zarr.main", str(nwb), str(work / "anchor-out" / "rec.zarr")],
            check=True,
            cwd=work / "anchor",
        )
        ours(nwb, work / "ours" / "rec.zarr")
        problems = compare(work / "anchor-out" / "rec.zarr", work / "ours" / "rec.zarr")
    for problem in problems:
        print(f"DIFFERS: {problem}")
    print("all equal" if not problems else f"{len(problems)} differences")
    return 1 if problems else 0


def compare_files(python: Path, anchor: Path, files: list[Path]) -> int:
    """Our CLI's bundle of each file against the anchor's; the number of files that differ."""
    failed = 0
    for nwb in files:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            shutil.copytree(anchor / "ts_zarr", work / "anchor" / "ts_zarr")
            subprocess.run(
                [str(python), "-m", "ts_zarr.main", str(nwb.resolve()), str(work / "anchor-out" / "rec.zarr")],
                check=True,
                cwd=work / "anchor",
                capture_output=True,
            )
            command = [sys.executable, "-m", "nwb2pennsieve.local.cli", "convert", str(nwb), "-o", str(work / "ours")]
            subprocess.run([*command, "--formats", "bundle"], check=True, capture_output=True)
            print(f"{nwb.name}:")
            problems = compare(work / "anchor-out" / "rec.zarr", work / "ours" / f"{nwb.stem}.zarr", whole_file=True)
        for problem in problems:
            print(f"DIFFERS: {problem}")
        print("all equal" if not problems else f"{len(problems)} differences")
        failed += bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
