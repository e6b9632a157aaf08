"""Zstd levels on the viewer bundle's inner chunks: CPU throughput and compressed size per level.

Cuts level-0 inner chunks (8,192 float32 µV, one channel each, as the bundle stores them) from a
Neuropixels benchmark file (bench/generate.py: white noise), and from a synthetic 1/f + noise
signal quantised like a probe's ADC (closer to real recordings), and compresses every chunk at
each level with the encoder's own ``compress``. CPU seconds (``time.process_time``), so a loaded
machine changes the numbers less than wall time would.

    .venv/bin/python -m bench.zstd_levels bench/data/np-384ch-30k-int16-10s.nwb [--levels 1 3 4 5]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import h5py
import numpy as np

from nwb2pennsieve.bundle.encode import compress

CHUNK = 8192
ROWS = 16 * CHUNK


def file_chunks(nwb: Path) -> list[bytes]:
    with h5py.File(nwb, "r") as h5:
        acquisition = h5["acquisition"]
        data = next(acquisition[k]["data"] for k in acquisition if "data" in acquisition[k])
        rows = min(ROWS, data.shape[0]) // CHUNK * CHUNK
        x = (data[:rows, ::4].astype(np.float64) * 0.195).astype(np.float32).T.copy()
    return [x[c, i : i + CHUNK].tobytes() for c in range(x.shape[0]) for i in range(0, rows, CHUNK)]


def pink_chunks(channels: int = 48) -> list[bytes]:
    rng = np.random.default_rng(0)
    white = rng.normal(0.0, 1.0, (channels, ROWS))
    f = np.arange(ROWS // 2 + 1, dtype=np.float64)
    f[0] = 1.0
    pink = np.fft.irfft(np.fft.rfft(white, axis=1) / np.sqrt(f), n=ROWS, axis=1)
    raw = (pink / pink.std() * 400 + rng.normal(0.0, 30.0, (channels, ROWS))).astype(np.int16)
    x = (raw.astype(np.float64) * 0.195).astype(np.float32)
    return [x[c, i : i + CHUNK].tobytes() for c in range(channels) for i in range(0, ROWS, CHUNK)]


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("file", type=Path)
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    args = parser.parse_args()
    print("| data | level | MB/s a core (CPU) | compressed / raw |")
    print("|---|---|---|---|")
    for name, chunks in ((args.file.name, file_chunks(args.file)), ("1/f + noise, int16 x 0.195 µV", pink_chunks())):
        raw = sum(len(c) for c in chunks)
        for level in args.levels:
            started = time.process_time()
            size = sum(len(compress(c, level)) for c in chunks)
            cpu = time.process_time() - started
            print(f"| {name} | {level} | {raw / 1e6 / cpu:.0f} | {size / raw:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
