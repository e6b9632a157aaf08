"""An independent computation of what the output must hold, from h5py alone.

Nothing here imports the code under test: it reads the NWB file directly (whole arrays, no
streaming, no plan) and reads the output directory as Pennsieve would (gunzip, big-endian float64).
"""

from __future__ import annotations

import gzip
import itertools
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401 - registers the plugin filters, so h5py reads every file neuroconv writes
import numpy as np

FACTOR = {
    "volts": 1e6,
    "volt": 1e6,
    "V": 1e6,
    "mV": 1e3,
    "millivolts": 1e3,
    "uV": 1.0,
    "µV": 1.0,
    "microvolts": 1.0,
}
NAME = re.compile(r"^channel-(\d{5})_(\d+)_(\d+)\.bin\.gz$")


@dataclass
class ExpectedChannel:
    series: str
    values: np.ndarray  # µV, float64
    times_us: np.ndarray  # float64 µs since the epoch, per sample
    rate: float


def _s(v) -> str:
    return (v.decode() if isinstance(v, bytes) else str(v)).strip()


_H5_ERRORS = (KeyError, OSError, RuntimeError, ValueError)


def _attr(obj, name: str, default=None):
    """An attribute, ``default`` only when it is absent: a damaged one raises (h5py's ``attrs.get``
    would return the default for it too)."""
    if not h5py.h5a.exists(obj.id, name.encode()):
        return default
    return obj.attrs[name]


def _series_paths(f: h5py.File) -> list[str]:
    """Paths of the ElectricalSeries groups. An object that cannot be opened is passed over only in
    /general (metadata: NWB puts no series there) or /specifications (the cached schema); anywhere
    else it raises, as it may be a series."""
    paths: list[str] = []

    def walk(group: h5py.Group, prefix: str) -> None:
        metadata = prefix.startswith("/general")
        try:
            keys = list(group.keys())
        except _H5_ERRORS:
            if metadata:
                return
            raise
        for key in keys:
            path = f"{prefix}/{key}"
            if path == "/specifications":
                continue
            try:
                if isinstance(group.get(key, getlink=True), h5py.SoftLink):
                    continue
                obj = group[key]
                ndt = _s(_attr(obj, "neurodata_type", "")) if isinstance(obj, h5py.Group) else ""
                if isinstance(obj, h5py.Group) and not ndt and _attr(obj, "namespace") is not None:
                    raise KeyError(f"{path}: a typed object without a readable neurodata_type")
            except _H5_ERRORS:
                if metadata or path == "/general":
                    continue
                raise
            if isinstance(obj, h5py.Group):
                if ndt == "ElectricalSeries":
                    paths.append(path)
                else:
                    walk(obj, path)

    walk(f, "")
    return paths


_ZSTD, _BLOSC = 32015, 32001


def _data(ds: h5py.Dataset) -> np.ndarray:
    """The dataset's values. Zstd and Blosc chunks are decoded here from their raw bytes, by the
    codecs' own libraries (backports.zstd, numcodecs), checking each decodes to a whole chunk:
    hdf5plugin's Zstd filter returns memory it never wrote for a frame the decoder rejects."""
    plist = ds.id.get_create_plist()
    filters = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]
    if not ds.chunks or not set(filters) & {_ZSTD, _BLOSC}:
        return ds[()]
    assert set(filters) <= {_ZSTD, _BLOSC}, filters
    import numcodecs
    from backports import zstd

    out = np.empty(ds.shape, dtype=ds.dtype)
    nbytes = int(np.prod(ds.chunks)) * ds.dtype.itemsize
    for offset in itertools.product(*(range(0, n, c) for n, c in zip(ds.shape, ds.chunks, strict=True))):
        mask, raw = ds.id.read_direct_chunk(offset)
        if mask & 1:  # the (optional) filter was skipped for this chunk: stored as it is
            data = bytes(raw)
        else:
            data = zstd.decompress(raw) if filters == [_ZSTD] else bytes(numcodecs.Blosc().decode(raw))
        if len(data) != nbytes:
            raise OSError(f"a chunk decodes to {len(data)} bytes, not {nbytes}")
        chunk = np.frombuffer(data, dtype=ds.dtype).reshape(ds.chunks)
        where = tuple(slice(o, min(o + c, n)) for o, c, n in zip(offset, ds.chunks, ds.shape, strict=True))
        out[where] = chunk[tuple(slice(0, w.stop - w.start) for w in where)]
    return out


