"""A bigger corruption fuzz run than the one in `make test`: `make fuzz` (SEED=, COUNT=, JOBS=).

    .venv/bin/python bench/fuzz.py --seed 1 --count 300 --jobs 2

Damages small NWB files (tests/corruption.py says how), converts each with the command line in
a subprocess with a time limit, and lists every run that does not end in exit 0 with exact output
or exit 1 with one line naming the file. Prints the distinct final error lines too, so raw
library text can be spotted. Exit status 1 when any run failed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.corruption import Outcome, base_files, corrupt, layout, run_variant, variants


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--time-limit", type=float, default=60.0, help="seconds per conversion")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nwb2pennsieve-fuzz-") as tmp:
        root = Path(tmp)
        bases = base_files(root / "base")
        layouts = {b: layout(b) for b in bases}

        def one(i: int, base: Path, kind: str, rng) -> Outcome:  # type: ignore[no-untyped-def]
            nwb = root / f"v{i:05d}-{kind}-{base.name}"
            what = f"{kind}: " + corrupt(base, nwb, rng, kind, layouts[base])
            return run_variant(nwb, root / f"out{i:05d}", what, time_limit=args.time_limit)

        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            futures = [pool.submit(one, i, *v) for i, v in enumerate(variants(bases, args.count, args.seed))]
            outcomes = [f.result() for f in futures]
    failed = [o for o in outcomes if o.problem]
    codes = Counter(o.code for o in outcomes)
    print(f"seed {args.seed}: {len(outcomes)} variants, exit 0: {codes[0]}, exit 1: {codes[1]}, failed: {len(failed)}")
    lines = Counter(o.last_line.split(": ", 2)[-1] for o in outcomes if o.code == 1)
    print("final error lines (file name cut off), most frequent first:")
    for line, n in lines.most_common():
        print(f"  {n:4d}  {line}")
    for o in failed:
        print(f"FAILED {o.name} ({o.what}): {o.problem}; last line: {o.last_line}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
