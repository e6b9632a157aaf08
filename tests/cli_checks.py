"""How a conversion that must fail is checked from the command line (shared by the tiers)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nwb2pennsieve.local.cli import main


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_fails_cleanly(capsys, nwb: Path, out: Path, *expected: str) -> str:
    code, _, err = run_cli(capsys, "convert", str(nwb), "--output", str(out))
    assert code == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"error: {nwb.name}: "), last
    for text in expected:
        assert text in last, last
    assert "Traceback" not in err
    leftovers = [p.name for p in out.rglob("*")] if out.exists() else []
    assert not [n for n in leftovers if n.endswith(".bin.gz") or n.endswith(".json")], leftovers
    return last
