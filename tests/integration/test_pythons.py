"""The command line installs with ``pip install .`` (runtime dependencies only) on Python 3.11 to 3.13
and converts the bundled sample to the same bytes as the 3.12 development venv; the Lambda stays on 3.12.

The install test builds a fresh venv per Python that pyenv has (``pyenv versions --bare``) and runs
a real ``pip install`` of a copy of the package (pip's index, as a user's install does; CI reaches
it): about 20-40 s per version with a warm pip cache, both versions at once. It is ``slow``: `make
test` runs it, `make test-unit` does not; `make test-pythons` runs it alone.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from nwb2pennsieve.local import convert_file
from nwb2pennsieve.local.cli import sample_path
from nwb2pennsieve.options import ConversionOptions
from nwb2pennsieve.output.publish import MARKER_NAME
from tests.cloud_fixtures import ROOT

SUPPORTED = ("3.11", "3.12", "3.13")


def test_pyproject_allows_3_11_to_3_13_and_the_lambda_stays_on_3_12() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=3.11,<3.14"
    classifiers = set(project["classifiers"])
    assert {f"Programming Language :: Python :: {v}" for v in SUPPORTED} <= classifiers
    runtimes = set(re.findall(r"python3\.\d+", (ROOT / "template.yaml").read_text()))
    assert runtimes == {"python3.12"}
    # The command line's own dependencies are the runtime list: no dev tool is needed to run it.
    assert not {re.split(r"[<>=\[ ]", d)[0] for d in project["dependencies"]} & {"pytest", "pynwb", "moto", "zarr"}


def _pyenv_python(version: str) -> str | None:
    """The newest pyenv Python ``version`` (e.g. 3.11), or None."""
    if shutil.which("pyenv") is None:
        return None
    listed = subprocess.run(["pyenv", "versions", "--bare"], capture_output=True, text=True, check=False).stdout
    found = sorted(
        (v for v in listed.split() if re.fullmatch(rf"{re.escape(version)}\.\d+", v)),
        key=lambda v: int(v.rsplit(".", 1)[1]),
    )
    if not found:
        return None
    env = dict(os.environ, PYENV_VERSION=found[-1])
    which = subprocess.run(["pyenv", "which", "python"], capture_output=True, text=True, check=False, env=env)
    return which.stdout.strip() or None


def _package_copy(target: Path) -> Path:
    """What ``pip install .`` reads, copied (an in-tree build would write into the checkout)."""
    target.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, target / name)
    shutil.copytree(
        ROOT / "layers" / "core",
        target / "layers" / "core",
        ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"),
    )
    return target


def _install_and_convert(python: str, package: Path, where: Path) -> dict[str, bytes]:
    venv = where / "venv"
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    pip = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(package)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert pip.returncode == 0, pip.stderr[-2000:]
    out = where / "out"
    env = dict(os.environ, GZIP_LEVEL="0", WORKERS="2")
    run = subprocess.run(
        [str(venv / "bin" / "nwb2pennsieve"), "convert", str(sample_path()), "-o", str(out)],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        cwd=where,
    )
    assert run.returncode == 0, run.stderr
    return {p.name: p.read_bytes() for p in out.iterdir() if p.name != MARKER_NAME}


@pytest.mark.slow
def test_pip_install_on_3_11_and_3_13_converts_like_3_12(tmp_path: Path) -> None:
    pythons = {v: _pyenv_python(v) for v in ("3.11", "3.13")}
    missing = [v for v, p in pythons.items() if p is None]
    if missing and os.environ.get("CI"):
        pytest.fail(f"CI must have Python {', '.join(missing)} (pyenv) to check the supported versions")
    if missing:
        pytest.skip(f"no Python {', '.join(missing)} from pyenv here")
    reference = tmp_path / "ref"
    convert_file(sample_path(), reference, ConversionOptions(gzip_level=0), workers=1)
    expected = {p.name: p.read_bytes() for p in reference.iterdir() if p.name != MARKER_NAME}
    package = _package_copy(tmp_path / "package")
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {}
        for version, python in pythons.items():
            (tmp_path / version).mkdir()
            assert python is not None
            futures[version] = pool.submit(_install_and_convert, python, package, tmp_path / version)
        for version, future in futures.items():
            assert future.result() == expected, f"Python {version} converts the sample differently"
    assert sys.version_info[:2] == (3, 12)  # the development venv (and the Lambda) is 3.12
