"""Seeded corruption fuzz: every damaged file ends in exit 0 with exact output, or exit 1 with one
line naming the file (tests/corruption.py). `make fuzz` runs more variants (bench/fuzz.py)."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.corruption import KINDS, base_files, corrupt, layout, run_variant, variants

SEED = 20261129
COUNT = 36  # every kind (6) on every base file (4) once and half of them twice; ~70 s on 2 busy cores


def test_damaged_files_fail_cleanly_or_convert_exactly(tmp_path: Path) -> None:
    bases = base_files(tmp_path / "base")
    layouts = {b: layout(b) for b in bases}
    assert all(layouts[b].headers and layouts[b].chunks for b in bases[:1])

    def one(i: int, base: Path, kind: str, rng: random.Random):
        nwb = tmp_path / f"v{i:03d}-{kind}-{base.name}"
        what = f"{kind}: " + corrupt(base, nwb, rng, kind, layouts[base])
        return run_variant(nwb, tmp_path / f"out{i:03d}", what, time_limit=60.0)

    cases = variants(bases, COUNT, SEED)
    assert {kind for _, kind, _ in cases} == set(KINDS)
    with ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = list(pool.map(lambda iv: one(iv[0], *iv[1]), enumerate(cases)))
    failed = [f"{o.name} ({o.what}): {o.problem}; last line: {o.last_line}" for o in outcomes if o.problem]
    assert not failed, "\n".join(failed)
    # Both outcomes happen: the damage is real, and not every damage is fatal.
    assert {o.code for o in outcomes} == {0, 1}
