"""What the Pennsieve app needs (app.yml's ``runtime``): `nwb2pennsieve run` as the image runs it.

    .venv/bin/python bench/bench_app.py [--seconds 60] [--workers 2]

Converts the Neuropixels bench file (384 channels, 30 kHz, int16; bench/generate.py) with
``ENVIRONMENT=production`` (the importer on, compressed chunk files) and ``WORKERS`` processes,
and imports it into the fake Pennsieve and its S3 (its own process, 50 ms a request), as the
app's entry point does in a Pennsieve workflow. The peak memory of the process tree is sampled
every 20 ms (bench/bench_convert.py's sampler). The memory app.yml asks is the smallest size
ECS Fargate allows with that many vCPUs that is at least twice the peak RSS; both go to
bench/results-app.json (which tests/unit/test_app_manifest.py checks app.yml against) and
bench/results-app.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
from datetime import date
from pathlib import Path

from bench_asset_import import fake_stats, start_fake
from bench_convert import run_measured
from generate import neuropixels

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "app"
# ECS Fargate's memory sizes (MiB) for 1, 2 and 4 vCPUs.
FARGATE_MEMORY = {1: range(2048, 8193, 1024), 2: range(4096, 16385, 1024), 4: range(8192, 30721, 1024)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the Neuropixels bench file")
    parser.add_argument("--workers", type=int, default=2, choices=sorted(FARGATE_MEMORY), help="= the app's vCPUs")
    parser.add_argument("--latency-ms", type=float, default=50.0)
    args = parser.parse_args()

    nwb = neuropixels(args.seconds)
    shutil.rmtree(OUT, ignore_errors=True)
    (OUT / "input").mkdir(parents=True)
    os.link(nwb, OUT / "input" / nwb.name)
    fake, info = start_fake(args.latency_ms, 1)
    try:
        env = {**info["env"], "ENVIRONMENT": "production", "WORKERS": str(args.workers),
               "INPUT_DIR": str(OUT / "input"), "OUTPUT_DIR": str(OUT / "output")}  # fmt: skip
        program = str(Path(sys.executable).parent / "nwb2pennsieve")
        seconds, (peak_rss, peak_pss) = run_measured([program, "run"], env=env)
        stats = fake_stats(fake)
    finally:
        fake.terminate()
        fake.wait()
    (asset,) = stats["assets"]
    files = sum(1 for p in (OUT / "output" / nwb.stem).iterdir() if p.name.endswith(".bin.gz"))
    if asset["status"] != "active" or stats["ranges"][info["package_ids"][0]] != files:
        raise SystemExit(f"the import did not complete: {asset['status']}, {stats['ranges']}")
    peak_mib = peak_rss / 1_048_576
    memory = next(m for m in FARGATE_MEMORY[args.workers] if m >= 2 * peak_mib)
    result = {
        "command": "bench/bench_app.py" + (f" --seconds {args.seconds:g}" if args.seconds != 60 else ""),
        "file": nwb.name,
        "chunk_files": files,
        "workers": args.workers,
        "seconds": round(seconds, 1),
        "peak_rss_mib": math.ceil(peak_mib),
        "peak_pss_mib": math.ceil(peak_pss / 1_048_576),
        "cpu": 1024 * args.workers,
        "memory": memory,
    }
    (ROOT / "bench" / "results-app.json").write_text(json.dumps(result, indent=1) + "\n")
    (ROOT / "bench" / "results-app.md").write_text(f"""# The Pennsieve app's resources

- command: `.venv/bin/python {result["command"]}` (writes bench/results-app.json, which
  tests/unit/test_app_manifest.py holds app.yml's `runtime` to)
- machine: {platform.machine()}, {os.cpu_count()} cores; date: {date.today().isoformat()}

`nwb2pennsieve run` (the image's entry point) with `ENVIRONMENT=production` and `WORKERS={args.workers}`:
converts {nwb.name} ({nwb.stat().st_size / 1e6:.0f} MB, {files} chunk files) and imports it into the
fake Pennsieve's viewer asset ({args.latency_ms:g} ms a request), in {seconds:.0f} s.

| peak RSS of the process tree | peak PSS | app.yml `cpu` | app.yml `memory` |
|---:|---:|---:|---:|
| {result["peak_rss_mib"]} MiB | {result["peak_pss_mib"]} MiB | {result["cpu"]} ({args.workers} vCPU) | {memory} MiB |

`memory` is the smallest size ECS Fargate allows with {args.workers} vCPUs that is at least twice the peak
RSS (the reference asks 4096 CPU units and 12288 MiB). More workers do not convert faster here: the
writer is bound by the disk past 2 (../shared/performance-notes.md).
""")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
