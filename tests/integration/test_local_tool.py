"""The local tool as a user meets it: a real terminal (a pseudo-terminal), real signals, subprocesses.

The conversions here run ``python -m tests.slow_cli`` (the command with a writer that sleeps per
block), so a small file takes seconds and can be interrupted mid-way.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import pty
import re
import resource
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from nwb2pennsieve.settings import Settings
from tests.factory import SeriesSpec, write_nwb

ROOT = Path(__file__).resolve().parents[2]
SLOW = [sys.executable, "-m", "tests.slow_cli"]
FAST = [sys.executable, "-m", "nwb2pennsieve"]


@pytest.fixture(scope="module")
def slow_nwb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = np.random.default_rng(0).integers(-999, 999, size=(60000, 8), dtype=np.int16)
    return write_nwb(tmp_path_factory.mktemp("in") / "slow.nwb", [SeriesSpec(data=data, rate=30000.0)])


def env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k not in ("INPUT_DIR", "OUTPUT_DIR", "WORKERS")}
    # 46 chunks a channel; work items of at most half a MiB: 8 of them, so two workers share them
    settings = {"CHUNK_SIZE_MB": "0.01", "MAX_ITEM_MB": "0.5", "SLOW_BLOCK_SECONDS": "0.2"}
    return {**base, **settings, "PYTHONPATH": str(ROOT), **extra}


def session_processes(sid: int) -> list[int]:
    """Every live process of session ``sid`` (a process started with ``start_new_session``)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[3]) == sid and fields[0] != "Z":
                found.append(int(entry.name))
    return found


def wait_for(condition, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def staging_of(output: Path) -> Path:
    return output.with_name(f".{output.name}.nwb2pennsieve-staging")


def has_staged_files(output: Path) -> bool:
    staging = staging_of(output)
    return staging.is_dir() and any(staging.iterdir())


class Terminal:
    """A command in a pseudo-terminal of 100 × 30 that is its controlling terminal (Ctrl-C works)."""

    def __init__(self, argv: list[str], environ: dict[str, str], cwd: Path) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
        self.master = master
        self.proc = subprocess.Popen(
            argv,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env={**environ, "TERM": "xterm"},
            cwd=cwd,
            start_new_session=True,
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
        )
        os.close(slave)
        self.chunks: list[bytes] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 4096)
            except OSError:  # EIO: the terminal's last writer is gone
                return
            if not data:
                return
            self.chunks.append(data)

    def ctrl_c(self) -> None:
        os.write(self.master, b"\x03")

    def wait(self, timeout: float = 60) -> tuple[int, str]:
        code = self.proc.wait(timeout)
        self._reader.join(5)
        os.close(self.master)
        return code, b"".join(self.chunks).decode(errors="replace")


