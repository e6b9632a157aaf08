"""Benchmark ``nwb2pennsieve convert`` against the floor (bench/floor.py), side by side in one run.

For each file, ours (``nwb2pennsieve convert FILE -o DIR --workers 2`` as a subprocess) and the
floor (``bench/floor.py FILE DIR --workers 2``) run alternately, ``--reps`` times each, writing to
the same filesystem. Each run is timed from spawn to exit (interpreter start, imports and planning
included, for both), and the resident memory of its whole process tree (the process and all its
descendants: pool workers, the forkserver) is sampled from /proc every 20 ms and summed; the peak
of that sum is the run's peak RSS. Before each run the previous output is deleted and the page
cache flushed to disk (``sync``, untimed), and the inputs are read once beforehand so they are in
the page cache. On the first repetition the floor's files are compared byte for byte with ours.

Medians are reported (the machine is noisy). The table is printed and written to bench/results.md
with the command, the date and the machine.

    make bench                                   # all files, 3 repetitions, output in bench/out/
    .venv/bin/python bench/bench_convert.py --reps 5 --out /dev/shm/n2p-bench
    .venv/bin/python bench/bench_convert.py --files np10 --reps 1   # quick check
"""

from __future__ import annotations

import argparse
import filecmp
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import generate  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")
RSS_LIMIT_MB = 500.0
RATIO_TARGET = 0.75


# --- peak RSS of a process tree ----------------------------------------------------------------


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/children") as fh:
                    kids.extend(int(k) for k in fh.read().split())
            except OSError:
                pass
    except OSError:
        pass
    return kids


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def _pss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, IndexError, ValueError):
        pass
    return 0


def tree_memory(root: int, pss: bool = False) -> tuple[int, int]:
    """(summed RSS, summed PSS or 0) of ``root`` and all its descendants."""
    rss, total_pss, stack = 0, 0, [root]
    while stack:
        pid = stack.pop()
        rss += _rss_bytes(pid)
        if pss:
            total_pss += _pss_bytes(pid)
        stack.extend(_children(pid))
    return rss, total_pss


class PeakRss:
    """Samples the summed RSS (and PSS) of ``pid`` and its descendants every ``interval`` seconds.

    RSS counts a page shared by several processes (libraries, pages a forked worker shares with
    its parent) once per process: that sum is the figure the targets use. PSS splits shared pages
    between their sharers, so its sum is the memory the tree really holds; it is sampled every
    fifth time (reading smaps_rollup walks the page tables).
    """

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self.peak_pss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        k = 0
        while not self._stop.is_set():
            rss, pss = tree_memory(self.pid, pss=k % 5 == 0)
            self.peak = max(self.peak, rss)
            self.peak_pss = max(self.peak_pss, pss)
            k += 1
            self._stop.wait(self.interval)

    def stop(self) -> tuple[int, int]:
        self._stop.set()
        self._thread.join()
        return self.peak, self.peak_pss


# --- runs -----------------------------------------------------------------------------------------


@dataclass
class Runs:
    seconds: list[float] = field(default_factory=list)
    peak_rss: list[int] = field(default_factory=list)
    peak_pss: list[int] = field(default_factory=list)

    def median_s(self) -> float:
        return statistics.median(self.seconds)

    def median_rss_mb(self) -> float:
        return statistics.median(self.peak_rss) / 1e6

    def max_rss_mb(self) -> float:
        return max(self.peak_rss) / 1e6

    def median_pss_mb(self) -> float:
        return statistics.median(self.peak_pss) / 1e6