def expected_channels(path: str | Path) -> list[ExpectedChannel]:
    out: list[ExpectedChannel] = []
    with h5py.File(path, "r") as f:
        # NWB: times are relative to timestamps_reference_time, which defaults to session_start_time.
        key = "timestamps_reference_time" if "timestamps_reference_time" in f else "session_start_time"
        raw = _s(f[key][()])
        start = datetime.fromisoformat(raw)
        if start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
        epoch = start.timestamp()
        paths = _series_paths(f)
        for p in sorted(paths):
            g = f[p]
            data = _data(g["data"])
            if data.ndim == 1:
                data = data[:, None]
            factor = FACTOR[_s(_attr(g["data"], "unit", "volts"))]
            conversion = float(_attr(g["data"], "conversion", 1.0))
            offset = float(_attr(g["data"], "offset", 0.0))
            cc = g["channel_conversion"][()] if "channel_conversion" in g else np.ones(data.shape[1])
            if "timestamps" in g:
                t = g["timestamps"][()]
                rate = 1.0 / np.median(np.diff(t)) if t.size > 1 else float("nan")
            else:
                rate = float(_attr(g["starting_time"], "rate"))
                t = float(g["starting_time"][()]) + np.arange(data.shape[0]) / rate
            times = (epoch + t) * 1e6
            for c in range(data.shape[1]):
                values = (data[:, c].astype(np.float64) * conversion * float(cc[c]) + offset) * factor
                out.append(ExpectedChannel(series=p, values=values, times_us=times, rate=rate))
    return out


@dataclass
class OutputFile:
    index: int
    start_us: int
    end_us: int
    values: np.ndarray
    raw: bytes


def read_output(directory: str | Path) -> tuple[dict[int, list[OutputFile]], dict[int, dict]]:
    """(chunk files by channel index sorted by start, metadata by channel index)."""
    files: dict[int, list[OutputFile]] = {}
    meta: dict[int, dict] = {}
    for p in sorted(Path(directory).iterdir()):
        m = NAME.match(p.name)
        if m:
            raw = p.read_bytes()
            values = np.frombuffer(gzip.decompress(raw), dtype=">f8").astype(np.float64)
            files.setdefault(int(m[1]), []).append(OutputFile(int(m[1]), int(m[2]), int(m[3]), values, raw))
        elif p.name.endswith(".metadata.json"):
            meta[int(p.name[8:13])] = json.loads(p.read_text())
    for chunks in files.values():
        chunks.sort(key=lambda c: c.start_us)
    return files, meta


def assert_matches(nwb_path: str | Path, out_dir: str | Path, ulps: int = 4, us: float = 1.0) -> int:
    """Check every channel's values (within ``ulps``) and every file's times (within ``us``).

    Returns the number of chunk files checked.
    """
    expected = expected_channels(nwb_path)
    files, meta = read_output(out_dir)
    assert sorted(files) == list(range(len(expected))), "channel indices must be 0..n-1 across the file"
    assert sorted(meta) == sorted(files)
    checked = 0
    for index, exp in enumerate(expected):
        chunks = files[index]
        got = np.concatenate([c.values for c in chunks])
        assert got.shape == exp.values.shape, f"channel {index}: {got.shape} samples, expected {exp.values.shape}"
        tolerance = ulps * np.spacing(np.maximum(np.abs(exp.values), np.abs(got)))
        bad = np.abs(got - exp.values) > tolerance
        assert not bad.any(), (
            f"channel {index}: sample {int(np.argmax(bad))} is {got[bad][0]!r}, expected {exp.values[bad][0]!r}"
        )
        k = 0
        for c in chunks:
            n = c.values.size
            assert abs(c.start_us - exp.times_us[k]) <= us, (index, k, c.start_us, exp.times_us[k])
            assert abs(c.end_us - exp.times_us[k + n - 1]) <= us, (index, k + n - 1, c.end_us)
            if n > 1 and np.isfinite(exp.rate):
                steps = np.diff(exp.times_us[k : k + n])
                assert steps.max() <= 2e6 / exp.rate * (1 + 1e-9), f"channel {index}: file {c.start_us} spans a gap"
            k += n
            checked += 1
        m = meta[index]
        assert m["start"] == chunks[0].start_us and m["end"] == chunks[-1].end_us
        assert m["unit"] == "uV" and m["type"] == "CONTINUOUS" and m["name"].strip()
    return checked


