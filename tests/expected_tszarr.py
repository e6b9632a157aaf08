"""What a TS-Zarr bundle must hold, computed independently from h5py (nothing here imports the
code under test), and the checks of a written bundle against it, read with zarr through the
consolidated metadata only (as Pennsieve's reader reads it).

Continuous channels: every ElectricalSeries (tests/expected.py: NWB scaling in float64, the
samples on the grid), then every other numeric TimeSeries of rank 1-2 under /acquisition or
/processing, by path. ``raw`` is the float64 value rounded to float32; level k's ``env`` the exact
min/max of the float32 samples of each bin; its ``mean`` the float64 mean of those samples over
the bin (NaN-propagating; the last bin's own count), which ours must equal within one float32
rounding: ``|ours - ref| <= spacing(float32(|ref|)) + 1e-12 * max|x|`` over the bin (the second
term for a float64 sum taken in another order on a bin whose values cancel); ``valid`` the count
of finite samples, exactly, and present only on a channel with a non-finite sample.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import zarr

from tests.expected import expected_bundle

PLAIN = {"TimeSeries", "SpatialSeries", "RoiResponseSeries", "OptogeneticSeries"}
LABEL_COLUMNS = ("label", "annotation", "comment", "text", "note", "tags")


def _s(v: Any) -> str:
    return (v.decode() if isinstance(v, bytes) else str(v)).strip()


def _epoch_us(f: h5py.File, key: str) -> int:
    start = datetime.fromisoformat(_s(f[key][()]))
    start = start if start.tzinfo else start.replace(tzinfo=UTC)
    return round(start.timestamp() * 1e6)


def reference_us(f: h5py.File) -> int:
    return _epoch_us(f, "timestamps_reference_time" if "timestamps_reference_time" in f else "session_start_time")


@dataclass
class Continuous:
    path: str
    start_us: int
    rate: float
    unit: str
    raw: np.ndarray  # float32 on the grid


def _timeseries_paths(f: h5py.File) -> list[str]:
    out: list[str] = []

    def walk(group: h5py.Group, prefix: str) -> None:
        for key in group:
            obj = group.get(key)
            path = f"{prefix}/{key}"
            if not isinstance(obj, h5py.Group):
                continue
            if _s(obj.attrs.get("neurodata_type", "")) in PLAIN:
                data = obj.get("data")
                if isinstance(data, h5py.Dataset) and data.ndim in (1, 2) and data.dtype.kind in "iuf":
                    out.append(path)
            else:
                walk(obj, path)

    for top in ("acquisition", "processing"):
        if top in f:
            walk(f[top], f"/{top}")
    return sorted(out)


VOLTS = {"volts": 1e6, "volt": 1e6, "V": 1e6, "mV": 1e3, "millivolts": 1e3, "uV": 1.0, "microvolts": 1.0}


def expected_continuous(path: Path) -> list[Continuous]:
    """Every continuous channel in bundle order."""
    out = [Continuous(c.series, c.start_us, c.rate, "uV", c.levels[0]) for c in expected_bundle(path, max_levels=1)]
    with h5py.File(path, "r") as f:
        ref = reference_us(f)
        for p in _timeseries_paths(f):
            g = f[p]
            data = g["data"][()]
            data = data[:, None] if data.ndim == 1 else data
            attrs = g["data"].attrs
            unit = _s(attrs.get("unit", "n/a"))
            factor = VOLTS.get(unit, 1.0)
            scaled = (
                data.astype(np.float64) * float(attrs.get("conversion", 1.0)) + float(attrs.get("offset", 0.0))
            ) * factor
            if "timestamps" in g:
                t = g["timestamps"][()]
                rate = 1.0 / np.median(np.diff(t))
                times = ref + np.rint(t * 1e6).astype(np.int64)
                bins = np.rint((times - times[0]) * rate / 1e6).astype(np.int64)
                grid = np.full((int(bins[-1]) + 1, data.shape[1]), np.nan, np.float32)
                grid[bins] = scaled.astype(np.float32)
            else:
                rate = float(g["starting_time"].attrs["rate"])
                times = ref + np.array([round(float(g["starting_time"][()]) * 1e6)])
                grid = scaled.astype(np.float32)
            for c in range(data.shape[1]):
                out.append(Continuous(p, int(times[0]), rate, "uV" if unit in VOLTS else unit, grid[:, c]))
    return out


def level_count(n: int, min_bins: int = 1024) -> int:
    count = 1
    while count < 8 and n // 4**count >= min_bins:
        count += 1
    return count


def level_stats(raw: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(min, max, mean, valid, max |x|) of each bin of level ``k`` of the float32 ``raw``."""
    size = 4**k
    starts = np.arange(0, raw.size, size)
    x = raw.astype(np.float64)
    support = np.minimum(size, raw.size - starts)
    with np.errstate(invalid="ignore"):
        lo = np.minimum.reduceat(raw, starts)
        hi = np.maximum.reduceat(raw, starts)
        mean = np.add.reduceat(x, starts) / support
        big = np.maximum.reduceat(np.where(np.isfinite(x), np.abs(x), 0.0), starts)
    valid = np.add.reduceat(np.isfinite(raw).astype(np.int64), starts)
    return lo, hi, mean, valid, big


