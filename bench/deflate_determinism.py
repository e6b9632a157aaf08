"""How often the compressed chunk files of one conversion come out different from run to run.

Converts the bundled sample (or FILE) at a gzip level ``--runs`` times, each in a fresh process
(``nwb2pennsieve convert``, so each run has its own address-space layout), and compares every
chunk file with the first run's: the compressed bytes, and the samples they decompress to.
Prints one line a run that differs and a summary. Anything before the command, e.g.
``setarch -R`` (no address-space randomisation) or environment variables such as
``PYTHONMALLOC=malloc MALLOC_PERTURB_=255``, applies to every run.

    .venv/bin/python -m bench.deflate_determinism [--runs 60] [--workers 1] [--level 1] [FILE]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path

from nwb2pennsieve.local.cli import sample_path


def convert(nwb: Path, out: Path, level: int, workers: int) -> dict[str, tuple[str, str]]:
    """name -> (digest of the compressed bytes, digest of the samples) of every chunk file."""
    command = [sys.executable, "-m", "nwb2pennsieve.local.cli", "convert", str(nwb), "-o", str(out)]
    options = ["--chunk-size-mb", "0.01", "--gzip-level", str(level), "--workers", str(workers)]
    subprocess.run([*command, *options], check=True, capture_output=True)
    return {
        p.name: (hashlib.sha256(data).hexdigest(), hashlib.sha256(gzip.decompress(data)).hexdigest())
        for p in sorted(out.glob("*.bin.gz"))
        for data in [p.read_bytes()]
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("file", type=Path, nargs="?", default=None, help="default: the bundled sample")
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--level", type=int, default=1)
    args = parser.parse_args()
    nwb = args.file or sample_path()
    with tempfile.TemporaryDirectory() as tmp:
        first = convert(nwb, Path(tmp) / "first", args.level, args.workers)
        differing_runs = 0
        for run in range(1, args.runs + 1):
            again = convert(nwb, Path(tmp) / f"run{run}", args.level, args.workers)
            if again.keys() != first.keys():
                raise SystemExit(f"run {run}: other file names")
            bytes_differ = [n for n in first if again[n][0] != first[n][0]]
            samples_differ = [n for n in first if again[n][1] != first[n][1]]
            if samples_differ:
                raise SystemExit(f"run {run}: other samples in {samples_differ}")
            if bytes_differ:
                differing_runs += 1
                print(f"run {run}: {len(bytes_differ)} of {len(first)} files other bytes, same samples", flush=True)
    print(f"{differing_runs} of {args.runs} runs differ from the first ({len(first)} chunk files, level {args.level})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
