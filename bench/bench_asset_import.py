"""The viewer-asset import: ours against the reference processor's importer, on the same fake.

    make bench-import-assets     # sets up the reference's venv (build/venv-reference), then runs this
    .venv/bin/python bench/bench_asset_import.py --reference-python build/venv-reference/bin/python \\
        --reference-dir ../shared/anchors/processor-post-timeseries [--files 20000] [--workers 64]

The fake Pennsieve runs in its own process with its S3 (a moto server behind the gate that checks
the asset's credentials) and adds ``--latency-ms`` (50) to every API and S3 request, standing in
for the network and the services. Both importers run as they run for a user, each in a
subprocess timed from spawn to exit (interpreter start and imports included): the reference's
``import_timeseries_via_assets`` (through bench/reference_asset_import.py, in its own venv, on a
copy of the output: it renames the files) on ``--reference-files`` chunk files, ours
(``nwb2pennsieve import DIR --workers N``) on ``--files``. The rates are files per second of the
whole import (lookup, asset, channels, uploads, ranges, finish). The run counts only when the
fake's end state says both imports are complete: the asset finished, a range and an object per
file, no request refused. The results go to ``--results`` (bench/results-import-assets.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

from bench_import import make_output

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-static-token"


def start_fake(latency_ms: float, packages: int) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    command = [sys.executable, "-m", "tests.fake_pennsieve", "--static-token", TOKEN, "--json", "--s3",
               "--packages", str(packages), "--latency-ms", str(latency_ms)]  # fmt: skip
    fake = subprocess.Popen(command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert fake.stdout is not None
    return fake, json.loads(fake.stdout.readline())


def fake_stats(fake: subprocess.Popen[str]) -> dict[str, Any]:
    assert fake.stdin is not None and fake.stdout is not None
    fake.stdin.write("stats\n")
    fake.stdin.flush()
    result: dict[str, Any] = json.loads(fake.stdout.readline())
    return result


def timed(command: list[str], env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{command[0]} failed ({done.returncode}): {done.stderr.strip()[-800:]}")
    return seconds, done.stdout


def run_reference(args: argparse.Namespace, fake: dict[str, Any], output: Path, run: str) -> float:
    copy = ROOT / "bench" / "out" / "asset-import-reference"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(output, copy)
    ref = Path(args.reference_dir).resolve()
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", ""), **fake["env"],
           "INTEGRATION_ID": run, "ASSET_NAME": "ref-asset", "PYTHONDONTWRITEBYTECODE": "1",
           "PYTHONPATH": f"{ref / 'processor'}{os.pathsep}{ref}", "AWS_EC2_METADATA_DISABLED": "true"}  # fmt: skip
    seconds, out = timed([args.reference_python, str(ROOT / "bench" / "reference_asset_import.py"), str(copy)], env)
    print(f"reference: {out.strip()}", flush=True)
    return seconds


def run_ours(args: argparse.Namespace, fake: dict[str, Any], output: Path, run: str) -> float:
    env = {**os.environ, **fake["env"], "INTEGRATION_ID": run}
    for name in ("PENNSIEVE_API_KEY", "PENNSIEVE_API_SECRET", "REFRESH_TOKEN", "LEGACY_IMPORT_FLOW"):
        env.pop(name, None)
    for name in [f for f in output.iterdir() if f.name.startswith("import-")]:
        name.unlink()
    command = [
        str(Path(sys.executable).parent / "nwb2pennsieve"),
        "import",
        str(output),
        "--workers",
        str(args.workers),
    ]
    seconds, out = timed(command, env)
    print(f"ours: {out.strip().splitlines()[-1]}", flush=True)
    return seconds


def check_complete(stats: dict[str, Any], package: str, files: int, name: str) -> None:
    (asset,) = [a for a in stats["assets"] if a["package_ids"] == [package] and a["name"] == name]
    problems = []
    if asset["status"] != "active":
        problems.append(f"asset {asset['name']} is {asset['status']}")
    if stats["ranges"].get(package) != files:
        problems.append(f"{stats['ranges'].get(package)} ranges, not {files}")
    if stats["s3"]["refused"]:
        problems.append(f"S3 refused {stats['s3']['refused']}")
    if problems:
        raise SystemExit(f"the import of {name} is not complete: {'; '.join(problems)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=20_000, help="chunk files ours imports")
    parser.add_argument("--channels", type=int, default=200)
    parser.add_argument("--reference-files", type=int, default=2_000, help="its rate is steady: fewer suffice")
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--reps", type=int, default=3, help="runs of each, alternating (the median is quoted)")
    parser.add_argument("--reference-python", required=True, help="the reference's venv (make reference-venv)")
    parser.add_argument("--reference-dir", required=True, help="the reference's tree (../shared/anchors/...)")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results-import-assets.md")
    args = parser.parse_args()

    data = ROOT / "bench" / "data"
    ours_out = make_output(data / f"assets-{args.files}", args.files, args.channels).root
    per_channel = args.files // args.channels
    ref_out = make_output(data / f"assets-ref-{args.reference_files}", args.reference_files,
                          max(1, args.reference_files // per_channel)).root  # fmt: skip
    fake, info = start_fake(args.latency_ms, 2 * args.reps)  # a package (and a run) of its own for each import
    rows = []
    try:
        for rep in range(1, args.reps + 1):
            i = 2 * (rep - 1)
            ref_seconds = run_reference(args, info, ref_out, info["runs"][i])
            check_complete(fake_stats(fake), info["package_ids"][i], args.reference_files, "ref-asset")
            ours_seconds = run_ours(args, info, ours_out, info["runs"][i + 1])
            check_complete(fake_stats(fake), info["package_ids"][i + 1], args.files, "nwb-asset")
            rows.append((rep, args.reference_files / ref_seconds, args.files / ours_seconds, ref_seconds, ours_seconds))
            print(f"run {rep}: reference {rows[-1][1]:.0f} files/s, ours {rows[-1][2]:.0f} files/s", flush=True)
    finally:
        fake.terminate()
        fake.wait()
    table = "\n".join(
        f"| {rep} | {ref_s:.1f} | {ref:.0f} | {ours_s:.1f} | {ours:.0f} | {ours / ref:.1f}x |"
        for rep, ref, ours, ref_s, ours_s in rows
    )
    ratio = statistics.median(ours / ref for _, ref, ours, _, _ in rows)
    print(table + f"\nmedian ratio: {ratio:.1f}x", flush=True)
    write_results(args, table, ratio)
    return 0


def write_results(args: argparse.Namespace, table: str, ratio: float) -> None:
    given = " ".join(sys.argv[1:]).split("--reference-dir ")[-1].partition(" ")[2]
    command = "make bench-import-assets" + (f" BENCH_ARGS='{given}'" if given else "")
    text = f"""# Viewer-asset import: ours against the reference's importer

- command: `{command}` (bench/bench_asset_import.py: the fake Pennsieve and its S3 in their own
  process, {args.latency_ms:g} ms added to every API and S3 request; each importer a subprocess, timed
  from spawn to exit; the end state checked: asset finished, a range and an object per file)
- machine: {platform.machine()}, {os.cpu_count()} cores, shared with the fake and other jobs (runs vary by ~10 %)
- date: {date.today().isoformat()}

The reference: `import_timeseries_via_assets` (4 upload threads) on {args.reference_files:,} chunk files; ours:
`nwb2pennsieve import --workers {args.workers}` on {args.files:,} chunk files over {args.channels} channels
(each file 8 samples: the rate is per file, as the uploads' round trips dominate).

| run | reference: seconds | files/s | ours: seconds | files/s | ratio |
|---:|---:|---:|---:|---:|---:|
{table}

**Median ratio: {ratio:.1f}x** (the issue asks at least 10x).
"""
    args.results.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
