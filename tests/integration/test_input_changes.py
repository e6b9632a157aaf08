"""An input that changes while it is converted is refused in one line, never mixed (issue 17
items 3 and 4): a local file replaced by rename, overwritten in place or cut short, a URL whose
content changes between planning and writing; and ``run`` skips a file still being written.

Before, every process opened the input by its name whenever it started: the output mixed the
planned file's times with the new file's values, exit 0. The command line is stopped at a named
checkpoint (``NWB2PENNSIEVE_TEST_STOP_AT``, nwb2pennsieve/testing_seams.py), the input changed,
and the command continued: deterministic, no race.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nwb2pennsieve.local import convert_file
from nwb2pennsieve.options import ConversionOptions
from nwb2pennsieve.output.publish import MARKER_NAME
from tests.factory import SeriesSpec, write_nwb
from tests.fault_server import FaultServer

CHANGED = "the file changed while it was being converted ("
ENV = {"CHUNK_SIZE_MB": "0.05", "MAX_ITEM_MB": "0.2", "WORKERS": "2", "SETTLE_S": "0"}


def _pair(folder: Path) -> tuple[Path, Path]:
    """Two files of one layout: A (starting at 0 s) and B (other values, starting at 100 s)."""
    folder.mkdir(parents=True, exist_ok=True)
    a = np.random.default_rng(4).integers(-3000, 3000, (60_000, 4)).astype(np.int16)
    first = write_nwb(folder / "a.nwb", [SeriesSpec(data=a, rate=1000.0)])
    second = write_nwb(folder / "b.nwb", [SeriesSpec(data=-a - 7, rate=1000.0, starting_time=100.0)])
    return first, second


def _stopped_run(argv: list[str], at: str, change: Callable[[], None], **env: str) -> subprocess.CompletedProcess[str]:
    """The command, stopped at checkpoint ``at``; ``change()`` runs while it is stopped."""
    command = [sys.executable, "-m", "nwb2pennsieve.local.cli", *argv]
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **ENV, **env, "NWB2PENNSIEVE_TEST_STOP_AT": at},
    )
    deadline = time.monotonic() + 60
    while True:
        pid, status = os.waitpid(proc.pid, os.WUNTRACED | os.WNOHANG)
        if pid and os.WIFSTOPPED(status):
            break
        assert not pid, f"the command ended before checkpoint {at}: {proc.communicate()}"
        assert time.monotonic() < deadline, f"checkpoint {at} never reached"
        time.sleep(0.02)
    change()
    os.kill(proc.pid, signal.SIGCONT)
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


def _refused(proc: subprocess.CompletedProcess[str], name: str, out: Path) -> str:
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {name}: {CHANGED}") and last.endswith("); nothing was published"), last
    assert not out.exists() and not list(out.parent.glob(f".{out.name}.*"))
    return last


def _overwrite(path: Path, other: Path) -> None:
    with open(path, "r+b") as fh:  # the same inode
        fh.write(other.read_bytes())
        fh.truncate()


def _rewrite_keeping_mtime(path: Path) -> None:
    info = path.stat()
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    with open(path, "r+b") as fh:
        fh.write(data)
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))  # only the ctime tells


@pytest.mark.parametrize(
    ("at", "how", "says"),
    [
        ("planned", "rename", "it was replaced"),
        ("planned", "overwrite", ""),
        ("planned", "truncate", "its size went from"),
        ("items-done", "rename", "it was replaced"),
        ("items-done", "truncate", "its size went from"),
        ("items-done", "touch", "it was modified"),
        ("items-done", "rewrite", "it was modified"),
    ],
)
def test_a_local_input_that_changes_is_refused(tmp_path: Path, at: str, how: str, says: str) -> None:
    a, b = _pair(tmp_path / "files")
    rec = tmp_path / "rec.nwb"
    rec.write_bytes(a.read_bytes())
    changes: dict[str, Callable[[], None]] = {
        "rename": lambda: os.replace(b, rec),
        "overwrite": lambda: _overwrite(rec, b),
        "truncate": lambda: os.truncate(rec, rec.stat().st_size // 2),
        "touch": lambda: os.utime(rec, (time.time() + 10, time.time() + 10)),
        "rewrite": lambda: _rewrite_keeping_mtime(rec),
    }
    out = tmp_path / "out"
    last = _refused(_stopped_run(["convert", str(rec), "-o", str(out)], at, changes[how]), "rec.nwb", out)
    assert says in last


def test_an_unchanged_input_converts_as_before(tmp_path: Path) -> None:
    a, _ = _pair(tmp_path / "files")
    out = tmp_path / "out"
    proc = _stopped_run(["convert", str(a), "-o", str(out)], "items-done", lambda: None)
    assert proc.returncode == 0, proc.stderr
    reference = tmp_path / "ref"
    convert_file(a, reference, ConversionOptions(chunk_size_mb=0.05, max_item_mb=0.2), workers=1)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != MARKER_NAME} == {
        p.name: p.read_bytes() for p in reference.iterdir() if p.name != MARKER_NAME
    }


def test_run_skips_a_file_still_being_written(tmp_path: Path) -> None:
    a, b = _pair(tmp_path / "files")
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "done.nwb").write_bytes(a.read_bytes())
    os.utime(inputs / "done.nwb", (time.time() - 60, time.time() - 60))
    growing = inputs / "copying.nwb"
    data = b.read_bytes()
    stop = threading.Event()

    def copy() -> None:  # a slow copy into INPUT_DIR
        with open(growing, "wb") as fh:
            for k in range(0, len(data), 4096):
                if stop.is_set():
                    return
                fh.write(data[k : k + 4096])
                fh.flush()
                time.sleep(0.02)

    writer = threading.Thread(target=copy)
    writer.start()
    try:
        time.sleep(0.2)
        env = {**os.environ, **ENV, "SETTLE_S": "0.5", "INPUT_DIR": str(inputs), "OUTPUT_DIR": str(tmp_path / "o")}
        proc = subprocess.run(
            [sys.executable, "-m", "nwb2pennsieve.local.cli", "run"],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
    finally:
        stop.set()
        writer.join()
    assert proc.returncode == 0, proc.stderr
    assert "note: copying.nwb: skipped: it is still being written (its size went from " in proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "1 converted, 1 skipped (still being written)"
    assert not (tmp_path / "o" / "copying").exists()


# --- a URL (item 4) -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("etag", "last_modified", "says"),
    [
        ("strong", True, 'its ETag went from "v1" to "v2"'),
        (None, True, "its Last-Modified went from "),
        ("weak", True, "its Last-Modified went from "),  # a weak ETag is no byte-range validator
    ],
)
def test_a_url_whose_content_changes_after_planning_is_refused(
    tmp_path: Path, etag: str | None, last_modified: bool, says: str
) -> None:
    a, b = _pair(tmp_path / "files")
    out = tmp_path / "out"
    with FaultServer(a.read_bytes(), etag=etag, last_modified=last_modified) as server:
        url = server.url()
        proc = _stopped_run(["convert", url, "-o", str(out)], "planned", lambda: server.replace(b.read_bytes()))
    last = _refused(proc, url, out)
    assert says in last, last


def test_a_url_without_validators_converts_with_a_warning(tmp_path: Path) -> None:
    a, _ = _pair(tmp_path / "files")
    out = tmp_path / "out"
    with FaultServer(a.read_bytes(), etag=None, last_modified=False) as server:
        url = server.url()
        proc = _stopped_run(["convert", url, "-o", str(out)], "planned", lambda: None)
    assert proc.returncode == 0, proc.stderr
    assert f"warning: {url}: the server sends neither a (strong) ETag nor Last-Modified" in proc.stderr


# --- an S3 object read from this machine -------------------------------------------------------------


@pytest.mark.parametrize("versioned", [False, True])
def test_an_s3_object_replaced_after_planning_is_never_mixed(tmp_path: Path, moto_s3: Any, versioned: bool) -> None:
    """Unversioned: the ETag planned is required (refused in one line). Versioned: the version
    planned is the one every worker reads, so the output is that version's, whole."""
    a, b = _pair(tmp_path / "files")
    if versioned:
        moto_s3.put_bucket_versioning(Bucket="recordings", VersioningConfiguration={"Status": "Enabled"})
    moto_s3.put_object(Bucket="recordings", Key="rec.nwb", Body=a.read_bytes())
    out = tmp_path / "out"

    def replace() -> None:
        moto_s3.put_object(Bucket="recordings", Key="rec.nwb", Body=b.read_bytes())

    proc = _stopped_run(["convert", "s3://recordings/rec.nwb", "-o", str(out)], "planned", replace)
    if not versioned:
        assert "its ETag went from" in _refused(proc, "s3://recordings/rec.nwb", out)
        return
    assert proc.returncode == 0, proc.stderr
    reference = tmp_path / "ref"
    convert_file(a, reference, ConversionOptions(chunk_size_mb=0.05, max_item_mb=0.2), workers=1)
    assert {p.name for p in out.iterdir() if p.name != MARKER_NAME} == {
        p.name for p in reference.iterdir() if p.name != MARKER_NAME
    }