def shown(path: Path) -> str:
    """A path as the report shows it: relative to the repository when inside it (no machine paths)."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


@dataclass
class Case:
    key: str
    label: str
    path: Path
    input_bytes: int = 0
    output_bytes: int = 0
    files: int = 0
    ours: Runs = field(default_factory=Runs)
    floor: Runs = field(default_factory=Runs)
    identical: str = "not checked"


def run_measured(
    cmd: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None
) -> tuple[float, tuple[int, int]]:
    """Run ``cmd`` (``env`` added to this environment, in ``cwd``, default the repository)."""
    started = time.perf_counter()
    environ = {**os.environ, **env} if env else None
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd or ROOT, env=environ)
    sampler = PeakRss(proc.pid)
    out, err = proc.communicate()
    seconds = time.perf_counter() - started
    peak = sampler.stop()
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {shlex.join(cmd)}\n{out.decode()}\n{err.decode()}")
    return seconds, peak


def clean(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    os.sync()


def warm(path: Path) -> None:
    with open(path, "rb", buffering=0) as fh:
        while fh.read(64 << 20):
            pass


def compare(ours: Path, floor: Path) -> str:
    floor_names = sorted(os.listdir(floor))
    ours_names = sorted(n for n in os.listdir(ours) if n.endswith(".bin.gz"))
    if floor_names != ours_names:
        return f"DIFFERENT file sets ({len(ours_names)} vs {len(floor_names)})"
    _, mismatch, errors = filecmp.cmpfiles(ours, floor, floor_names, shallow=False)
    if mismatch or errors:
        return f"DIFFERENT: {len(mismatch) + len(errors)} of {len(floor_names)} files differ"
    return f"identical ({len(floor_names)} files)"


def plan_sizes(case: Case) -> None:
    import numpy as np

    from nwb2pennsieve.local import plan_file
    from nwb2pennsieve.options import ConversionOptions

    plan = plan_file(case.path, ConversionOptions())
    case.input_bytes = sum(int(np.prod(s.shape)) * np.dtype(s.dtype).itemsize for s in plan.series)
    case.output_bytes = sum(i.output_bytes for i in plan.work_items)
    case.files = plan.summary().chunk_files


def bench_case(case: Case, out_root: Path, reps: int, workers: int, verify: bool) -> None:
    bindir = Path(sys.executable).parent
    ours_dir, floor_dir = out_root / f"{case.key}-ours", out_root / f"{case.key}-floor"
    ours_cmd = [
        str(bindir / "nwb2pennsieve"),
        "convert",
        str(case.path),
        "-o",
        str(ours_dir),
        "--workers",
        str(workers),
        "--gzip-level",
        "0",  # the floor writes the stored framing
    ]
    floor_cmd = [
        sys.executable,
        str(HERE / "floor.py"),
        str(case.path),
        str(floor_dir),
        "--workers",
        str(workers),
    ]
    warm(case.path)
    for rep in range(reps):
        order = [("ours", ours_cmd, ours_dir), ("floor", floor_cmd, floor_dir)]
        if rep % 2:
            order.reverse()  # alternate who goes first
        for who, cmd, out in order:
            clean(out)
            seconds, (peak, peak_pss) = run_measured(cmd)
            runs = case.ours if who == "ours" else case.floor
            runs.seconds.append(seconds)
            runs.peak_rss.append(peak)
            runs.peak_pss.append(peak_pss)
            print(
                f"  {case.label} rep {rep + 1} {who:5s}: {seconds:6.2f} s  "
                f"{case.input_bytes / 1e6 / seconds:7.1f} MB/s in  peak RSS {peak / 1e6:6.0f} MB"
                f"  PSS {peak_pss / 1e6:5.0f} MB",
                flush=True,
            )
            if not (rep == 0 and verify):
                clean(out)
        if rep == 0 and verify:  # both outputs are there: compare, then drop them
            case.identical = compare(ours_dir, floor_dir)
            print(f"  {case.label}: floor vs ours: {case.identical}", flush=True)
            clean(ours_dir)
            clean(floor_dir)
    clean(ours_dir)
    clean(floor_dir)


# --- report -----------------------------------------------------------------------------------


def machine() -> str:
    mem = 0
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({cpu}), {mem / 2**30:.0f} GiB RAM, Linux {platform.release()}"


def fs_type(path: Path) -> str:
    path = path.resolve()
    best, kind = "", "?"
    with open("/proc/mounts") as fh:
        for line in fh:
            _dev, mnt, typ = line.split()[:3]
            if str(path).startswith(mnt) and len(mnt) > len(best):
                best, kind = mnt, typ
    return kind


def table(cases: list[Case]) -> str:
    rows = [
        "| file | input MB | output MB (files) | ours MB/s in | ours MB/s out | floor MB/s in "
        "| floor MB/s out | ours / floor | ours peak RSS MB (PSS) | floor peak RSS MB (PSS) | floor bytes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for c in cases:
        o, f = c.ours.median_s(), c.floor.median_s()
        rows.append(
            f"| {c.label} | {c.input_bytes / 1e6:.0f} | {c.output_bytes / 1e6:.0f} ({c.files}) "
            f"| {c.input_bytes / 1e6 / o:.0f} | {c.output_bytes / 1e6 / o:.0f} "
            f"| {c.input_bytes / 1e6 / f:.0f} | {c.output_bytes / 1e6 / f:.0f} | {f / o:.2f} "
            f"| {c.ours.median_rss_mb():.0f} ({c.ours.median_pss_mb():.0f}) "
            f"| {c.floor.median_rss_mb():.0f} ({c.floor.median_pss_mb():.0f}) | {c.identical} |"
        )
    return "\n".join(rows)


def runs_detail(cases: list[Case]) -> str:
    lines = []
    for c in cases:
        lines.append(
            f"- {c.label}: ours "
            + ", ".join(f"{s:.2f}" for s in c.ours.seconds)
            + " s; floor "
            + ", ".join(f"{s:.2f}" for s in c.floor.seconds)
            + " s"
        )
    return "\n".join(lines)


def checks(cases: list[Case]) -> list[str]:
    out = []
    for c in cases:
        ratio = c.floor.median_s() / c.ours.median_s()
        out.append(
            f"- {c.label}: ours/floor {ratio:.2f} "
            f"({'meets' if ratio >= RATIO_TARGET else 'BELOW'} the {RATIO_TARGET:.2f} target); "
            f"ours peak RSS {c.ours.max_rss_mb():.0f} MB "
            f"({'within' if c.ours.max_rss_mb() <= RSS_LIMIT_MB else 'OVER'} {RSS_LIMIT_MB:.0f} MB)"
        )
    return out


CASES = {
    "np60": ("Neuropixels 384 ch 30 kHz int16 60 s", lambda: generate.neuropixels(60.0)),
    "np10": ("Neuropixels 384 ch 30 kHz int16 10 s", lambda: generate.neuropixels(10.0)),
    "np60gz": ("Neuropixels 60 s, gzip 4 + shuffle", lambda: generate.neuropixels(60.0, gzip=True)),
    "eeg": ("EEG 64 ch 2 kHz float32, 5 gaps, 30 min", lambda: generate.eeg_with_gaps(1800.0)),
    "wide": ("2 ch float64 500 MB", lambda: generate.two_channel(500.0)),
}
DEFAULT_CASES = ["np60", "np10", "eeg", "wide"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=3, help="repetitions of each (default 3)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default=str(HERE / "out"), help="output root (default bench/out; e.g. /dev/shm/...)")
    p.add_argument(
        "--files",
        default=",".join(DEFAULT_CASES),
        help=f"comma-separated cases among {','.join(CASES)} (default {','.join(DEFAULT_CASES)})",
    )
    p.add_argument("--no-verify", action="store_true", help="skip the byte-for-byte comparison")
    p.add_argument("--results", default=str(HERE / "results.md"), help="where to write the table ('' for nowhere)")
    args = p.parse_args()

    out_root = Path(args.out)
    out_root.mkdir(parents=True, exist_ok=True)
    cases = []
    for key in args.files.split(","):
        label, make = CASES[key]
        case = Case(key=key, label=label, path=make())
        plan_sizes(case)
        cases.append(case)
    started = datetime.now(UTC)
    for case in cases:
        print(f"{case.label}: {case.path.name}", flush=True)
        bench_case(case, out_root, args.reps, args.workers, not args.no_verify)

    command = shlex.join([".venv/bin/python", "bench/bench_convert.py", *sys.argv[1:]])
    report = "\n".join(
        [
            "# Benchmark results",
            "",
            f"- command: `{command}`",
            f"- date: {started:%Y-%m-%d %H:%M} UTC",
            f"- machine: {machine()}",
            f"- output on: {shown(out_root)} ({fs_type(out_root)}); {args.workers} workers; "
            f"{args.reps} repetitions, medians; MB = 10^6 bytes;",
            "  times include interpreter start, imports and planning",
            "",
            table(cases),
            "",
            "Peak RSS: the largest sum, over the run, of the RSS of the process and all its descendants",
            "(sampled every 20 ms; median over the runs); in brackets the same with PSS (shared pages split",
            "between the processes sharing them). Ratio: floor median time / ours median time.",
            "",
            "Targets (Neuropixels): ours ≥ 0.75 × floor, peak RSS ≤ 500 MB whatever the length.",
            "",
            *checks(cases),
            "",
            "Every run (seconds):",
            "",
            runs_detail(cases),
            "",
        ]
    )
    print()
    print(report)
    if args.results:
        Path(args.results).write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
