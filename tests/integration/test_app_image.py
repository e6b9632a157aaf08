"""``make image``: the Pennsieve app's image builds and converts the bundled sample. Only where a
Docker daemon runs and the base image is at hand; elsewhere the test says why it is skipped."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BASE_IMAGE = os.environ.get("BASE_IMAGE", "python:3.12-slim")


def _docker(*args: str) -> bool:
    return subprocess.run(["docker", *args], capture_output=True, check=False, timeout=120).returncode == 0


@pytest.mark.slow
def test_make_image_builds_an_image_that_converts_the_sample() -> None:
    if shutil.which("docker") is None or not _docker("info"):
        pytest.skip("no Docker daemon here: make image (and the image) not tested")
    if not _docker("image", "inspect", BASE_IMAGE):
        pytest.skip(f"the base image {BASE_IMAGE} is not here (set BASE_IMAGE): make image not tested")
    image = "nwb2pennsieve-test:latest"
    done = subprocess.run(
        ["make", "image", f"IMAGE={image}", f"BASE_IMAGE={BASE_IMAGE}"],
        cwd=ROOT, capture_output=True, text=True, check=False, timeout=1800,
    )  # fmt: skip
    try:
        assert done.returncode == 0, done.stderr[-2000:]
        assert f"{image}: converted the sample" in done.stdout
        assert len(list((ROOT / "build" / "image" / "smoke" / "sample").glob("channel-*.bin.gz"))) == 24
    finally:
        _docker("image", "rm", image)
