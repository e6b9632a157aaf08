"""template.yaml and the state machine through the validators: sam validate --lint, cfn-lint, asl-validator."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from statemachine.render import load_template, render, substitutions, template_refs
from tests.cloud_fixtures import ROOT

TEMPLATE = load_template()
OFFLINE = {**os.environ, "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1", "SAM_CLI_TELEMETRY": "0"}
VENV_BIN = Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin"


def tool(name: str) -> str:
    path = VENV_BIN / name
    return str(path) if path.exists() else (shutil.which(name) or name)


def test_sam_validate_lint() -> None:
    run = subprocess.run(
        [tool("sam"), "validate", "--lint", "--template", str(ROOT / "template.yaml")],
        capture_output=True,
        text=True,
        env=OFFLINE,
        cwd=ROOT,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_cfn_lint() -> None:
    run = subprocess.run(
        [tool("cfn-lint"), str(ROOT / "template.yaml")],
        capture_output=True,
        text=True,
        env=OFFLINE,
        cwd=ROOT,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_asl_validator(tmp_path: Path) -> None:
    validator = ROOT / "node_modules" / ".bin" / "asl-validator"
    assert validator.exists(), "asl-validator is missing: `make test` installs it (npm ci from the lockfile)"
    definition = tmp_path / "definition.asl.json"
    definition.write_text(render(substitutions(TEMPLATE, template_refs(TEMPLATE))))
    run = subprocess.run(
        [str(validator), "--json-path", str(definition)], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert run.returncode == 0, run.stdout + run.stderr
