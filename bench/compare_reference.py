"""Explain, file by file, how our output and Pennsieve's reference processor's differ.

Give it the NWB file and the two outputs (``nwb2pennsieve convert FILE -o OURS`` and the
reference's OUTPUT_DIR, see docs/benchmarks.md for how to run it). Chunk files are paired by
channel index and position, not by name, and decoded (big-endian float64); it reports:

- times: how many start/end times differ and by how much, and which rule each side follows on
  this file (the exact time rounded to the nearest µs, or truncated);
- values: how many samples are bit-identical, the largest difference in ulps, and whether each
  side equals the NWB formula evaluated left to right, ``(data × conversion × channel_conversion
  + offset) × 1e6``, or with the scale folded into one factor first, ``data × (conversion ×
  channel_conversion × 1e6)`` (without an offset);
- channel metadata: the fields that differ.

Only rate-based (``starting_time`` + ``rate``) series in volts are analysed for times and values.

    .venv/bin/python bench/compare_reference.py FILE.nwb OURS_DIR REFERENCE_DIR
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import re
from collections import Counter
from datetime import datetime
from fractions import Fraction
from pathlib import Path

import h5py
import numpy as np

COLUMNS = 64  # columns read from the NWB file at a time
NAME = re.compile(r"channel-(\d{5})_(\d+)_(\d+)\.bin\.gz$")


def chunk_files(out: Path) -> dict[int, list[tuple[int, int, Path]]]:
    files: dict[int, list[tuple[int, int, Path]]] = {}
    for p in out.iterdir():
        if m := NAME.match(p.name):
            files.setdefault(int(m[1]), []).append((int(m[2]), int(m[3]), p))
    return {k: sorted(v) for k, v in sorted(files.items())}


def values(path: Path) -> np.ndarray:
    return np.frombuffer(gzip.decompress(path.read_bytes()), dtype=">f8").astype(np.float64)


def rate_series(h5: h5py.File) -> list[h5py.Group]:
    out = []
    for g in h5["acquisition"].values():
        if isinstance(g, h5py.Group) and g.attrs.get("neurodata_type") == "ElectricalSeries" and "starting_time" in g:
            out.append(g)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("nwb", type=Path)
    p.add_argument("ours", type=Path)
    p.add_argument("reference", type=Path)
    args = p.parse_args()
    ours, ref = chunk_files(args.ours), chunk_files(args.reference)
    names_o = {f[2].name for v in ours.values() for f in v}
    names_r = {f[2].name for v in ref.values() for f in v}
    print(f"chunk files: ours {len(names_o)}, reference {len(names_r)}, same name {len(names_o & names_r)}")

    with h5py.File(args.nwb, "r") as h5:
        start = datetime.fromisoformat(h5["session_start_time"][()].decode())
        epoch_us = int(start.timestamp()) * 1_000_000 + start.microsecond
        column0 = 0
        time_rules: Counter[str] = Counter()
        shifts: Counter[tuple[str, int]] = Counter()
        value_stats: Counter[str] = Counter()
        max_ulp = 0
        for g in rate_series(h5):
            data = g["data"]
            rate = float(g["starting_time"].attrs["rate"])
            t0 = float(g["starting_time"][()])
            conv = float(data.attrs.get("conversion", 1.0))
            offset = float(data.attrs.get("offset", 0.0))
            cc = g["channel_conversion"][()] if "channel_conversion" in g else np.ones(data.shape[1])
            for c in range(data.shape[1]):
                if c % COLUMNS == 0:  # a block of columns at a time: one pass over the HDF5 chunks
                    block = data[:, c : c + COLUMNS]
                index = column0 + c
                raw = block[:, c % COLUMNS].astype(np.float64)
                left = (raw * conv * float(cc[c]) + offset) * 1e6
                folded = raw * (conv * float(cc[c]) * 1e6) if offset == 0.0 else left
                k = 0
                for (os_, oe, op), (rs, re_, rp) in zip(ours[index], ref[index], strict=True):
                    o, r = values(op), values(rp)
                    assert o.size == r.size, f"{op.name}: {o.size} samples, the reference's {r.size}"
                    for sample, ot, rt in ((k, os_, rs), (k + o.size - 1, oe, re_)):
                        exact = (Fraction(t0) + Fraction(sample) / Fraction(rate)) * 10**6  # µs after the start
                        frac = str(exact - math.floor(exact))
                        time_rules[f"ours {'nearest' if ot - epoch_us == round(exact) else 'other'}"] += 1
                        time_rules[f"reference {'truncated' if rt - epoch_us == math.floor(exact) else 'other'}"] += 1
                        shifts[(frac, ot - rt)] += 1
                    want_l, want_f = left[k : k + o.size], folded[k : k + o.size]
                    value_stats["samples"] += o.size
                    value_stats["bit-identical"] += int((o == r).sum())
                    value_stats["ours = left to right"] += int((o == want_l).sum())
                    value_stats["ours = folded"] += int((o == want_f).sum())
                    value_stats["reference = left to right"] += int((r == want_l).sum())
                    value_stats["reference = folded"] += int((r == want_f).sum())
                    max_ulp = max(max_ulp, int(np.abs(o.view(np.int64) - r.view(np.int64)).max()))
                    k += o.size
            column0 += data.shape[1]

    print("times (chunk starts and ends):", dict(time_rules))
    print("  (fraction of a µs of the exact time, ours - reference in µs): times", dict(sorted(shifts.items())))
    n = value_stats.pop("samples")
    print(f"values: {n:,} samples; " + "; ".join(f"{k} {v / n:.1%}" for k, v in value_stats.items()))
    print(f"  largest difference: {max_ulp} ulp")
    differ: Counter[str] = Counter()
    for index in ours:
        a = json.loads((args.ours / f"channel-{index:05d}.metadata.json").read_text())
        b = json.loads((args.reference / f"channel-{index:05d}.metadata.json").read_text())
        differ.update(key for key in a.keys() | b.keys() if a.get(key) != b.get(key))
    print(f"channel metadata: {len(ours)} channels; fields that differ (channels): {dict(differ) or 'none'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
