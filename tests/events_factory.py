"""NWB files with everything the TS-Zarr bundle carries besides ElectricalSeries, written with pynwb:
TimeSeries in other units (rank 1 and 2, timestamped with a gap, text data that is not converted),
an AnnotationSeries, TimeIntervals tables (a label column, ragged tags, a custom table with a
free-text note and a row before the session start, start/stop only), and a Units table with
unsorted spike times, mean waveforms and per-spike waveforms. Like the files Pennsieve's EDF and
Persyst converters write, and DANDI's units-only files.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from pynwb import NWBHDF5IO, NWBFile, TimeSeries
from pynwb.behavior import Position, SpatialSeries
from pynwb.ecephys import LFP, ElectricalSeries
from pynwb.epoch import TimeIntervals
from pynwb.file import Subject
from pynwb.misc import AnnotationSeries, Units

SESSION_START = datetime(2023, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
SESSION_US = 1683356889123456


@dataclass
class Everything:
    """What :func:`write_everything` puts in the file (the sizes tests vary)."""

    seconds: float = 20.0
    rate: float = 1000.0
    electrical: bool = True
    lfp_nan_at: int | None = 777  # a NaN sample in the float LFP: its channels get valid counts
    spikes_per_unit: tuple[int, ...] = (50, 60, 70)
    subject: bool = True
    timeseries: bool = True  # SpO2, Accel, Temp, BadText, pos; without them and ElectricalSeries: no work item


def write_everything(path: Path, spec: Everything | None = None) -> Path:
    spec = spec or Everything()
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    nwb = NWBFile(
        session_description="everything the bundle carries",
        identifier="everything-001",
        session_start_time=SESSION_START,
        session_id="S-1",
        subject=Subject(
            subject_id="P-77", species="Homo sapiens", sex="F", date_of_birth=datetime(1990, 1, 2, tzinfo=UTC)
        )
        if spec.subject
        else None,
    )
    if spec.electrical:
        _electrical(nwb, spec, rng)
    nwb.add_acquisition(
        AnnotationSeries(
            name="notes", data=["lights off", "pt. Jane Roe coughed", "lights on"], timestamps=[2.0, 7.5, 18.0]
        )
    )
    if spec.timeseries:
        _timeseries(nwb, spec, rng)
    _intervals(nwb)
    _units(nwb, spec, rng)
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return path


def _timeseries(nwb: NWBFile, spec: Everything, rng: np.random.Generator) -> None:
    nwb.add_acquisition(TimeSeries(name="SpO2", data=(96 + rng.normal(0, 1, 30)).astype("float32"), unit="%", rate=1.0))
    nwb.add_acquisition(
        TimeSeries(
            name="Accel",
            data=rng.normal(0, 1, (int(spec.seconds * 100), 3)).astype("float32"),
            unit="m/s^2",
            rate=100.0,
            starting_time=0.25,
        )
    )
    stamps = np.concatenate([np.arange(0, 5, 0.5), np.arange(8, 12, 0.5)])  # 2 Hz with a 3 s gap
    nwb.add_acquisition(
        TimeSeries(name="Temp", data=36.6 + 0.1 * np.arange(stamps.size), unit="degC", timestamps=stamps)
    )
    nwb.add_acquisition(TimeSeries(name="BadText", data=np.array(["a", "b", "c"], dtype=object), unit="n/a", rate=1.0))
    behavior = nwb.create_processing_module("behavior", "behavior")
    position = Position(name="Position")
    position.add_spatial_series(
        SpatialSeries(name="pos", data=rng.normal(0, 1, (500, 2)), reference_frame="arena", rate=50.0, unit="meters")
    )
    behavior.add(position)


def _electrical(nwb: NWBFile, spec: Everything, rng: np.random.Generator) -> None:
    device = nwb.create_device("amp")
    group = nwb.create_electrode_group("g0", description="d", location="L", device=device)
    for _ in range(4):
        nwb.add_electrode(group=group, location="L")
    region = nwb.create_electrode_table_region(list(range(4)), "all")
    n = int(spec.seconds * spec.rate)
    data = rng.integers(-2000, 2000, (n, 4)).astype("int16")
    nwb.add_acquisition(
        ElectricalSeries(
            name="ElectricalSeries", data=data, electrodes=region, starting_time=1.0, rate=spec.rate, conversion=1.95e-7
        )
    )
    lfp = rng.normal(0, 50, (n // 10, 4)).astype("float32")
    if spec.lfp_nan_at is not None:
        lfp[spec.lfp_nan_at, 1] = np.nan
    ecephys = nwb.create_processing_module("ecephys", "lfp")
    ecephys.add(
        LFP(
            electrical_series=ElectricalSeries(
                name="lfp", data=lfp, electrodes=region, rate=spec.rate / 10, starting_time=1.0, conversion=1e-6
            )
        )
    )


def _intervals(nwb: NWBFile) -> None:
    nwb.add_trial_column("label", "trial type")
    nwb.add_trial_column("correct", "outcome")
    nwb.add_trial_column("rt", "reaction time, s")
    for i, (a, b) in enumerate([(1.0, 3.0), (4.0, 6.5), (7.0, 9.0), (10.0, 10.0)]):
        label = ["go", "nogo", "go", "probe"][i]
        nwb.add_trial(
            start_time=a, stop_time=b, label=label, correct=bool(i % 2), rt=np.nan if i == 2 else 0.3 + i / 10
        )
    nwb.add_epoch(start_time=0.0, stop_time=10.0, tags=["wake", "baseline"])
    nwb.add_epoch(start_time=10.0, stop_time=21.0, tags=["sleep"])
    nwb.add_invalid_time_interval(start_time=12.0, stop_time=12.5)
    stages = TimeIntervals(name="sleep_stages", description="hypnogram with notes")
    stages.add_column("note", "scorer note")
    stages.add_column("stage", "stage code")
    stages.add_interval(start_time=-0.5, stop_time=5.0, note="pre-recording, Dr. Smith present", stage=0)
    stages.add_interval(start_time=5.0, stop_time=15.0, note="N2", stage=2)
    nwb.add_time_intervals(stages)


def _units(nwb: NWBFile, spec: Everything, rng: np.random.Generator) -> None:
    units = Units(name="units", waveform_rate=30_000.0, resolution=1 / 30_000, waveform_unit="volts")
    units.add_column("quality", "curation label")
    for u, count in enumerate(spec.spikes_per_unit):
        times = np.sort(rng.uniform(0.5, 0.5 + spec.seconds, count))
        if u == 1:
            times = times[::-1].copy()  # stored unsorted
        mean = (np.sin(np.linspace(0, 2 * np.pi, 40)) * (u + 1) * 1e-5).astype("float32")
        if u == 0:
            waves = [[rng.normal(0, 1e-5, 40).astype("float32")] for _ in range(count)]
        else:
            waves = [[np.full(40, np.nan, dtype="float32")] for _ in range(count)]
        units.add_unit(spike_times=times, waveform_mean=mean, quality=["good", "mua", "good"][u % 3], waveforms=waves)
    nwb.units = units