def consolidated(bundle: Path) -> zarr.Group:
    return zarr.open_group(zarr.storage.LocalStore(bundle, read_only=True), mode="r", use_consolidated=True)


def check_continuous(bundle: Path, nwb: Path, *, min_bins: int = 1024) -> int:
    """Every continuous channel of the bundle against :func:`expected_continuous`; returns the onset µs."""
    want = expected_continuous(nwb)
    root = consolidated(bundle)
    onset = json.loads((bundle / "meta" / "zarr.json").read_text())["attributes"]["session"]["start_us"]
    for g, exp in enumerate(want):
        group = root[str(g)]
        attrs = dict(group.attrs)
        assert attrs["kind"] == "continuous" and attrs["unit"] == exp.unit, (g, attrs)
        assert attrs["offset_us"] == exp.start_us - onset, (g, attrs["offset_us"], exp.start_us - onset)
        assert attrs["rate_hz"] == np_approx(exp.rate), (g, attrs["rate_hz"], exp.rate)
        raw = group["raw"][:]
        assert raw.dtype == np.float32 and raw.shape == exp.raw.shape, (g, raw.shape, exp.raw.shape)
        np.testing.assert_array_equal(raw, exp.raw, err_msg=f"channel {g} raw")
        nonfinite = not np.isfinite(exp.raw).all()
        levels = level_count(exp.raw.size, min_bins)
        assert sorted(int(k) for k in group.group_keys()) == list(range(1, levels)), (g, list(group.group_keys()))
        for k in range(1, levels):
            check_level(group[str(k)], exp, k, nonfinite, g)
    return int(onset)


def np_approx(value: float) -> Any:
    import pytest

    return pytest.approx(value, rel=1e-9)


def check_level(level: zarr.Group, exp: Continuous, k: int, nonfinite: bool, g: int) -> None:
    lo, hi, mean, valid, big = level_stats(exp.raw, k)
    assert level.attrs["period_us"] == np_approx(1e6 / exp.rate * 4**k)
    env = level["env"][:]
    np.testing.assert_array_equal(env[:, 0], lo, err_msg=f"channel {g} level {k} min")
    np.testing.assert_array_equal(env[:, 1], hi, err_msg=f"channel {g} level {k} max")
    got = level["mean"][:].astype(np.float64)
    assert np.array_equal(np.isnan(got), np.isnan(mean)), f"channel {g} level {k}: mean NaN positions"
    fin = np.isfinite(mean)
    tolerance = np.spacing(np.abs(mean[fin]).astype(np.float32)).astype(np.float64) + 1e-12 * big[fin]
    worst = np.abs(got[fin] - mean[fin]) - tolerance
    assert (worst <= 0).all(), f"channel {g} level {k}: mean off by {np.max(worst):g} beyond the tolerance"
    members = sorted(level.array_keys())
    assert members == (["env", "mean", "valid"] if nonfinite else ["env", "mean"]), (g, k, members)
    if nonfinite:
        np.testing.assert_array_equal(level["valid"][:], valid, err_msg=f"channel {g} level {k} valid")


