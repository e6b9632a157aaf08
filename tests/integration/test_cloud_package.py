"""The cloud package is Lambda-side only: a fresh interpreter that imports every module of
``nwb2pennsieve.cloud`` and every handler loads neither the local pool (nor its progress bar) nor
the walkthrough, and the Pennsieve importer only when an import step first needs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.cloud_fixtures import ROOT

# asset_steps is the viewer-asset flow's import steps themselves: loaded (lazily, by imports.py)
# only when a step imports; the probe checks that nothing else loads it.
PROBE = """
import importlib, json, pkgutil, sys
import nwb2pennsieve.cloud as cloud
for module in pkgutil.iter_modules(cloud.__path__):
    if module.name != "asset_steps":
        importlib.import_module(f"nwb2pennsieve.cloud.{module.name}")
for name in ("plan", "write_chunks", "finalize", "upload_files", "complete_import", "starter"):
    importlib.import_module(f"functions.{name}.app")
print(json.dumps(sorted(sys.modules)))
"""


def test_the_cloud_package_and_the_handlers_load_nothing_of_the_local_side() -> None:
    env = os.environ | {"AWS_DEFAULT_REGION": "us-east-1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, cwd=ROOT, env=env, timeout=120
    )
    loaded = set(json.loads(done.stdout.splitlines()[-1]))
    assert "functions.starter.app" in loaded
    assert not {m for m in loaded if m.startswith(("nwb2pennsieve.local", "statemachine", "tqdm"))}
    importer = {"nwb2pennsieve.pennsieve.importer", "nwb2pennsieve.pennsieve.client", "nwb2pennsieve.cloud.asset_steps"}
    assert not loaded & importer
