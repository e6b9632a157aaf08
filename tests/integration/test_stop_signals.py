"""Stop signals at the moments that matter, made deterministic by seams (never by sleeping):

- at each fork (the planning child, each pool worker), from inside an at-fork callback
  (``tests.fork_signal_cli``), where a raised exception used to be swallowed;
- as the command starts, as the staging folder appears, just after the swap
  (``NWB2PENNSIEVE_TEST_SIGNAL_AT``, :mod:`nwb2pennsieve.testing_seams`).

In each case the exit status and the one line say what the output folder holds.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from nwb2pennsieve.output.publish import MARKER_NAME
from tests.factory import SeriesSpec, write_nwb
from tests.integration.test_local_tool import ROOT, _without_root_override, env, session_processes, wait_for

COMMAND = [sys.executable, "-m", "nwb2pennsieve"]
FORK_SIGNAL = [sys.executable, "-m", "tests.fork_signal_cli"]
NOTHING = "workers stopped, nothing published"


@pytest.fixture(scope="module")
def rec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = np.random.default_rng(0).integers(-999, 999, size=(60000, 8), dtype=np.int16)
    return write_nwb(tmp_path_factory.mktemp("in") / "rec.nwb", [SeriesSpec(data=data, rate=30000.0)])


def run(argv: list[str], tmp_path: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    """The command in a session of its own, within 30 s (a hang fails), every process of it gone after."""
    proc = subprocess.Popen(
        argv,
        env=env(**extra),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=30)
    finally:
        leftover = session_processes(proc.pid)
        for pid in leftover:
            os.kill(pid, signal.SIGKILL)
    assert leftover == [], f"processes left: {leftover}"
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def source_of(out: Path) -> tuple[str, float]:
    marker = json.loads((out / MARKER_NAME).read_text())
    return marker["source"], marker["options"]["chunk_size_mb"]


@pytest.mark.parametrize("fork", [1, 2, 3], ids=["planning-child", "first-worker", "second-worker"])
def test_a_sigterm_at_any_fork_stops_the_conversion(rec: Path, tmp_path: Path, fork: int) -> None:
    out = tmp_path / "out"
    done = run([*FORK_SIGNAL, "convert", str(rec), "-o", str(out)], tmp_path, WORKERS="2", FORK_SIGNAL_AT=str(fork))
    assert done.returncode == 143, done.stderr
    assert done.stderr.splitlines() == [f"error: interrupted (SIGTERM): {NOTHING}"]
    assert os.listdir(tmp_path) == []  # no output, no staging folder, no lock


@pytest.mark.parametrize(
    ("seam", "code", "how"),
    [
        # Sent before numpy, h5py and the planner are imported (half a second): held, then raised.
        ("startup:SIGINT", 130, "Ctrl-C"),
        # __exit__ is not called when __enter__ raises: the folder it made is removed there.
        ("staged", 143, "SIGTERM"),
    ],
    ids=["ctrl-c-while-starting", "sigterm-as-the-staging-folder-appears"],
)
def test_a_signal_at_a_delicate_moment_is_one_line_and_leaves_nothing(
    rec: Path, tmp_path: Path, seam: str, code: int, how: str
) -> None:
    argv = [*COMMAND, "convert", str(rec), "-o", str(tmp_path / "out")]
    done = run(argv, tmp_path, NWB2PENNSIEVE_TEST_SIGNAL_AT=seam)
    assert done.returncode == code, done.stderr
    assert done.stderr.splitlines() == [f"error: interrupted ({how}): {NOTHING}"]
    assert os.listdir(tmp_path) == []


def test_a_sigterm_just_after_the_swap_says_the_output_is_published(rec: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = run([*COMMAND, "convert", str(rec), "-o", str(out)], tmp_path, CHUNK_SIZE_MB="0.02")
    assert first.returncode == 0, first.stderr
    argv = [*COMMAND, "convert", str(rec), "-o", str(out)]
    done = run(argv, tmp_path, NWB2PENNSIEVE_TEST_SIGNAL_AT="swapped")
    assert done.returncode == 0, done.stderr  # the conversion is complete: OUT holds it
    assert source_of(out) == ("rec.nwb", 0.01)
    assert done.stdout.startswith("rec.nwb: 8 channels, ")
    assert done.stderr.splitlines()[-1] == f"note: interrupted (SIGTERM) after {out} was published: it is complete"
    assert "nothing published" not in done.stderr

    # The old output's removal stopped at the signal; the next run removes what is left.
    again = run(argv, tmp_path)
    assert again.returncode == 0, again.stderr
    assert os.listdir(tmp_path) == ["out"]


def test_run_stopped_after_a_swap_names_what_is_published(rec: Path, tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("a.nwb", "b.nwb"):
        (inputs / name).write_bytes(rec.read_bytes())
    output = tmp_path / "out"
    done = run(
        [*COMMAND, "run"],
        tmp_path,
        INPUT_DIR=str(inputs),
        OUTPUT_DIR=str(output),
        NWB2PENNSIEVE_TEST_SIGNAL_AT="swapped",
    )
    assert done.returncode == 143, done.stderr
    assert done.stderr.splitlines()[-1] == f"error: interrupted (SIGTERM): published {output / 'a'}; nothing else"
    assert sorted(os.listdir(output)) == ["a"]
    assert source_of(output / "a") == ("a.nwb", 0.01)


def test_an_old_output_that_cannot_be_removed_does_not_undo_publishing(rec: Path, tmp_path: Path) -> None:
    """A folder of the old output (the viewer bundle's) that files cannot be deleted from: the new
    output is published (exit 0, a warning naming what is left), and every later run too."""
    out = tmp_path / "out"
    first = run([*COMMAND, "convert", str(rec), "-o", str(out), "--formats", "bundle"], tmp_path)
    assert first.returncode == 0, first.stderr
    stuck = out / "rec.zarr"
    stuck.chmod(0o555)
    try:
        for attempt in range(2):
            done = subprocess.run(
                [*COMMAND, "convert", str(rec), "-o", str(out)],
                env=env(),
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=30,
                preexec_fn=_without_root_override,
            )
            assert done.returncode == 0, done.stderr
            assert source_of(out) == ("rec.nwb", 0.01)
            assert not (out / "rec.zarr").exists()
            warnings = [line for line in done.stderr.splitlines() if line.startswith("warning: ")]
            assert len(warnings) == 1, done.stderr
            assert "Permission denied" in warnings[0]
            if attempt == 0:
                assert "published, but the old output could not be removed completely" in warnings[0]
            else:  # moved aside by the run after, which says to remove it
                assert "-trash-" in warnings[0] and warnings[0].endswith("remove it")
    finally:
        for folder in tmp_path.rglob("rec.zarr"):
            folder.chmod(0o755)


def test_the_planning_child_dies_with_a_killed_command(tmp_path: Path) -> None:
    """A URL that never answers keeps planning waiting (a minute per try); ``kill -9`` of the
    command must take the planning child with it."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)  # connections are queued, never answered
    url = f"http://127.0.0.1:{server.getsockname()[1]}/rec.nwb"
    proc = subprocess.Popen(
        [*COMMAND, "convert", url, "-o", str(tmp_path / "out")], env=env(), cwd=ROOT, start_new_session=True
    )
    try:
        wait_for(lambda: len(session_processes(proc.pid)) >= 2)  # the command and its planning child
        children = [pid for pid in session_processes(proc.pid) if pid != proc.pid]
        proc.kill()
        proc.wait(10)
        deadline = time.monotonic() + 2
        while session_processes(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert session_processes(proc.pid) == [], f"the planning child {children} outlived the command"
    finally:
        for pid in session_processes(proc.pid):
            os.kill(pid, signal.SIGKILL)
        server.close()
