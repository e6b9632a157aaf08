"""Build the two Lambda layers for python3.12 / arm64 without Docker: ``make build``.

- ``build/layers/deps/python``: ``layers/deps/requirements.txt`` as manylinux aarch64 CPython 3.12
  wheels (pip's ``--platform``/``--python-version``, binary only), trimmed (tests, caches, stubs)
  and byte-compiled for 3.12. The AWS SDK (boto3, botocore, s3transfer) is shipped, pinned: the
  runtime's own varies, and a layer's ``/opt/python`` comes before it on ``sys.path``.
- ``build/layers/core/python``: the ``nwb2pennsieve`` package, byte-compiled.

``--arch x86_64`` builds the same for x86_64 into ``build/layers-x86_64`` (for ``sam local invoke``
on an x86_64 machine without arm64 emulation: docs/cloud.md, walkthrough); the stack is arm64.

Byte-compiled with unchecked hashes: Lambda's file system is read-only, so modules that are not
compiled ahead are compiled again at every cold start, and zip timestamps cannot be trusted.
A layer is rebuilt only when its inputs changed (a stamp holds their hash). Prints each layer's
unzipped size; ``tests/integration/test_cloud_layers.py`` (marked slow) checks each function plus layers < 250 MB.
"""

from __future__ import annotations

import argparse
import compileall
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build" / "layers"
REQUIREMENTS = ROOT / "layers" / "deps" / "requirements.txt"
CORE = ROOT / "layers" / "core" / "nwb2pennsieve"
# Per architecture: the output folder and the wheel platforms. hdf5plugin has aarch64 wheels for
# glibc 2.28 only; the python3.12 runtime (Amazon Linux 2023) has glibc 2.34.
ARCHES = {
    "arm64": (BUILD, ("manylinux2014_aarch64", "manylinux_2_28_aarch64")),
    "x86_64": (ROOT / "build" / "layers-x86_64", ("manylinux2014_x86_64", "manylinux_2_28_x86_64")),
}
PYTHON_VERSION = "3.12"
LAMBDA_UNZIPPED_LIMIT = 250 * 1000 * 1000  # bytes: function code plus all its layers, unzipped
TRIM_DIRS = {"tests", "test", "testing", "__pycache__", "benchmarks"}
TRIM_SUFFIXES = (".pyi", ".pyx", ".pxd", ".c", ".h", ".cpp")
# hdf5plugin's lossy SZ and SZ3 filters (113 MB of its 187 MB; no ephys writer uses them) would take the
# layer over Lambda's limit: left out, a file using them fails with a clear line.
TRIM_FILES = ("hdf5plugin/plugins/libh5sz.so", "hdf5plugin/plugins/libh5sz3.so")
BUILD_VERSION = "3"  # bump to force a rebuild when this script changes what it builds


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256(BUILD_VERSION.encode())
    for part in parts:
        h.update(part)
    return h.hexdigest()


def _tree_bytes(path: Path) -> bytes:
    return b"".join(p.relative_to(path).as_posix().encode() + p.read_bytes() for p in sorted(path.rglob("*.py")))


def size_of(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _trim(site: Path) -> None:
    for p in sorted(site.rglob("*"), key=lambda q: len(q.parts), reverse=True):
        if p.is_dir() and p.name in TRIM_DIRS and "dist-info" not in str(p.parent):
            # numpy.testing is imported by numpy itself at times: keep it.
            if p.name == "testing" and p.parent.name == "numpy":
                continue
            shutil.rmtree(p, ignore_errors=True)
        elif p.is_file() and p.suffix in TRIM_SUFFIXES:
            p.unlink()
    for name in TRIM_FILES:
        (site / name).unlink(missing_ok=True)


def _compile(site: Path) -> None:
    ok = compileall.compile_dir(
        str(site), quiet=2, workers=0, invalidation_mode=compileall.py_compile.PycInvalidationMode.UNCHECKED_HASH
    )
    if not ok:
        raise SystemExit(f"byte-compiling {site} failed")


def build_deps(force: bool = False, arch: str = "arm64") -> Path:
    build, platforms = ARCHES[arch]
    out = build / "deps"
    stamp = out / ".stamp"
    digest = _digest(REQUIREMENTS.read_bytes())
    if not force and stamp.is_file() and stamp.read_text() == digest:
        return out
    shutil.rmtree(out, ignore_errors=True)
    site = out / "python"
    site.mkdir(parents=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-warn-conflicts",
            "--no-compile",
            "--target",
            str(site),
            *(arg for platform in platforms for arg in ("--platform", platform)),
            "--implementation",
            "cp",
            "--python-version",
            PYTHON_VERSION,
            "--only-binary=:all:",
            "--upgrade",
            "-r",
            str(REQUIREMENTS),
        ],
        check=True,
    )
    _trim(site)
    _compile(site)
    stamp.write_text(digest)
    return out


def build_core(force: bool = False, arch: str = "arm64") -> Path:
    out = ARCHES[arch][0] / "core"
    stamp = out / ".stamp"
    digest = _digest(_tree_bytes(CORE))
    if not force and stamp.is_file() and stamp.read_text() == digest:
        return out
    shutil.rmtree(out, ignore_errors=True)
    site = out / "python"
    site.mkdir(parents=True)
    shutil.copytree(CORE, site / "nwb2pennsieve", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    _compile(site)
    stamp.write_text(digest)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="rebuild even if the inputs did not change")
    parser.add_argument("--arch", choices=sorted(ARCHES), default="arm64", help="the functions' architecture")
    args = parser.parse_args(argv)
    layers = {"deps": build_deps(args.force, args.arch), "core": build_core(args.force, args.arch)}
    sizes = {name: size_of(path) for name, path in layers.items()}
    functions = {p.name: size_of(p) for p in sorted((ROOT / "functions").iterdir()) if p.is_dir()}
    print(  # noqa: T201 - the build reports the layer sizes
        json.dumps(
            {
                "layers_mb": {k: round(v / 1e6, 1) for k, v in sizes.items()},
                "largest_function_plus_layers_mb": round((max(functions.values()) + sum(sizes.values())) / 1e6, 1),
                "limit_mb": LAMBDA_UNZIPPED_LIMIT / 1e6,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
