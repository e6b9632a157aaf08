"""Small NWB files with the odd features real files have, written with pynwb and patched with h5py.

Used by the tests and to (re)make the bundled sample. Each :class:`SeriesSpec` is one
ElectricalSeries; ``write_nwb`` writes them into one file, then applies the h5py patches
(unit strings, missing offset, fixed-length byte strings, naive start time, external links).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import h5py
import hdf5plugin
import numpy as np
from dateutil.tz import tzoffset
from hdmf.backends.hdf5 import H5DataIO
from pynwb import NWBHDF5IO, NWBFile
from pynwb.ecephys import LFP, ElectricalSeries, SpikeEventSeries

START = datetime(2024, 3, 5, 14, 30, 15, 123456, tzinfo=tzoffset(None, -5 * 3600))


@dataclass
class SeriesSpec:
    name: str = "ElectricalSeries"
    data: np.ndarray = field(default_factory=lambda: np.arange(200, dtype=np.int16).reshape(100, 2))
    rate: float | None = 1000.0
    starting_time: float = 0.0
    timestamps: np.ndarray | None = None
    conversion: float = 1.0
    offset: float = 0.0
    channel_conversion: list[float] | None = None
    electrodes: list[int] | None = None  # rows of the electrodes table (default: one per column)
    where: Literal["acquisition", "lfp"] = "acquisition"
    kind: Literal["ElectricalSeries", "SpikeEventSeries"] = "ElectricalSeries"
    chunks: tuple[int, ...] | None = None
    compression: str | None = None
    shuffle: bool = False
    # h5py create_dataset keywords the data is rewritten with after pynwb wrote it: any HDF5
    # filter, e.g. {**hdf5plugin.Blosc(cname="zstd"), "chunks": (64, 2)}, {"scaleoffset": 0},
    # {"compression": "lzf"}, {"fletcher32": True}.
    hdf5_filters: dict[str, Any] | None = None
    # h5py patches after pynwb wrote the file
    unit: str | None = None  # overwrite data.attrs["unit"]
    drop_offset: bool = False  # delete data.attrs["offset"] (older schema)
    external: bool = False  # move data and timestamps into another file, linked externally


def write_nwb(
    path: str | os.PathLike[str],
    series: list[SeriesSpec],
    *,
    n_electrodes: int | None = None,
    names: list[str] | None = None,
    name_column: str = "label",
    groups: int = 1,
    fixed_length_strings: bool = False,
    naive_start: bool = False,
    session_start: datetime = START,
    timestamps_reference: datetime | None = None,
    units: list[np.ndarray] | None = None,
    waveform_means: np.ndarray | None = None,
) -> Path:
    path = Path(path)
    n = n_electrodes or max(
        [max(s.electrodes) + 1 if s.electrodes else (s.data.shape[1] if s.data.ndim > 1 else 1) for s in series] or [1]
    )
    nwb = NWBFile(
        session_description="test",
        identifier="test-file",
        session_start_time=session_start,
        timestamps_reference_time=timestamps_reference,
    )
    _add_electrodes(nwb, n, names, name_column, groups)
    for spec in series:
        _add_series(nwb, spec)
    for u, spikes in enumerate(units or []):  # a root Units table: spike times in seconds
        kw_unit: dict = {"spike_times": spikes}
        if waveform_means is not None:
            kw_unit["waveform_mean"] = waveform_means[u]
        nwb.add_unit(**kw_unit)
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    _patch(path, series, fixed_length_strings, naive_start)
    return path


def _add_electrodes(nwb: NWBFile, n: int, names: list[str] | None, name_column: str, groups: int) -> None:
    device = nwb.create_device(name="probe")
    egroups = [
        nwb.create_electrode_group(name=f"shank{g}", description="d", location="CA1", device=device)
        for g in range(groups)
    ]
    extra = {}
    if names is not None:
        nwb.add_electrode_column(name=name_column, description="channel names")
    for e in range(n):
        if names is not None:
            extra = {name_column: names[e]}
        nwb.add_electrode(group=egroups[e % groups], location="CA1", **extra)


def _add_series(nwb: NWBFile, spec: SeriesSpec) -> None:
    rows = (
        spec.electrodes if spec.electrodes is not None else list(range(spec.data.shape[1] if spec.data.ndim > 1 else 1))
    )
    region = nwb.create_electrode_table_region(rows, "electrodes")
    data = spec.data
    if spec.chunks or spec.compression:
        data = H5DataIO(data, chunks=spec.chunks, compression=spec.compression, shuffle=spec.shuffle)
    kw: dict = dict(name=spec.name, data=data, electrodes=region, conversion=spec.conversion, offset=spec.offset)
    if spec.timestamps is not None:
        kw["timestamps"] = spec.timestamps
    else:
        kw["rate"] = spec.rate
        kw["starting_time"] = spec.starting_time
    if spec.channel_conversion is not None:
        kw["channel_conversion"] = spec.channel_conversion
    if spec.kind == "SpikeEventSeries":
        kw.pop("offset")
        kw.pop("channel_conversion", None)
        obj = SpikeEventSeries(**kw)
    else:
        obj = ElectricalSeries(**kw)
    if spec.where == "lfp":
        if "ecephys" not in nwb.processing:
            nwb.create_processing_module("ecephys", "processed").add(LFP(name="LFP"))
        nwb.processing["ecephys"]["LFP"].add_electrical_series(obj)
    else:
        nwb.add_acquisition(obj)


def _series_path(spec: SeriesSpec) -> str:
    return f"/processing/ecephys/LFP/{spec.name}" if spec.where == "lfp" else f"/acquisition/{spec.name}"


def _patch(path: Path, series: list[SeriesSpec], fixed_length: bool, naive_start: bool) -> None:
    with h5py.File(path, "a") as f:
        for spec in series:
            g = f[_series_path(spec)]
            if spec.unit is not None:
                g["data"].attrs["unit"] = spec.unit
            if spec.drop_offset and "offset" in g["data"].attrs:
                del g["data"].attrs["offset"]
            if spec.hdf5_filters is not None:
                _refilter(g, spec.hdf5_filters)
            if spec.external:
                _externalize(path, g, spec.name)
        table = f["general/extracellular_ephys/electrodes"]
        if fixed_length:
            for col in ("group_name", "label", "channel_name", "location"):
                if col in table:
                    values = [v if isinstance(v, bytes) else str(v).encode() for v in table[col][()]]
                    attrs = dict(table[col].attrs)
                    del table[col]
                    width = max(len(v) for v in values) + 3
                    ds = table.create_dataset(col, data=np.array(values, dtype=f"S{width}"))
                    for k, v in attrs.items():
                        ds.attrs[k] = v
        if naive_start:
            raw = f["session_start_time"][()].decode()
            del f["session_start_time"]
            f.create_dataset("session_start_time", data=raw[:26])  # drop the "+hh:mm"


def _refilter(group: h5py.Group, filters: dict[str, Any]) -> None:
    """Rewrite ``group/data`` with the same values and attributes, stored through ``filters``."""
    src = group["data"]
    values, attrs = src[()], dict(src.attrs)
    del group["data"]
    dst = group.create_dataset("data", data=values, **filters)
    for k, v in attrs.items():
        dst.attrs[k] = v


def _externalize(path: Path, group: h5py.Group, name: str) -> None:
    """Move data (and timestamps) into ``<stem>_<series>_ext.h5`` and link them from the series."""
    ext_name = f"{path.stem}_{name}_ext.h5"
    with h5py.File(path.parent / ext_name, "w") as ext:
        for key in ("data", "timestamps"):
            if key in group:
                src = group[key]
                dst = ext.create_dataset(key, data=src[()], chunks=src.chunks)
                for k, v in src.attrs.items():
                    if not isinstance(v, h5py.Reference):
                        dst.attrs[k] = v
                del group[key]
                group[key] = h5py.ExternalLink(ext_name, f"/{key}")


def neuropixels_like(seconds: float = 0.5, channels: int = 16, rate: float = 30000.0, seed: int = 0) -> SeriesSpec:
    rng = np.random.default_rng(seed)
    data = rng.integers(-2000, 2000, size=(int(seconds * rate), channels), dtype=np.int16)
    return SeriesSpec(
        name="ElectricalSeriesAP",
        data=data,
        rate=rate,
        conversion=0.195e-6,
        chunks=(4096, 8),
        compression="gzip",
        shuffle=True,
    )


def gappy_timestamps(n: int, rate: float, gaps: dict[int, float], start: float = 0.0) -> np.ndarray:
    """Regular timestamps with a jump of ``gaps[i]`` seconds before sample i."""
    t = start + np.arange(n) / rate
    for i, jump in sorted(gaps.items()):
        t[i:] += jump
    return t


def compression_filters() -> dict[str, dict[str, Any]]:
    """Every lossless HDF5 filter neuroconv lets users write, as h5py ``create_dataset`` keywords.

    h5py's own (gzip with shuffle, LZF, scale-offset, Fletcher-32) and hdf5plugin's (Blosc with
    each inner compressor and shuffle mode, Blosc2, Zstd, LZ4, Bitshuffle, BZip2). Each holds its
    ``chunks``: a chunk grid that does not divide the data's shape, so partial chunks are read too.
    """
    chunks = {"chunks": (300, 2)}
    filters: dict[str, dict[str, Any]] = {
        "gzip+shuffle": {"compression": "gzip", "shuffle": True},
        "lzf": {"compression": "lzf"},
        "scale-offset": {"scaleoffset": 0},
        "fletcher32": {"fletcher32": True},
        "gzip+shuffle+fletcher32": {"compression": "gzip", "shuffle": True, "fletcher32": True},
        "zstd": dict(hdf5plugin.Zstd(clevel=5)),
        "lz4": dict(hdf5plugin.LZ4()),
        "bitshuffle": dict(hdf5plugin.Bitshuffle()),
        "bitshuffle-zstd": dict(hdf5plugin.Bitshuffle(cname="zstd")),
        "bzip2": dict(hdf5plugin.BZip2()),
    }
    for cname in ("blosclz", "lz4", "lz4hc", "zlib", "zstd"):
        filters[f"blosc-{cname}"] = dict(hdf5plugin.Blosc(cname=cname, clevel=5, shuffle=hdf5plugin.Blosc.SHUFFLE))
        filters[f"blosc2-{cname}"] = dict(hdf5plugin.Blosc2(cname=cname, clevel=5, filters=hdf5plugin.Blosc2.SHUFFLE))
    filters["blosc-lz4-bitshuffle"] = dict(hdf5plugin.Blosc(cname="lz4", shuffle=hdf5plugin.Blosc.BITSHUFFLE))
    filters["blosc-zstd-noshuffle"] = dict(hdf5plugin.Blosc(cname="zstd", shuffle=hdf5plugin.Blosc.NOSHUFFLE))
    return {name: {**kw, **chunks} for name, kw in filters.items()}


def filtered_series(filters: dict[str, Any], samples: int = 2000, channels: int = 3, seed: int = 1) -> SeriesSpec:
    """An int16 series (with a conversion factor) stored through ``filters``."""
    rng = np.random.default_rng(seed)
    data = rng.integers(-3000, 3000, size=(samples, channels), dtype=np.int16)
    return SeriesSpec(data=data, rate=1000.0, conversion=0.195e-6, hdf5_filters=filters)


DATA = "/acquisition/ElectricalSeries/data"  # where write_nwb puts the default series' data


def corrupt_chunk(path: Path, row: int, data: str = DATA) -> tuple[int, int]:
    """Flip one byte in the stored HDF5 chunk holding ``row``; return that chunk's rows."""
    with h5py.File(path) as f:
        ds = f[data]
        rows = ds.chunks[0]
        first = row // rows * rows
        info = ds.id.get_chunk_info_by_coord((first, 0))
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset + info.size // 2)
        byte = fh.read(1)
        fh.seek(info.byte_offset + info.size // 2)
        fh.write(bytes([byte[0] ^ 0x5A]))
    return first, first + rows
