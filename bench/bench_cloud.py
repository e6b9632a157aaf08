"""One WriteChunks work item's throughput, measured here; the input for docs/scale-model.md.

Makes a Neuropixels-like NWB file (384 channels, int16, gzip-chunked like common writers), plans it
as the Plan function does (default CHUNK_SIZE_MB=1, MAX_ITEM_MB=512: one work item = one row of
chunk files, 131,072 samples x 384 channels = 384 MiB of float64), then runs the WriteChunks step
on one item against an S3 stand-in that serves the file by byte range from local disk and
accepts PUTs in memory (so what is measured is the function's own CPU and I/O, not a network).
Both slab readers are measured: direct chunk byte ranges (what the function uses) and h5py over
the range reader (the fallback).

    .venv/bin/python bench/bench_cloud.py [--samples N] [--json out.json]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from nwb2pennsieve.cloud import plan_step, write_chunks_step
from nwb2pennsieve.cloud.models import Batch, PlanInput, WriteChunksInput
from nwb2pennsieve.cloud.settings import CloudSettings
from nwb2pennsieve.source.s3 import ReadStats
from nwb2pennsieve.write import execute

OUT = Path(__file__).resolve().parent / "data"
CHANNELS = 384
RATE = 30_000.0


class LocalS3:
    """S3 stand-in: ranged GETs from local files, PUTs kept in memory (counted, then dropped)."""

    class exceptions:
        ClientError = KeyError

    def __init__(self, files: dict[tuple[str, str], Path]) -> None:
        self.files = files
        self.small: dict[tuple[str, str], bytes] = {}
        self.lock = threading.Lock()
        self.puts = 0
        self.put_bytes = 0

    def head_object(self, Bucket: str, Key: str, **kw: Any) -> dict[str, Any]:
        return {"ContentLength": self.files[(Bucket, Key)].stat().st_size, "ETag": '"x"'}

    def get_object(self, Bucket: str, Key: str, Range: str | None = None, **kw: Any) -> dict[str, Any]:
        if (Bucket, Key) in self.small:
            return {"Body": io.BytesIO(self.small[(Bucket, Key)])}
        start, end = (int(x) for x in (Range or "").removeprefix("bytes=").split("-"))
        with open(self.files[(Bucket, Key)], "rb") as fh:
            fh.seek(start)
            return {"Body": io.BytesIO(fh.read(end - start + 1))}

    def put_object(self, Bucket: str, Key: str, Body: bytes, **kw: Any) -> dict[str, Any]:
        with self.lock:
            self.puts += 1
            self.put_bytes += len(Body)
            if not Key.endswith(".bin.gz"):
                self.small[(Bucket, Key)] = Body
        return {}


def make_file(path: Path, samples: int) -> Path:
    """A minimal NWB (h5py only) with one 384-channel int16 ElectricalSeries, gzip chunks of 8192 x 64."""
    if path.exists():
        return path
    rng = np.random.default_rng(0)
    tmp = path.with_suffix(".tmp")
    with h5py.File(tmp, "w") as f:
        f.attrs["neurodata_type"] = "NWBFile"
        f.attrs["namespace"] = "core"
        f.create_dataset("session_start_time", data="2024-01-01T00:00:00+00:00")
        g = f.create_group("acquisition/ElectricalSeries")
        g.attrs["neurodata_type"] = "ElectricalSeries"
        g.attrs["namespace"] = "core"
        d = g.create_dataset(
            "data", shape=(samples, CHANNELS), dtype="<i2", chunks=(8192, 64), compression="gzip", compression_opts=1
        )
        block = 65_536
        for s in range(0, samples, block):
            n = min(block, samples - s)
            d[s : s + n] = rng.normal(0, 60, (n, CHANNELS)).astype("<i2")
        d.attrs["unit"] = "volts"
        d.attrs["conversion"] = 0.195e-6
        d.attrs["offset"] = 0.0
        d.attrs["resolution"] = -1.0
        st = g.create_dataset("starting_time", data=0.0)
        st.attrs["rate"] = RATE
        st.attrs["unit"] = "seconds"
    os.replace(tmp, path)
    return path


def run(samples: int) -> dict[str, Any]:
    OUT.mkdir(parents=True, exist_ok=True)
    path = make_file(OUT / f"neuropixels-{samples}.nwb", samples)
    with h5py.File(path) as f:
        stored = f["acquisition/ElectricalSeries/data"].id.get_storage_size()
    s3 = LocalS3({("input-bucket", "np.nwb"): path})
    settings = CloudSettings.from_env({"OUTPUT_BUCKET": "output-bucket"})
    t = time.perf_counter()
    stats = ReadStats()
    planned = plan_step.plan_object(
        s3, PlanInput.parse({"bucket": "input-bucket", "key": "np.nwb"}), settings, stats=stats
    )
    plan_seconds = time.perf_counter() - t
    batches = json.loads(s3.small[("output-bucket", planned.write_batches.key)])
    batch = Batch.model_validate(batches[0])
    event = WriteChunksInput(source=planned.source, output=planned.output, plan=planned.plan, batch=batch)
    result: dict[str, Any] = {
        "file_bytes": path.stat().st_size,
        "stored_bytes": stored,
        "work_items": planned.work_items,
        "plan_seconds": round(plan_seconds, 3),
        "plan_bytes_read": stats.bytes,
        "item_output_mib": batch.output_bytes / 2**20,
    }
    # The first item in a fresh process pays page faults for its buffers (as a cold Lambda does);
    # later ones show a warm container.
    runs = [
        ("direct_chunk_ranges_first", True),
        ("direct_chunk_ranges_warm", True),
        ("direct_chunk_ranges_warm2", True),
        ("h5py_over_range_reader_warm", False),
    ]
    for label, direct in runs:
        original = execute.slab_reader  # where write/execute picks each item's reader
        if not direct:
            from nwb2pennsieve.source.slabs import H5SlabReader

            def h5py_slabs(h5: Any, series: Any, c0: int, c1: int, source: Any, rows: Any = None) -> H5SlabReader:
                return H5SlabReader(h5, series, c0, c1)

            execute.slab_reader = h5py_slabs  # type: ignore[assignment]
        try:
            s3.puts = s3.put_bytes = 0
            stats = ReadStats()
            cpu0 = time.process_time()
            t = time.perf_counter()
            out = write_chunks_step.write_chunks(s3, event, stats=stats)
            wall = time.perf_counter() - t
            cpu = time.process_time() - cpu0
        finally:
            execute.slab_reader = original
        result[label] = {
            "seconds": round(wall, 3),
            "cpu_seconds": round(cpu, 3),
            "files": out.files,
            "output_mb_per_s": round(out.payload_bytes / 1e6 / wall, 1),
            "bytes_read": stats.bytes,
            "gets": stats.requests,
            "puts": s3.puts,
        }
    return result


def handler_import_seconds() -> dict[str, float]:
    """Cold import of each handler module in a fresh interpreter (the init part of a cold start)."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "AWS_DEFAULT_REGION": "us-east-1", "POWERTOOLS_TRACE_DISABLED": "true"}
    out = {}
    for name in ("plan", "write_chunks", "finalize"):
        code = f"import time; t = time.perf_counter(); import functions.{name}.app; print(time.perf_counter() - t)"
        run = subprocess.run(
            [sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, check=True
        )
        out[name] = round(float(run.stdout.strip()), 3)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=131_072 * 2, help="samples of the test file (default 2 items)")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    result = run(args.samples)
    result["handler_import_seconds"] = handler_import_seconds()
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
