"""Each function plus its layers stays under Lambda's 250 MB unzipped limit (and is built for arm64).

The layers are built as ``make build`` builds them (cached: rebuilt only when their inputs change).
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path

import pytest

from layers.build_layers import LAMBDA_UNZIPPED_LIMIT, build_core, build_deps, size_of
from nwb2pennsieve.cloud.clients import MIN_BOTOCORE
from tests.cloud_fixtures import ROOT

# Builds both layers with pip (a minute on a cold cache): `make test` runs it, `make test-unit` does not.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def layers() -> dict[str, Path]:
    return {"deps": build_deps(), "core": build_core()}


def test_each_function_with_its_layers_is_under_the_limit(layers: dict[str, Path]) -> None:
    layer_bytes = sum(size_of(p) for p in layers.values())
    functions = [p for p in (ROOT / "functions").iterdir() if p.is_dir() and (p / "app.py").exists()]
    assert len(functions) == 6  # plan, write_chunks, finalize, upload_files, complete_import, starter
    for fn in functions:
        total = size_of(fn) + layer_bytes
        print(f"{fn.name}: {total / 1e6:.1f} MB unzipped with its layers (limit {LAMBDA_UNZIPPED_LIMIT / 1e6:.0f})")
        assert total < LAMBDA_UNZIPPED_LIMIT


def test_deps_layer_is_arm64_cpython312_trimmed_and_compiled(layers: dict[str, Path]) -> None:
    site = layers["deps"] / "python"
    for package in ("numpy", "h5py", "hdf5plugin", "pydantic", "pydantic_core", "aws_lambda_powertools", "requests"):
        assert (site / package).is_dir(), package
    # The compression filters neuroconv writes are shipped; the lossy SZ/SZ3 ones are trimmed.
    plugins = {p.name for p in (site / "hdf5plugin" / "plugins").glob("libh5*.so")}
    assert {"libh5blosc.so", "libh5blosc2.so", "libh5zstd.so", "libh5lz4.so", "libh5bshuf.so"} <= plugins
    assert not plugins & {"libh5sz.so", "libh5sz3.so"}
    # The SDK is shipped (the runtime's varies), new enough for PutObject's IfMatch.
    for package in ("boto3", "botocore", "s3transfer"):
        assert (site / package).is_dir(), package
    (dist,) = site.glob("botocore-*.dist-info")
    version = tuple(int(p) for p in dist.name.split("-")[1].split(".")[:3])
    assert version >= MIN_BOTOCORE
    (model,) = (m for m in (site / "botocore" / "data" / "s3").glob("*/*") if m.name.startswith("service-2.json"))
    text = gzip.decompress(model.read_bytes()) if model.suffix == ".gz" else model.read_bytes()
    assert "IfMatch" in json.loads(text)["shapes"]["PutObjectRequest"]["members"]
    binaries = list(site.rglob("*.so"))
    assert binaries and all("x86_64" not in b.name for b in binaries)
    assert any(b.name.endswith("cpython-312-aarch64-linux-gnu.so") for b in binaries)
    elf = (site / "numpy" / "_core").glob("_multiarray_umath*.so")
    header = next(elf).read_bytes()[:20]
    assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == 183  # EM_AARCH64
    assert not list(site.rglob("tests/test_*.py"))
    magic = importlib.util.MAGIC_NUMBER  # this venv is CPython 3.12, like the runtime
    pyc = next(site.rglob("pydantic/__pycache__/main.cpython-312.pyc"))
    assert pyc.read_bytes()[:4] == magic


def test_core_layer_holds_the_package_with_the_cloud_code(layers: dict[str, Path]) -> None:
    package = layers["core"] / "python" / "nwb2pennsieve"
    for module in (
        "plan/survey.py",
        "write/chunks.py",
        "cloud/plan_step.py",
        "cloud/write_chunks_step.py",
        "cloud/finalize_step.py",
        "source/direct.py",
    ):
        assert (package / module).is_file(), module
        compiled = (package / module).parent / "__pycache__" / f"{Path(module).stem}.cpython-312.pyc"
        assert compiled.is_file(), compiled
