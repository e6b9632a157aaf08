"""Import N small files into the fake Pennsieve: parallel uploaders vs a 4-thread baseline.

    .venv/bin/python bench/bench_import.py                 # 100,000 files, 64 uploaders
    .venv/bin/python bench/bench_import.py --files 5000    # a quick run

The fake runs in its own process (so its CPU does not share the client's GIL) and adds
``--latency-ms`` to every request, standing in for the network round trip and the service time
of API Gateway and S3 (real ones are usually larger, which favours parallel uploads further).
Each file costs two requests (presign, then PUT). The 4-thread baseline (the reference's
setting) runs on the first ``--baseline-files`` files only: at its rate (bench/results-import.md)
100,000 files would take most of an hour; its rate is steady, so a few thousand files measure it well.
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import time
from pathlib import Path

from nwb2pennsieve.config import Settings
from nwb2pennsieve.models import ChannelMetadata, chunk_file_name, metadata_file_name
from nwb2pennsieve.pennsieve import ImportTarget, PennsieveClient, import_store
from nwb2pennsieve.storage import LocalStore

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-static-token"


def make_output(directory: Path, files: int, channels: int) -> LocalStore:
    """``files`` chunk files (8 samples each) over ``channels`` channels; reused when already there."""
    store = LocalStore(directory)
    marker = directory / ".complete"
    if marker.exists() and marker.read_text() == f"{files} {channels}":
        for name in store.list_names("import-"):
            store.delete(name)
        return store
    if directory.exists():
        for p in directory.iterdir():
            p.unlink()
    blob = gzip.compress(b"\x00" * 64, compresslevel=0, mtime=0)
    per_channel = -(-files // channels)
    written = 0
    for ch in range(channels):
        n = min(per_channel, files - written)
        if n <= 0:
            break
        t0 = 1_700_000_000_000_000
        for k in range(n):
            start = t0 + k * 10_000_000
            store.write_bytes(chunk_file_name(ch, start, start + 7_000), blob)
        meta = ChannelMetadata(name=f"ch{ch}", start=t0, end=t0 + n * 10_000_000, rate=1000.0, group="bench")
        store.write_bytes(metadata_file_name(ch), meta.model_dump_json(by_alias=True).encode())
        written += n
    marker.write_text(f"{files} {channels}")
    return store


def run(store: LocalStore, fake: dict, package: str, workers: int) -> tuple[int, float]:
    settings = Settings(
        pennsieve_api_host=fake["url"],
        pennsieve_api_host2=fake["url"],
        session_token=TOKEN,  # type: ignore[arg-type]
    )
    client = PennsieveClient.from_settings(settings, pool_size=workers)
    target = ImportTarget(dataset_id=fake["dataset_id"], package_id=package)
    try:
        t0 = time.perf_counter()
        result = import_store(store, target, client, workers=workers)
        seconds = time.perf_counter() - t0
    finally:
        client.close()
    assert result.files_uploaded == result.files, result
    return result.files, seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--channels", type=int, default=100)
    parser.add_argument("--workers", type=int, default=64, help="parallel uploaders of the measured run")
    parser.add_argument("--baseline-workers", type=int, default=4)
    parser.add_argument("--baseline-files", type=int, default=2_000)
    parser.add_argument("--latency-ms", type=float, default=50.0, help="added by the fake to every request")
    args = parser.parse_args()

    data = ROOT / "bench" / "data"
    t = time.perf_counter()
    main_store = make_output(data / f"import-{args.files}", args.files, args.channels)
    base_files = min(args.files, args.baseline_files)
    base_store = make_output(
        data / f"import-{base_files}-baseline", base_files, max(1, args.channels * base_files // args.files)
    )
    print(f"output ready in {time.perf_counter() - t:.1f}s ({args.files} + {base_files} files)")

    server = subprocess.Popen(
        [sys.executable, "-m", "tests.fake_pennsieve", "--static-token", TOKEN, "--json", "--packages", "2",
         "--latency-ms", str(args.latency_ms)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        fake = json.loads(server.stdout.readline())
        n_base, s_base = run(base_store, fake, fake["package_ids"][0], args.baseline_workers)
        rate_base = n_base / s_base
        w = args.baseline_workers
        print(f"baseline: {n_base} files, {w} threads: {s_base:.1f}s, {rate_base:.0f} files/s")
        n, s = run(main_store, fake, fake["package_ids"][1], args.workers)
        rate = n / s
        print(f"parallel: {n} files, {args.workers} threads: {s:.1f}s, {rate:.0f} files/s")
        print(f"ratio: {rate / rate_base:.1f}x (latency {args.latency_ms:g} ms per request)")
    finally:
        server.terminate()
        server.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
