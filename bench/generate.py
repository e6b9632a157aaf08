"""Generate the benchmark NWB files with h5py directly (pynwb is far too slow for GBs).

The files are valid NWB 2.7 as far as the converter (and pynwb) look: an ``NWBFile`` root, a
``session_start_time`` with a time zone, an electrodes ``DynamicTable`` and one
``ElectricalSeries`` under ``/acquisition``. Data is seeded noise, so every run makes the same
bytes; a file is only written when missing.

    python bench/generate.py                    # all three files into bench/data/
    python bench/generate.py --only np --seconds 10
    python bench/generate.py --only np --gzip   # the gzip+shuffle variant of the Neuropixels file

Files (names carry the parameters, so variants never collide):

- ``np-384ch-30k-int16-{seconds}s.nwb``: Neuropixels AP-band-like, 384 channels at 30 kHz, int16,
  ``conversion`` 0.195e-6 V/bit, ``starting_time`` + ``rate``. HDF5 chunks are
  (78125, 64): what neuroconv's ``get_electrical_series_chunk_shape`` picks for int16 (at most 64
  channels per chunk, as many frames as fit 10 MB), which is what SpikeGLX/Open Ephys files
  converted by neuroconv carry. Uncompressed by default (neuroconv itself applies gzip; that is
  the ``--gzip`` variant: gzip level 4 + shuffle).
- ``eeg-64ch-2k-float32-gaps-{seconds}s.nwb``: 64 channels at 2 kHz, float32 volts, explicit
  ``timestamps`` with 5 gaps; chunks (39062, 64), neuroconv's rule for float32.
- ``wide-2ch-float64-{mb}mb.nwb``: 2 channels float64 volts, 30 kHz, ``starting_time`` + ``rate``,
  contiguous (not chunked) like pynwb writes a plain array.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import h5py
import numpy as np

DATA_DIR = Path(__file__).resolve().parent / "data"
SESSION_START = "2024-03-01T10:00:00.000000+01:00"
STR = h5py.string_dtype("utf-8")


def neurodata(obj: h5py.HLObject, ndtype: str, namespace: str = "core", **attrs: object) -> None:
    obj.attrs["neurodata_type"] = ndtype
    obj.attrs["namespace"] = namespace
    for key, value in attrs.items():
        obj.attrs[key] = value


def _nwb_skeleton(h5: h5py.File, n_channels: int, series_name: str) -> h5py.Group:
    """Root, required datasets, the electrodes table; returns the (empty) series group."""
    neurodata(h5, "NWBFile", nwb_version="2.7.0", object_id="00000000-0000-4000-8000-000000000000")
    h5.create_dataset("session_start_time", data=SESSION_START, dtype=STR)
    h5.create_dataset("timestamps_reference_time", data=SESSION_START, dtype=STR)
    h5.create_dataset("identifier", data=f"bench-{series_name}", dtype=STR)
    h5.create_dataset("session_description", data="nwb2pennsieve benchmark file", dtype=STR)
    h5.create_dataset("file_create_date", data=[SESSION_START], dtype=STR, maxshape=(None,))
    for name in ("analysis", "processing", "stimulus/presentation", "stimulus/templates", "intervals"):
        h5.require_group(name)
    general = h5.require_group("general")
    ecephys = general.require_group("extracellular_ephys")
    device = general.require_group("devices/probe")
    neurodata(device, "Device", description="benchmark probe")
    shanks = sorted({c // 96 for c in range(n_channels)})
    for s in shanks:
        eg = ecephys.require_group(f"shank{s}")
        neurodata(eg, "ElectrodeGroup", description=f"shank {s}", location="unknown")
        eg["device"] = h5py.SoftLink(device.name)  # a link, as NWB readers (pynwb) expect
    table = ecephys.require_group("electrodes")
    neurodata(
        table,
        "DynamicTable",
        namespace="hdmf-common",
        description="electrodes",
        colnames=np.array(["location", "group", "group_name", "label"], dtype=object),
    )
    ids = table.create_dataset("id", data=np.arange(n_channels, dtype=np.int64))
    neurodata(ids, "ElementIdentifiers", namespace="hdmf-common")
    for col, values in (
        ("location", ["unknown"] * n_channels),
        ("group_name", [f"shank{c // 96}" for c in range(n_channels)]),
        ("label", [f"ch{c:03d}" for c in range(n_channels)]),
    ):
        ds = table.create_dataset(col, data=values, dtype=STR)
        neurodata(ds, "VectorData", namespace="hdmf-common", description=col)
    refs = table.create_dataset("group", (n_channels,), dtype=h5py.ref_dtype)
    refs[:] = [ecephys[f"shank{c // 96}"].ref for c in range(n_channels)]
    neurodata(refs, "VectorData", namespace="hdmf-common", description="electrode group")

    series = h5.require_group(f"acquisition/{series_name}")
    neurodata(series, "ElectricalSeries", description="benchmark data", comments="no comments")
    region = series.create_dataset("electrodes", data=np.arange(n_channels, dtype=np.int64))
    neurodata(region, "DynamicTableRegion", namespace="hdmf-common", description="all electrodes")
    region.attrs.create("table", table.ref, dtype=h5py.ref_dtype)
    return series


def _data(
    series: h5py.Group,
    shape: tuple[int, int],
    dtype: str,
    chunks: tuple[int, int] | None,
    conversion: float,
    gzip: bool,
) -> h5py.Dataset:
    kw: dict[str, object] = {}
    if gzip:
        kw = {"compression": "gzip", "compression_opts": 4, "shuffle": True}
    ds = series.create_dataset("data", shape=shape, dtype=dtype, chunks=chunks, **kw)
    ds.attrs["unit"] = "volts"
    ds.attrs["conversion"] = float(conversion)
    ds.attrs["offset"] = 0.0
    ds.attrs["resolution"] = -1.0
    return ds


def _fill(ds: h5py.Dataset, rows_per_block: int, make_block) -> None:  # type: ignore[no-untyped-def]
    n = ds.shape[0]
    for start in range(0, n, rows_per_block):
        stop = min(n, start + rows_per_block)
        ds[start:stop] = make_block(start, stop)


def neuropixels(seconds: float, gzip: bool = False) -> Path:
    rate, n_ch = 30_000.0, 384
    n = round(seconds * rate)
    name = f"np-384ch-30k-int16-{seconds:g}s{'-gzip' if gzip else ''}.nwb"
    path = DATA_DIR / name
    if path.exists():
        return path
    chunks = (min(n, 78_125), 64)

    def block(start: int, stop: int) -> np.ndarray:
        rng = np.random.default_rng([1, start])  # seeded per block: same bytes whatever the order
        # noise of ~10 µV rms in 0.195 µV steps
        return rng.normal(0.0, 50.0, size=(stop - start, n_ch)).astype(np.int16)

    return _write(
        path,
        n_ch,
        "ElectricalSeriesAP",
        (n, n_ch),
        "<i2",
        chunks,
        0.195e-6,
        gzip,
        rate=rate,
        block_rows=chunks[0],
        make_block=block,
    )


def eeg_with_gaps(seconds: float) -> Path:
    rate, n_ch = 2_000.0, 64
    n = round(seconds * rate)
    path = DATA_DIR / f"eeg-64ch-2k-float32-gaps-{seconds:g}s.nwb"
    if path.exists():
        return path
    # five gaps of 0.5 s .. 30 s at fixed fractions of the recording
    t = np.arange(n, dtype=np.float64) / rate + 12.5
    for frac, gap in ((0.11, 0.5), (0.29, 3.0), (0.47, 30.0), (0.63, 1.25), (0.88, 10.0)):
        t[int(frac * n) :] += gap

    def block(start: int, stop: int) -> np.ndarray:
        rng = np.random.default_rng([2, start])
        return (rng.normal(0.0, 20e-6, size=(stop - start, n_ch))).astype(np.float32)

    return _write(
        path,
        n_ch,
        "EEG",
        (n, n_ch),
        "<f4",
        (min(n, 39_062), 64),
        1.0,
        False,
        timestamps=t,
        block_rows=39_062,
        make_block=block,
    )


def two_channel(mb: float) -> Path:
    n_ch, rate = 2, 30_000.0
    n = int(mb * 1e6 / (8 * n_ch))
    path = DATA_DIR / f"wide-2ch-float64-{mb:g}mb.nwb"
    if path.exists():
        return path

    def block(start: int, stop: int) -> np.ndarray:
        rng = np.random.default_rng([3, start])
        return rng.normal(0.0, 100e-6, size=(stop - start, n_ch))

    return _write(
        path,
        n_ch,
        "ElectricalSeries",
        (n, n_ch),
        "<f8",
        None,
        1.0,
        False,
        rate=rate,
        block_rows=1 << 20,
        make_block=block,
    )


def _write(
    path: Path,
    n_ch: int,
    series_name: str,
    shape: tuple[int, int],
    dtype: str,
    chunks: tuple[int, int] | None,
    conversion: float,
    gzip: bool,
    *,
    block_rows: int,
    make_block,
    rate: float | None = None,
    timestamps: np.ndarray | None = None,
) -> Path:  # type: ignore[no-untyped-def]
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    started = time.perf_counter()
    with h5py.File(tmp, "w", libver=("earliest", "v110")) as h5:
        series = _nwb_skeleton(h5, n_ch, series_name)
        ds = _data(series, shape, dtype, chunks, conversion, gzip)
        if timestamps is not None:
            ts = series.create_dataset("timestamps", data=timestamps)
            ts.attrs["interval"] = 1
            ts.attrs["unit"] = "seconds"
        else:
            st = series.create_dataset("starting_time", data=0.0)
            st.attrs["rate"] = float(rate)  # type: ignore[arg-type]
            st.attrs["unit"] = "seconds"
        _fill(ds, block_rows, make_block)
    os.replace(tmp, path)
    size = path.stat().st_size
    print(f"wrote {path} ({size / 1e6:.0f} MB) in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return path


def all_files(
    np_seconds: float = 60.0,
    eeg_seconds: float = 1800.0,
    wide_mb: float = 500.0,
    *,
    only: str | None = None,
    gzip: bool = False,
) -> dict[str, Path]:
    out = {}
    if only in (None, "np"):
        out["np"] = neuropixels(np_seconds, gzip=gzip)
    if only in (None, "eeg"):
        out["eeg"] = eeg_with_gaps(eeg_seconds)
    if only in (None, "wide"):
        out["wide"] = two_channel(wide_mb)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", choices=["np", "eeg", "wide"], help="generate one file only")
    p.add_argument("--seconds", type=float, default=60.0, help="Neuropixels length (default 60)")
    p.add_argument("--eeg-seconds", type=float, default=1800.0, help="EEG length (default 1800)")
    p.add_argument("--wide-mb", type=float, default=500.0, help="2-channel file size (default 500)")
    p.add_argument("--gzip", action="store_true", help="gzip+shuffle variant of the Neuropixels file")
    args = p.parse_args()
    for key, path in all_files(args.seconds, args.eeg_seconds, args.wide_mb, only=args.only, gzip=args.gzip).items():
        print(f"{key}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
