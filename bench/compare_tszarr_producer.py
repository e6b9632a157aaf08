"""Compare our TS-Zarr bundle with Pennsieve's producer's (timeseries-zarr-py) on the same files.

For each file, runs the producer (in its own venv, an empty working folder) and ``nwb2pennsieve
convert --formats bundle``, then compares every continuous channel the producer writes, matched
by name: unit, rate, offset, level groups, and ``raw``, each level's ``env`` and ``mean`` as the
largest difference in float32 ulps (0: bit for bit). Exit 1 on any difference in shape, unit,
rate, levels or offset.

    .venv/bin/python -m bench.compare_tszarr_producer --producer PATH/TO/timeseries-zarr-py FILE.nwb ...
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import zarr

from bench.compare_bundle_anchor import anchor_venv


def _ulps(a: np.ndarray, b: np.ndarray, scale: np.ndarray | None = None) -> float:
    """The largest difference in float32 ulps of ``a`` (of ``scale`` when given: a mean's bin's
    largest |sample|, since a mean near 0 has a tiny ulp whatever the samples' size)."""
    if not np.array_equal(np.isnan(a), np.isnan(b)):
        return float("inf")
    size = np.abs(a) if scale is None else np.maximum(np.abs(a), scale)
    spacing = np.maximum(
        np.spacing(size.astype(np.float32)).astype(np.float64), np.finfo(np.float32).smallest_subnormal
    )
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64)) / spacing
    return float(np.nanmax(diff)) if diff.size else 0.0


def _continuous(path: Path) -> dict[str, zarr.Group]:
    root = zarr.open_group(str(path), mode="r")
    return {
        root[g].attrs["name"]: root[g]
        for g in root.group_keys()
        if g != "meta" and root[g].attrs["kind"] == "continuous"
    }


def compare(theirs: Path, ours: Path) -> tuple[list[str], dict[str, float]]:
    """(problems, the largest ulp difference of each member kind)."""
    problems: list[str] = []
    worst: dict[str, float] = {}
    mine = _continuous(ours)
    for name, group in _continuous(theirs).items():
        other = mine.get(name)
        if other is None:
            problems.append(f"{name}: not in ours")
            continue
        for key in ("unit", "offset_us"):
            if group.attrs[key] != other.attrs[key]:
                problems.append(f"{name}: {key} {group.attrs[key]!r} against ours {other.attrs[key]!r}")
        if abs(group.attrs["rate_hz"] - other.attrs["rate_hz"]) > 1e-9 * group.attrs["rate_hz"]:
            problems.append(f"{name}: rate_hz {group.attrs['rate_hz']} against ours {other.attrs['rate_hz']}")
        if sorted(group.group_keys()) != sorted(other.group_keys()):
            problems.append(f"{name}: level groups {sorted(group.group_keys())} against {sorted(other.group_keys())}")
            continue
        pairs = [("raw", group["raw"], other["raw"], None)]
        for k in sorted(group.group_keys(), key=int):
            scale = np.nanmax(np.abs(other[k]["env"][:]), axis=1) if other[k]["env"].shape[0] else None
            pairs += [
                (f"env{k}", group[k]["env"], other[k]["env"], None),
                (f"mean{k}", group[k]["mean"], other[k]["mean"], scale),
            ]
        for label, a, b, bins in pairs:
            if a.shape != b.shape:
                problems.append(f"{name}: {label} shape {a.shape} against ours {b.shape}")
                continue
            worst[label] = max(worst.get(label, 0.0), _ulps(a[:], b[:], bins))
    return problems, worst


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("files", type=Path, nargs="+")
    parser.add_argument("--producer", type=Path, required=True, help="the timeseries-zarr-py source folder (read only)")
    parser.add_argument("--venv", type=Path, default=Path(tempfile.gettempdir()) / "timeseries-zarr-producer-venv")
    args = parser.parse_args()
    python = anchor_venv(args.venv)
    ours_cli = str(Path(sys.executable).parent / "nwb2pennsieve")
    env = {**os.environ, "PYTHONPATH": str(args.producer.resolve()), "PYTHONDONTWRITEBYTECODE": "1"}
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for nwb in args.files:
            theirs, ours, cwd = work / "p" / nwb.stem, work / "o" / nwb.stem, work / "cwd" / nwb.stem
            for folder in (theirs, cwd):
                folder.mkdir(parents=True)
            bundle = theirs / f"{nwb.stem}.zarr"
            run = [str(python), "-W", "ignore", "-m", "timeseries_zarr.main", str(nwb.resolve()), str(bundle)]
            subprocess.run(run, cwd=cwd, env=env, check=True, capture_output=True)
            convert = [ours_cli, "convert", str(nwb), "-o", str(ours), "--formats", "bundle", "--workers", "1"]
            subprocess.run(convert, check=True, capture_output=True)
            problems, worst = compare(bundle, ours / f"{nwb.stem}.zarr")
            failed |= bool(problems)
            print(f"{nwb.name}: largest difference in float32 ulps {worst}")
            for problem in problems:
                print(f"  {problem}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
