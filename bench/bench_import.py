"""Import N small files into the fake Pennsieve: parallel uploaders vs a 4-thread baseline.

    .venv/bin/python bench/bench_import.py                 # 100,000 files, 64 uploaders
    .venv/bin/python bench/bench_import.py --files 5000    # a quick run
    .venv/bin/python bench/bench_import.py --nwb bench/data/np-384ch-30k-int16-60s.nwb --levels 0,1 --files 2000

With ``--nwb``, the files uploaded are a real conversion's instead: FILE is converted at each of
``--levels`` (GZIP_LEVEL) and the first ``--files`` chunk files (by name: whole channels first)
with their channel metadata are imported, one level after the other, at ``--workers``; the
bytes and the time are compared (no baseline).

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
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from nwb2pennsieve.output.storage import LocalStore
from nwb2pennsieve.pennsieve import ImportTarget, PennsieveClient, import_store
from nwb2pennsieve.plan.models import ChannelMetadata, chunk_file_name, metadata_file_name
from nwb2pennsieve.settings import Settings

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


def converted_subset(nwb: Path, level: int, files: int, work: Path) -> tuple[LocalStore, int]:
    """The first ``files`` chunk files of ``nwb`` converted at ``level`` (+ their channels' metadata)."""
    full = work / f"{nwb.stem}-level{level}"
    if not (full / ".complete").exists():
        shutil.rmtree(full, ignore_errors=True)
        subprocess.run(
            [str(Path(sys.executable).parent / "nwb2pennsieve"), "convert", str(nwb), "-o", str(full),
             "--gzip-level", str(level)],
            check=True, cwd=ROOT,
        )  # fmt: skip
        (full / ".complete").write_text("")
    subset = work / f"{nwb.stem}-level{level}-{files}"
    shutil.rmtree(subset, ignore_errors=True)
    subset.mkdir(parents=True)
    names = sorted(n for n in os.listdir(full) if n.endswith(".bin.gz"))[:files]
    channels = {n.split("_", 1)[0] for n in names}
    size = 0
    for name in names + [f"{c}.metadata.json" for c in sorted(channels)]:
        os.link(full / name, subset / name)
        size += (full / name).stat().st_size if name.endswith(".bin.gz") else 0
    return LocalStore(subset), size


def main_levels(args: argparse.Namespace) -> int:
    work = ROOT / "bench" / "out" / "import"
    stores = {level: converted_subset(Path(args.nwb), level, args.files, work) for level in args.levels}
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.fake_pennsieve", "--static-token", TOKEN, "--json", "--packages",
         str(len(stores)), "--latency-ms", str(args.latency_ms)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    rows = []
    try:
        assert server.stdout is not None
        fake = json.loads(server.stdout.readline())
        for package, (level, (store, size)) in zip(fake["package_ids"], stores.items(), strict=True):
            n, s = run(store, fake, package, args.workers)
            rows.append((level, n, size, s))
            print(f"level {level}: {n} files, {size / 1e6:.0f} MB in {s:.1f}s ({size / 1e6 / s:.0f} MB/s)", flush=True)
    finally:
        server.terminate()
        server.wait()
    print("\n| GZIP_LEVEL | files | MB uploaded | seconds | MB/s |\n|---:|---:|---:|---:|---:|")
    for level, n, size, s in rows:
        print(f"| {level} | {n} | {size / 1e6:.0f} | {s:.1f} | {size / 1e6 / s:.0f} |")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--channels", type=int, default=100)
    parser.add_argument("--workers", type=int, default=64, help="parallel uploaders of the measured run")
    parser.add_argument("--baseline-workers", type=int, default=4)
    parser.add_argument("--baseline-files", type=int, default=2_000)
    parser.add_argument("--latency-ms", type=float, default=50.0, help="added by the fake to every request")
    parser.add_argument("--nwb", help="import a real conversion of this NWB file instead (see above)")
    parser.add_argument("--levels", default="0,1", help="with --nwb: the GZIP_LEVELs to compare (default 0,1)")
    args = parser.parse_args()
    if args.nwb:
        args.levels = [int(x) for x in args.levels.split(",")]
        return main_levels(args)

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
