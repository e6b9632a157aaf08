"""The viewer bundle, side by side in one run: ours (bundle only, and chunks + bundle) against
Pennsieve's TS-Zarr producer (timeseries-zarr-py, ``--producer``) and/or the older ts-zarr-py
(``--anchor``, with ``--layout legacy`` for ours).

For each Neuropixels file (bench/generate.py), runs each contender as its own process under
``/usr/bin/time -v`` (wall seconds; CPU seconds, user + system, of the whole process tree: the
work, whatever the cores; peak RSS of the largest process of the tree), ``--repeat``
times (Pennsieve's programs once on files longer than ``--anchor-once-over`` seconds), and
prints a Markdown table of medians with the speed ratio against the first of Pennsieve's
programs and the bundle's size. Pennsieve's programs run in virtual environments of their own,
made on first use outside the repository (the producer in an empty working folder: without
annotation files on its command line it reads those of its working folder). With
``--validate``, every TS-Zarr bundle is checked by the producer's validator.

    .venv/bin/python -m bench.bench_bundle --producer PATH/TO/timeseries-zarr-py [--work /dev/shm] FILE.nwb ...
    .venv/bin/python -m bench.bench_bundle --anchor PATH/TO/ts-zarr-py --layout legacy FILE.nwb ...
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.compare_bundle_anchor import anchor_venv

RSS = re.compile(r"Maximum resident set size \(kbytes\): (\d+)")
CPU = re.compile(r"(?:User|System) time \(seconds\): ([\d.]+)")


def measure(command: list[str], cwd: Path | None = None) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, peak RSS in MB) of one run."""
    started = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-v", *command], cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"{command[:3]} failed: {done.stderr[-2000:]}")
    found = RSS.search(done.stderr)
    cpu = sum(float(x) for x in CPU.findall(done.stderr))
    return wall, cpu, int(found[1]) / 1024 if found else 0.0


def validate(producer: Path, venv: Path, bundle: Path) -> None:
    """The producer's validator on ``bundle``: exit status 0, or the bench stops with its findings."""
    python = venv / "bin" / "python"
    done = subprocess.run(
        [str(python), "-W", "ignore", "-m", "timeseries_zarr.cli", "validate", str(bundle)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(producer.resolve())},
    )
    if done.returncode:
        raise SystemExit(f"the validator refused {bundle}: {done.stdout[-2000:]}")
    print("validated", bundle.name, done.stdout.strip().splitlines()[-1], flush=True)


