"""Every TS-Zarr bundle the tests write is checked by Pennsieve's own tools:

- the reference producer's validator (``timeseries_zarr.validate`` in the anchors beside the
  checkout: zarr and numpy from the project's dev dependencies are all it needs): no error and
  no warning;
- the reference reader (``@pennsieve/timeseries-zarr-reader``, built by ``make test`` into
  build/tszarr-reader), which opens the bundle served over HTTP with Range on 127.0.0.1 the way
  the viewer does (tests/reader/read_bundle.mjs). Without Node those tests skip, and say so.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SHARED

ROOT = Path(__file__).resolve().parents[1]
VALIDATOR = SHARED / "anchors" / "timeseries-zarr-py"
READER = ROOT / "build" / "tszarr-reader"
READ_BUNDLE = ROOT / "tests" / "reader" / "read_bundle.mjs"


def validate(bundle: Path) -> None:
    """The reference validator finds nothing in ``bundle`` (error, warning or note beyond info)."""
    assert (VALIDATOR / "timeseries_zarr" / "validate.py").is_file(), f"the validator is missing at {VALIDATOR}"
    if str(VALIDATOR) not in sys.path:
        sys.path.insert(0, str(VALIDATOR))
    from timeseries_zarr.validate import validate_bundle  # type: ignore[import-not-found]

    findings = [f for f in validate_bundle(bundle) if f.severity in ("error", "warning")]
    assert not findings, "\n".join(str(f) for f in findings)


def is_ts_zarr(bundle: Path) -> bool:
    """A published TS-Zarr bundle: its root's channels count from an onset (``offset_us``)."""
    try:
        nodes = json.loads((bundle / "zarr.json").read_text())["consolidated_metadata"]["metadata"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return any("offset_us" in n.get("attributes", {}) for p, n in nodes.items() if "/" not in p)


def validate_all(folder: Path, *, in_process: bool = True) -> int:
    """Validate every TS-Zarr bundle under ``folder``; how many there were. Not ``in_process``
    (the unit tier), in a child process: zarr's event loop runs a thread and makes a socket pair
    in the process that opens a bundle, which the unit tier refuses (and the thread would turn
    the later tests' process pools to a forkserver)."""
    bundles = sorted({p.parent for p in folder.rglob("zarr.json") if p.parent.name.endswith(".zarr")})
    bundles = [b for b in bundles if is_ts_zarr(b) and "staging" not in str(b)]
    if bundles and not in_process:
        code = "import sys, pathlib\nfrom tests.tszarr_checks import validate\n"
        code += "for p in sys.argv[1:]: validate(pathlib.Path(p))"
        done = subprocess.run(
            [sys.executable, "-c", code, *map(str, bundles)], capture_output=True, text=True, cwd=ROOT, check=False
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return len(bundles)
    for bundle in bundles:
        validate(bundle)
    return len(bundles)


def read_with_reader(bundle: Path, *args: str) -> dict[str, Any]:
    """What the reference reader returns for ``bundle`` (skips without Node)."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node is not installed: the bundle is not opened with Pennsieve's reader")
    assert (READER / "dist" / "index.js").is_file(), f"{READER} is not built: make test builds it"
    done = subprocess.run(
        [node, str(READ_BUNDLE), str(bundle), "--reader", str(READER), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    out = json.loads(done.stdout) if done.stdout.strip() else {}
    assert done.returncode == 0 and "error" not in out, out.get("error") or done.stderr
    return out
