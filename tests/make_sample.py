"""Re-make the sample bundled with the package: ``.venv/bin/python -m tests.make_sample``.

Two series (a raw int16 series in acquisition with a per-bit conversion and an LFP series under
processing/ecephys/LFP with explicit timestamps and a gap), 8 electrodes with labels in two groups.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .factory import SeriesSpec, gappy_timestamps, write_nwb

SAMPLE = Path(__file__).resolve().parents[1] / "layers" / "core" / "nwb2pennsieve" / "sample" / "sample.nwb"


def make_sample(path: Path = SAMPLE) -> Path:
    rng = np.random.default_rng(20261124)
    rate, seconds, channels = 10_000.0, 2.0, 8
    n = int(rate * seconds)
    t = np.arange(n) / rate
    waves = np.sin(2 * np.pi * np.outer(t, 7.0 + np.arange(channels))) * 800 + rng.normal(0, 60, (n, channels))
    raw = SeriesSpec(
        name="ElectricalSeriesRaw",
        data=waves.astype(np.int16),
        rate=rate,
        starting_time=0.5,
        conversion=0.195e-6,
        chunks=(4096, 8),
        compression="gzip",
        shuffle=True,
    )
    lfp_rate = 1000.0
    lfp_n = int(lfp_rate * seconds)
    lfp = SeriesSpec(
        name="ElectricalSeriesLFP",
        where="lfp",
        data=(waves[::10] * 0.195).astype(np.float32),
        timestamps=gappy_timestamps(lfp_n, lfp_rate, {1200: 0.25}, start=0.5),
        unit="uV",
        compression="gzip",
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_nwb(path, [raw, lfp], names=[f"CH{i + 1}" for i in range(channels)], groups=2)


if __name__ == "__main__":
    print(make_sample())