def test_progress_bar_moves_with_the_default_two_workers(slow_nwb: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    term = Terminal([*SLOW, "convert", str(slow_nwb), "-o", str(out)], env(WORKERS="2", SLOW_BLOCK_SECONDS="0.1"), ROOT)
    code, text = term.wait()
    assert code == 0, text
    percents = {int(p) for p in re.findall(r"(\d+)%\|", text)}
    assert {p for p in percents if 0 < p < 100}, text  # it moved before the end
    assert 100 in percents, percents  # and is drawn full before it is cleared
    assert len(percents) >= 4, percents
    assert "slow.nwb: 8 channels, 376 files (368 chunk files + 8 channel metadata), 3.8 MB in " in text


def test_ctrl_c_in_a_terminal_answers_within_a_second_and_leaves_nothing(slow_nwb: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    term = Terminal([*SLOW, "convert", str(slow_nwb), "-o", str(out)], env(WORKERS="2"), ROOT)
    wait_for(lambda: has_staged_files(out))
    started = time.monotonic()
    term.ctrl_c()
    code, text = term.wait()
    took = time.monotonic() - started
    assert code == 130, text
    assert took < 1.5, took  # about 0.3 s here; the margin is for a busy machine
    assert text.strip().splitlines()[-1].strip() == "error: interrupted (Ctrl-C): workers stopped, nothing published"
    assert "Traceback" not in text
    assert session_processes(term.proc.pid) == []
    assert sorted(os.listdir(tmp_path)) == []  # no output, no staging folder, no lock file


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_sigterm_and_sighup_stop_like_ctrl_c(slow_nwb: Path, tmp_path: Path, signum: int, code: int) -> None:
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [*SLOW, "convert", str(slow_nwb), "-o", str(out)],
        env=env(WORKERS="2"),
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    wait_for(lambda: has_staged_files(out))
    assert len(session_processes(proc.pid)) >= 3  # the parent and its two workers
    proc.send_signal(signum)  # to the parent alone, as `docker stop` and `timeout` do
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == code, err
    name = signal.Signals(signum).name
    assert err.strip().splitlines() == [f"error: interrupted ({name}): workers stopped, nothing published"]
    assert session_processes(proc.pid) == []
    assert sorted(os.listdir(tmp_path)) == []


def test_workers_die_with_a_killed_parent_and_the_next_run_removes_its_staging(slow_nwb: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [*SLOW, "convert", str(slow_nwb), "-o", str(out)], env=env(WORKERS="2"), cwd=ROOT, start_new_session=True
    )
    wait_for(lambda: has_staged_files(out))
    proc.kill()
    proc.wait(10)
    wait_for(lambda: session_processes(proc.pid) == [], timeout=3)  # no orphan worker lives on
    assert staging_of(out).is_dir()  # what kill -9 leaves ...

    done = subprocess.run(
        [*FAST, "convert", str(slow_nwb), "-o", str(out)], env=env(), cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert sorted(os.listdir(tmp_path)) == ["out"]  # ... the next run into the same output removes
    assert len(list(out.glob("*.bin.gz"))) == 368


def test_a_second_run_into_the_same_output_fails_clearly(slow_nwb: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = subprocess.Popen(
        [*SLOW, "convert", str(slow_nwb), "-o", str(out)],
        env=env(WORKERS="2"),  # about 5 s: the second starts meanwhile
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(lambda: has_staged_files(out))
    second = subprocess.run(
        [*FAST, "convert", str(slow_nwb), "-o", str(out)], env=env(), cwd=ROOT, capture_output=True, text=True
    )
    assert second.returncode == 1
    assert second.stderr.strip() == (
        f"error: slow.nwb: output {out}: another conversion (pid {first.pid}) is writing it;"
        " wait until it ends or choose another output"
    )
    _, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    assert len(list(out.glob("*.bin.gz"))) == 368
    assert sorted(os.listdir(tmp_path)) == ["out"]


@pytest.mark.parametrize(
    ("limit", "last"),
    [
        (4096, "cannot write it (File too large)"),
        # Not a byte can be written (issue 17 item 14c): the very first write, the lock file's pid,
        # fails naming the output and the cause, and leaves no lock file behind.
        (0, "cannot write the lock file .out.nwb2pennsieve-lock (File too large)"),
    ],
)
def test_a_full_disk_names_the_output_and_the_cause(slow_nwb: Path, tmp_path: Path, limit: int, last: str) -> None:
    # RLIMIT_FSIZE makes a write fail as a full disk does (EFBIG instead of ENOSPC), in the workers too.
    def small_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    out = tmp_path / "out"
    done = subprocess.run(
        [*FAST, "convert", str(slow_nwb), "-o", str(out), "--workers", "2"],
        env=env(CHUNK_SIZE_MB="0.1"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        preexec_fn=small_files,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == f"error: slow.nwb: output {out}: {last}"
    assert sorted(os.listdir(tmp_path)) == []


def _without_root_override() -> None:
    """Root ignores permissions: drop CAP_DAC_OVERRIDE from the bounding set, so the command run
    (as root) respects them, as a user's would. A no-op for a user."""
    if os.geteuid() == 0:
        pr_capbset_drop, cap_dac_override = 24, 1
        assert ctypes.CDLL(None).prctl(pr_capbset_drop, cap_dac_override, 0, 0, 0) == 0


def test_a_read_only_folder_and_an_output_that_is_a_file_name_the_output(slow_nwb: Path, tmp_path: Path) -> None:
    nwb = slow_nwb
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    done = subprocess.run(
        [*FAST, "convert", str(nwb), "-o", str(locked / "out")],
        env=env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        preexec_fn=_without_root_override,
    )
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last == f"error: slow.nwb: output {locked / 'out'}: cannot create the lock file .out.nwb2pennsieve-lock" + (
        " (Permission denied)"
    ), last

    a_file = tmp_path / "a-file"
    a_file.write_text("mine")
    done = subprocess.run(
        [*FAST, "convert", str(nwb), "-o", str(a_file)], env=env(), cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 1
    assert done.stderr.strip() == f"error: slow.nwb: output {a_file}: is a file, not a folder"
    assert a_file.read_text() == "mine"


def test_plan_into_head_ends_quietly(slow_nwb: Path) -> None:
    proc = subprocess.Popen(
        [*FAST, "plan", "--full", str(slow_nwb)],
        env=env(CHUNK_SIZE_MB="0.001", MAX_ITEM_MB="0.001"),  # many work items: more than a pipe holds
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()  # what `| head -1` does
    err = proc.stderr.read().decode()
    assert proc.wait(30) == 141
    assert err == ""


def test_debug_before_or_after_the_subcommand_and_plain_help(slow_nwb: Path, tmp_path: Path) -> None:
    for argv in (["--debug", "plan", str(slow_nwb)], ["plan", str(slow_nwb), "--debug"], ["plan", str(slow_nwb)]):
        done = subprocess.run([*FAST, *argv], env=env(), cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert ("DEBUG nwb2pennsieve" in done.stderr) == ("--debug" in argv), done.stderr
    bad = [*FAST, "convert", "missing.nwb", "-o", str(tmp_path / "o"), "--debug"]
    assert "Traceback" in subprocess.run(bad, env=env(), cwd=ROOT, capture_output=True, text=True).stderr

    texts = []
    for argv in (["--help"], ["convert", "--help"], ["plan", "--help"], ["run", "--help"], ["import", "--help"]):
        done = subprocess.run([*FAST, *argv], env=env(), cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert "``" not in done.stdout and ":class:" not in done.stdout, done.stdout
        assert "--debug" in done.stdout
        texts.append(done.stdout)
    run_help = texts[3]
    for name in Settings.model_fields:
        assert name.upper() in run_help, name


def test_numpy_warnings_are_one_line_not_source_lines(tmp_path: Path) -> None:
    # 1e305 V is 1e311 µV: numpy overflows to inf while planning and while writing (two workers)
    src = write_nwb(tmp_path / "over.nwb", [SeriesSpec(data=np.full((4000, 4), 1e305))])
    done = subprocess.run(
        [*FAST, "convert", str(src), "-o", str(tmp_path / "out"), "--workers", "2"],
        env=env(CHUNK_SIZE_MB="0.001", MAX_ITEM_MB="0.01"),
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stderr.strip().splitlines()
    assert "warning: RuntimeWarning: overflow encountered in multiply" in lines
    assert all(line.startswith("warning: ") for line in lines), lines  # no "file.py:12:" nor its source line
