"""Chunk-file compression: ours at several gzip levels beside Pennsieve's reference processor.

For each file, these run alternately in one run (the order rotates each repetition), ``--reps``
times each, writing to the same filesystem, timed from spawn to exit with the peak summed RSS of
the process tree (bench_convert.py's method):

- ``nwb2pennsieve convert FILE -o DIR --workers 2 --gzip-level L`` for each of ``--levels``;
- ``bench/zlib_convert.py``, the same with zlib instead of ISA-L at level 1, on the first
  ``--zlib-reps`` repetitions only (default all; it is by far the slowest; ``--no-zlib`` skips it);
- the reference (``processor.main`` of processor-post-timeseries, CHUNK_SIZE_MB=1, importer off),
  run by ``--reference-python`` (a venv of its own with its requirements) from
  ``--reference-dir`` (its checkout); both also from the environment variables
  ``N2P_REFERENCE_PYTHON`` / ``N2P_REFERENCE_DIR``; skipped when not given.

Output bytes are the chunk files' sizes. On the first repetition every output's gzip trailers
(CRC-32 and size of the decompressed bytes) are compared with level 0's, file by file: the same
samples whatever the level (and, where the names match, the reference's).

    .venv/bin/python bench/bench_compression.py --reference-python REF_VENV/bin/python \\
        --reference-dir ANCHORS/processor-post-timeseries
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_convert import CASES, Runs, clean, fs_type, machine, run_measured, shown, warm  # noqa: E402

DEFAULT_FILES = "np60,eeg,wide"


@dataclass
class Variant:
    key: str
    label: str
    runs: Runs = field(default_factory=Runs)
    output_bytes: list[int] = field(default_factory=list)
    files: int = 0
    samples: str = "not checked"


def chunk_files(out: Path) -> dict[str, Path]:
    return {p.name: p for p in out.rglob("*.bin.gz")}


def trailers(files: dict[str, Path]) -> dict[str, bytes]:
    """name -> the last 8 bytes (CRC-32 and size of the decompressed bytes)."""
    out = {}
    for name, path in files.items():
        with open(path, "rb") as fh:
            fh.seek(-8, os.SEEK_END)
            out[name] = fh.read(8)
    return out


def compare(ref: dict[str, bytes], got: dict[str, bytes]) -> str:
    if not ref:
        return "no level-0 output to compare with"
    common = ref.keys() & got.keys()
    if not common:
        return "other file names: not compared"
    differ = sum(ref[n] != got[n] for n in common)
    extra = "" if len(common) == len(ref) == len(got) else f" ({len(common)} of {len(ref)}/{len(got)} names shared)"
    return (f"same CRC-32 and size ({len(common)} files)" if not differ else f"DIFFERENT ({differ} files)") + extra


def commands(case_path: Path, out: Path, args: argparse.Namespace) -> list[tuple[Variant, list[str], dict[str, str]]]:
    bindir = Path(sys.executable).parent
    base = ["convert", str(case_path), "-o", str(out), "--workers", str(args.workers)]
    todo: list[tuple[Variant, list[str], dict[str, str]]] = []
    for level in args.levels:
        label = "ours, level 0 (stored)" if level == 0 else f"ours, ISA-L level {level}"
        cmd = [str(bindir / "nwb2pennsieve"), *base, "--gzip-level", str(level)]
        todo.append((Variant(f"L{level}", label), cmd, {}))
    if not args.no_zlib:
        cmd = [sys.executable, str(HERE / "zlib_convert.py"), *base, "--gzip-level", "1"]
        todo.append((Variant("zlib1", "ours, zlib level 1"), cmd, {}))
    if args.reference_python and args.reference_dir:
        inbox = out.parent / f"{out.name}-input"
        inbox.mkdir(parents=True, exist_ok=True)
        link = inbox / case_path.name
        if not link.exists():
            link.symlink_to(case_path)
        env = {
            "INPUT_DIR": str(inbox),
            "OUTPUT_DIR": str(out),
            "CHUNK_SIZE_MB": "1",
            "IMPORTER_ENABLED": "false",
            "ENVIRONMENT": "local",
            "PYTHONPATH": str(Path(args.reference_dir)),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        cmd = [args.reference_python, "-m", "processor.main"]
        todo.append((Variant("reference", "Pennsieve reference processor"), cmd, env))
    return todo


def run_case(key: str, args: argparse.Namespace, out_root: Path) -> tuple[str, int, list[Variant]]:
    label, make = CASES[key]
    path = make()
    input_bytes = _input_bytes(path)
    warm(path)
    todo = commands(path, out_root / key, args)
    level0: dict[str, bytes] = {}
    for rep in range(args.reps):
        shift = rep % len(todo)
        for variant, cmd, env in todo[shift:] + todo[:shift]:
            if variant.key == "zlib1" and rep >= args.zlib_reps:
                continue
            out = out_root / key
            clean(out)
            out.mkdir(parents=True, exist_ok=True)
            cwd = Path(args.reference_dir) / "processor" if variant.key == "reference" else None
            seconds, (peak, pss) = run_measured(cmd, env=env or None, cwd=cwd)
            files = chunk_files(out)
            variant.runs.seconds.append(seconds)
            variant.runs.peak_rss.append(peak)
            variant.runs.peak_pss.append(pss)
            variant.output_bytes.append(sum(p.stat().st_size for p in files.values()))
            variant.files = len(files)
            if rep == 0:
                got = trailers(files)
                if variant.key == "L0":
                    level0 = got
                    variant.samples = "the reference for this column"
                elif not level0:
                    level0_pending.append((variant, got))
                else:
                    variant.samples = compare(level0, got)
            print(
                f"  {label} rep {rep + 1} {variant.label:32s}: {seconds:6.2f} s  "
                f"{variant.output_bytes[-1] / 1e6:8.0f} MB ({len(files)} files)  peak RSS {peak / 1e6:5.0f} MB",
                flush=True,
            )
            clean(out)
        for variant, got in level0_pending:
            variant.samples = compare(level0, got)
        level0_pending.clear()
    return label, input_bytes, [v for v, _, _ in todo]


level0_pending: list[tuple[Variant, dict[str, bytes]]] = []


def _input_bytes(path: Path) -> int:
    import numpy as np

    from nwb2pennsieve.local import plan_file
    from nwb2pennsieve.options import ConversionOptions

    plan = plan_file(path, ConversionOptions())
    return sum(int(np.prod(s.shape)) * np.dtype(s.dtype).itemsize for s in plan.series)


def table(label: str, input_bytes: int, variants: list[Variant]) -> list[str]:
    ref = next((v for v in variants if v.key == "reference"), None)
    rows = [
        f"### {label} ({input_bytes / 1e6:.0f} MB of samples)",
        "",
        "| variant | output MB (files) | × input | wall s (median) | MB/s in | vs reference: bytes "
        "| vs reference: speed | peak RSS MB (PSS) | decompressed vs level 0 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for v in variants:
        size = statistics.median(v.output_bytes)
        t = v.runs.median_s()
        if ref is not None:
            r_size, r_t = statistics.median(ref.output_bytes), ref.runs.median_s()
            vs_bytes, vs_speed = f"{size / r_size:.2f}", f"{r_t / t:.2f}×"
        else:
            vs_bytes = vs_speed = "n/a"
        rows.append(
            f"| {v.label} | {size / 1e6:.0f} ({v.files}) | {size / input_bytes:.2f} | {t:.2f} "
            f"| {input_bytes / 1e6 / t:.0f} | {vs_bytes} | {vs_speed} "
            f"| {v.runs.median_rss_mb():.0f} ({v.runs.median_pss_mb():.0f}) | {v.samples} |"
        )
    rows.append("")
    rows.append(
        "Every run (s): " + "; ".join(f"{v.label} " + ", ".join(f"{s:.2f}" for s in v.runs.seconds) for v in variants)
    )
    rows.append("")
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", default=DEFAULT_FILES, help=f"cases among {','.join(CASES)} (default {DEFAULT_FILES})")
    p.add_argument("--levels", default="0,1,2", help="our gzip levels (default 0,1,2)")
    p.add_argument("--no-zlib", action="store_true", help="skip the zlib level-1 comparison")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--zlib-reps", type=int, default=1_000, help="repetitions of the zlib comparison (default all)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--reference-python", default=os.environ.get("N2P_REFERENCE_PYTHON", ""))
    p.add_argument("--reference-dir", default=os.environ.get("N2P_REFERENCE_DIR", ""))
    p.add_argument("--out", default=str(HERE / "out" / "compression"))
    p.add_argument("--results", default=str(HERE / "results-compression.md"), help="'' for nowhere")
    args = p.parse_args()
    args.levels = [int(x) for x in args.levels.split(",")]
    out_root = Path(args.out).resolve()  # the reference runs in its own folder
    out_root.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC)
    sections = []
    for key in args.files.split(","):
        print(f"{key}:", flush=True)
        sections += table(*run_case(key, args, out_root))
    shown_args = [a if not os.path.isabs(a) else "<path>" for a in sys.argv[1:]]
    report = "\n".join(
        [
            "# Compression benchmark results",
            "",
            f"- command: `{shlex.join(['.venv/bin/python', 'bench/bench_compression.py', *shown_args])}`",
            f"- date: {started:%Y-%m-%d %H:%M} UTC",
            f"- machine: {machine()}",
            f"- output on: {shown(out_root)} ({fs_type(out_root)}); {args.workers} workers; {args.reps} repetitions,"
            " medians; MB = 10^6 bytes; times include interpreter start, imports and planning",
            "",
            *sections,
        ]
    )
    print()
    print(report)
    if args.results:
        Path(args.results).write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
