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
from typing import Literal

import h5py
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
    ecephys = None
    for spec in series:
        rows = (
            spec.electrodes
            if spec.electrodes is not None
            else list(range(spec.data.shape[1] if spec.data.ndim > 1 else 1))
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
            if ecephys is None:
                ecephys = nwb.create_processing_module("ecephys", "processed")
                ecephys.add(LFP(name="LFP"))
            ecephys["LFP"].add_electrical_series(obj)
        else:
            nwb.add_acquisition(obj)
    for u, spikes in enumerate(units or []):  # a root Units table: spike times in seconds
        kw_unit: dict = {"spike_times": spikes}
        if waveform_means is not None:
            kw_unit["waveform_mean"] = waveform_means[u]
        nwb.add_unit(**kw_unit)
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    _patch(path, series, fixed_length_strings, naive_start)
    return path


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
