"""Stop signals at the moments that matter, made deterministic by seams (never by sleeping):

- at each fork (the planning child, each pool worker), from inside an at-fork callback
  (``tests.fork_signal_cli``), where a raised exception used to be swallowed;
- as the command starts, as the staging folder appears (``NWB2PENNSIEVE_TEST_SIGNAL_AT``,
  :mod:`nwb2pennsieve.testing`).

In each case the exit status and the one line say what the output folder holds.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.factory import SeriesSpec, write_nwb
from tests.integration.test_local_tool import ROOT, env, session_processes, wait_for

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


@pytest.mark.parametrize("fork", [1, 2, 3], ids=["planning-child", "first-worker", "second-worker"])
def test_a_sigterm_at_any_fork_stops_the_conversion(rec: Path, tmp_path: Path, fork: int) -> None:
    out = tmp_path / "out"
    done = run([*FORK_SIGNAL, "convert", str(rec), "-o", str(out)], tmp_path, WORKERS="2", FORK_SIGNAL_AT=str(fork))
    assert done.returncode == 143, done.stderr
    assert done.stderr.splitlines() == [f"error: interrupted (SIGTERM): {NOTHING}"]
    assert os.listdir(tmp_path) == []  # no output, no staging folder, no lock


def test_ctrl_c_while_the_command_starts_is_one_line(rec: Path, tmp_path: Path) -> None:
    # Sent before numpy, h5py and the planner are imported (half a second): held, then raised.
    argv = [*COMMAND, "convert", str(rec), "-o", str(tmp_path / "out")]
    done = run(argv, tmp_path, NWB2PENNSIEVE_TEST_SIGNAL_AT="startup:SIGINT")
    assert done.returncode == 130, done.stderr
    assert done.stderr.splitlines() == [f"error: interrupted (Ctrl-C): {NOTHING}"]
    assert os.listdir(tmp_path) == []


def test_a_sigterm_as_the_staging_folder_appears_leaves_nothing(rec: Path, tmp_path: Path) -> None:
    argv = [*COMMAND, "convert", str(rec), "-o", str(tmp_path / "out")]
    done = run(argv, tmp_path, NWB2PENNSIEVE_TEST_SIGNAL_AT="staged")
    assert done.returncode == 143, done.stderr
    assert done.stderr.splitlines() == [f"error: interrupted (SIGTERM): {NOTHING}"]
    assert os.listdir(tmp_path) == []


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