@dataclass
class Events:
    """An event channel as the NWB file has it: times µs since the epoch and its columns."""

    id: str
    events: np.ndarray
    durations: np.ndarray | None = None
    labels: list[str] | None = None
    bodies: list[dict[str, Any]] | None = None
    templates: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _times(ref: int, seconds: np.ndarray) -> np.ndarray:
    return ref + np.rint(np.asarray(seconds, dtype=np.float64) * 1e6).astype(np.int64)


def expected_units(nwb: Path, path: str = "/units") -> Events:
    with h5py.File(nwb, "r") as f:
        ref = reference_us(f)
        g = f[path]
        times = g["spike_times"][()]
        ends = g["spike_times_index"][()]
        starts = np.concatenate([[0], ends[:-1]])
        per_unit = [_times(ref, times[a:b]) for a, b in zip(starts, ends, strict=True)]
        ids = [str(i) for i in g["id"][()]]
        events, labels = [], []
        for u, t in enumerate(per_unit):
            for v in t:
                events.append(int(v))
                labels.append(ids[u])
        order = sorted(range(len(events)), key=lambda i: (events[i], i))
        templates = g["waveform_mean"][()].astype(np.float64) * 1e6 if "waveform_mean" in g else None
        return Events(
            id=path.strip("/").replace("/", "."),
            events=np.array([events[i] for i in order]),
            labels=[labels[i] for i in order],
            templates=templates,
            extra={"ids": ids},
        )


def expected_intervals(nwb: Path, path: str) -> Events:
    with h5py.File(nwb, "r") as f:
        ref = reference_us(f)
        g = f[path]
        starts = _times(ref, g["start_time"][()])
        stops = _times(ref, g["stop_time"][()])
        names = [_s(c) for c in g.attrs["colnames"]]
        columns: dict[str, list[Any]] = {}
        for c in names:
            if c in ("start_time", "stop_time"):
                continue
            if f"{c}_index" in g:
                if c != "tags":
                    continue
                flat, ends = [_s(v) for v in g[c][()]], g[f"{c}_index"][()]
                columns[c] = [", ".join(flat[a:b]) for a, b in zip(np.concatenate([[0], ends[:-1]]), ends, strict=True)]
            else:
                columns[c] = [_json(v) for v in g[c][()]]
        label = next((c for c in LABEL_COLUMNS if c in columns), None)
        order = np.argsort(starts, kind="stable")
        return Events(
            id=path.strip("/").replace("/", "."),
            events=starts[order],
            durations=(stops - starts)[order],
            labels=[str(columns[label][i]) for i in order] if label else None,
            bodies=[{c: v[i] for c, v in columns.items()} for i in order],
        )


def _json(v: Any) -> Any:
    if isinstance(v, bytes | str):
        return _s(v)
    if isinstance(v, np.bool_ | bool):
        return bool(v)
    if isinstance(v, np.integer):
        return int(v)
    return float(v) if np.isfinite(v) else None


def check_events(group: zarr.Group, exp: Events, onset: int) -> None:
    """An event channel of the bundle against the NWB table."""
    attrs = dict(group.attrs)
    assert attrs["id"] == exp.id and attrs["kind"] == "event", attrs
    events = group["events"][:]
    np.testing.assert_array_equal(events, exp.events - onset)
    assert attrs["offset_us"] == int(exp.events[0] - onset)
    if exp.durations is not None:
        np.testing.assert_array_equal(group["durations"][:], exp.durations)
        assert attrs["max_duration_us"] == int(exp.durations.max())
    if exp.labels is not None:
        names = attrs["label_names"]
        assert names == sorted(set(names)) or exp.extra.get("ids") == names
        assert [names[i] for i in group["labels"][:]] == exp.labels
    if exp.bodies is not None and any(exp.bodies):
        assert attrs["body_media_type"] == "application/json"
        text = group["bodies"][:].tobytes().decode()
        offsets = group["body_offsets"][:]
        got = [json.loads(text[a:b]) for a, b in itertools.pairwise(offsets)]
        assert got == exp.bodies, (got, exp.bodies)
    if exp.templates is not None:
        np.testing.assert_allclose(group["templates"][:], exp.templates, rtol=1e-6)