# --- the viewer bundle, computed independently (numpy folds with ±inf padding, not the code's) ---


@dataclass
class ExpectedBundleChannel:
    series: str
    start_us: int
    rate: float
    levels: list[np.ndarray]  # level 0 (n,), then (bins, 2) (min, max)


def _fold(level0: np.ndarray, count: int) -> list[np.ndarray]:
    out = [level0.astype(np.float32)]
    lo = hi = level0.astype(np.float32)
    for _ in range(1, count):
        pad = -lo.shape[0] % 4
        lo_b = np.concatenate([lo, np.full(pad, np.inf, np.float32)]).reshape(-1, 4)
        hi_b = np.concatenate([hi, np.full(pad, -np.inf, np.float32)]).reshape(-1, 4)
        lo, hi = lo_b.min(axis=1), hi_b.max(axis=1)  # plain min/max: a NaN propagates
        out.append(np.stack([lo, hi], axis=1))
    return out


def expected_bundle(path: str | Path, *, min_bins: int = 1024, max_levels: int = 8) -> list[ExpectedBundleChannel]:
    """Every continuous channel's levels: samples on the grid (a segment at round((t0 - start) / period)
    bins, at least one bin after the previous one), NaN in between, folded by 4."""
    out = []
    for ch in expected_channels(path):
        times = np.rint(ch.times_us).astype(np.int64)
        period = 1e6 / ch.rate
        steps = np.diff(ch.times_us)
        cuts = [0, *(np.flatnonzero(steps > 2 * period) + 1).tolist(), times.size]
        offsets, end = [], 0
        for s, (a, b) in enumerate(itertools.pairwise(cuts)):
            at = 0 if s == 0 else max(end + 1, int(np.floor((times[a] - times[0]) / period + 0.5)))
            offsets.append(at)
            end = at + b - a
        grid = np.full(end, np.nan, dtype=np.float32)
        for (a, b), at in zip(itertools.pairwise(cuts), offsets, strict=True):
            grid[at : at + b - a] = ch.values[a:b].astype(np.float32)
        count = 1
        while count < max_levels and end // 4**count >= min_bins:
            count += 1
        out.append(ExpectedBundleChannel(ch.series, int(times[0]), ch.rate, _fold(grid, count)))
    return out


def differing_objects(got: dict[str, bytes], want: dict[str, bytes]) -> list[str]:
    """The names of the objects (or files) that differ in content, and the names only one side has.

    A chunk file (``*.bin.gz``) is the same when its gzip header and trailer (the samples' CRC-32
    and size) and its decompressed samples are: the deflate stream between may differ from run to
    run at a compressed level (ISA-L's stream varies now and then, docs/architecture.md). A write
    record (``written/*.json``) is the same but for the compressed sizes it lists. Anything else
    byte for byte.
    """
    out = sorted(set(got) ^ set(want))
    for name in sorted(set(got) & set(want)):
        a, b = got[name], want[name]
        if a == b:
            continue
        if name.endswith(".bin.gz"):
            same = a[:10] == b[:10] and a[-8:] == b[-8:] and gzip.decompress(a) == gzip.decompress(b)
        elif "/written/" in name and name.endswith(".json"):
            same = _sizes_dropped(a) == _sizes_dropped(b)
        else:
            same = False
        if not same:
            out.append(name)
    return sorted(out)


def _sizes_dropped(record: bytes) -> dict:
    body = json.loads(record)
    for entry in body.get("files", []):
        entry.pop("size", None)
    return body