def size_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("files", type=Path, nargs="+")
    parser.add_argument("--anchor", type=Path, help="the ts-zarr-py source folder (read only)")
    parser.add_argument("--venv", type=Path, default=Path(tempfile.gettempdir()) / "ts-zarr-anchor-venv")
    parser.add_argument("--producer", type=Path, help="the timeseries-zarr-py source folder (read only)")
    parser.add_argument(
        "--producer-venv", type=Path, default=Path(tempfile.gettempdir()) / "timeseries-zarr-producer-venv"
    )
    parser.add_argument("--layout", default="ts-zarr", help="BUNDLE_LAYOUT of ours (ts-zarr or legacy)")
    parser.add_argument(
        "--validate", action="store_true", help="check each TS-Zarr bundle with the producer's validator"
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--anchor-once-over", type=float, default=30.0, help="run the anchor once on longer files (s)")
    parser.add_argument("--workers", default="2")
    parser.add_argument(
        "--work",
        type=Path,
        help="where every contender writes its output (default: the system's temporary folder); "
        "/dev/shm keeps a slow or busy disk's writeback out of both contenders' times",
    )
    args = parser.parse_args()
    if not (args.anchor or args.producer):
        parser.error("--producer and/or --anchor: what ours is measured against")
    return args


def _theirs(args: argparse.Namespace, work: Path) -> dict[str, tuple[list[str], Path]]:
    """Pennsieve's programs: command (without the input and output) and working folder."""
    theirs: dict[str, tuple[list[str], Path]] = {}
    if args.producer:
        python = anchor_venv(args.producer_venv)
        (work / "producer-cwd").mkdir()
        os.environ["PYTHONPATH"] = str(args.producer.resolve())  # its code, run in place (read only)
        os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
        theirs["timeseries-zarr-py"] = ([str(python), "-m", "timeseries_zarr.main"], work / "producer-cwd")
    if args.anchor:
        python = anchor_venv(args.venv)
        shutil.copytree(args.anchor / "ts_zarr", work / "anchor" / "ts_zarr")
        theirs["ts-zarr-py"] = ([str(python), "-m", "ts_zarr.main"], work / "anchor")
    return theirs


Contender = tuple[list[str], Path | None, Path]  # command, working folder, output folder


def _contenders(
    args: argparse.Namespace, theirs: dict[str, tuple[list[str], Path]], work: Path, nwb: Path
) -> dict[str, Contender]:
    ours = [str(Path(sys.executable).parent / "nwb2pennsieve"), "convert", "--bundle-layout", args.layout]
    contenders: dict[str, Contender] = {
        name: ([*command, str(nwb.resolve()), str(work / name / "rec.zarr")], cwd, work / name)
        for name, (command, cwd) in theirs.items()
    }
    for name, formats, folder in (("ours, bundle", "bundle", "b"), ("ours, chunks+bundle", "chunks,bundle", "c")):
        command = [*ours, str(nwb), "-o", str(work / folder), "--formats", formats, "--workers", args.workers]
        contenders[name] = (command, None, work / folder)
    return contenders


def _runs(
    args: argparse.Namespace, name: str, contender: Contender, runs: int
) -> tuple[float, float, int, float, float]:
    """(median wall s, median CPU s, runs, median peak RSS MB, bundle MB) of ``runs`` runs."""
    command, cwd, out = contender
    walls, cpus, rss = [], [], []
    size = 0.0
    for _ in range(runs):
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        wall, cpu, peak = measure(command, cwd)
        walls.append(wall)
        cpus.append(cpu)
        rss.append(peak)
        bundle = next(iter(out.rglob("*.zarr")), None)
        size = size_mb(bundle) if bundle else 0.0
        if args.validate and bundle and args.producer and name.startswith("ours") and args.layout == "ts-zarr":
            validate(args.producer, args.producer_venv, bundle)
        shutil.rmtree(out, ignore_errors=True)
    print(name, "wall", [round(w, 2) for w in walls], "cpu", [round(c, 2) for c in cpus], end=" ")
    print("rss", [round(r) for r in rss], f"{size:.0f} MB", flush=True)
    return statistics.median(walls), statistics.median(cpus), runs, statistics.median(rss), size


def main() -> int:
    args = _arguments()
    rows = [
        "| file | contender | wall s (median) | CPU s (median) | runs | peak RSS MB (median) | bundle MB "
        "| speed vs anchor | CPU vs anchor |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        work = Path(tmp)
        theirs = _theirs(args, work)
        for nwb in args.files:
            found = re.search(r"-(\d+(?:\.\d+)?)s", nwb.name)
            seconds = float(found[1]) if found else 0.0
            results = {}
            print(nwb.name, flush=True)
            for name, contender in _contenders(args, theirs, work, nwb).items():
                runs = 1 if name in theirs and seconds > args.anchor_once_over else args.repeat
                results[name] = _runs(args, name, contender, runs)
            anchor_wall, anchor_cpu = results[next(iter(theirs))][:2]
            for name, (wall, cpu, runs, peak, size) in results.items():
                rows.append(
                    f"| {nwb.name} | {name} | {wall:.2f} | {cpu:.2f} | {runs} | {peak:.0f} | {size:.0f} "
                    f"| {anchor_wall / wall:.1f}x | {anchor_cpu / cpu:.1f}x |"
                )
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
