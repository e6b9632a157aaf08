"""Network faults on a URL input are retried within a bounded budget, then fail in one line that
names the network (issue 17 item 9).

Before: a dropped connection, a stalled or short body was reported as "the file is damaged or
truncated" (or blamed on the output folder) and not retried; a dead server took 376 s and printed
urllib3's retry lines and a raw exception; an unknown host took 16 s. The faults come from a
server on 127.0.0.1 (tests/fault_server.py), chosen per request, so they are deterministic; the
timeouts are shortened through the settings (NETWORK_TIMEOUT_S, NETWORK_BUDGET_S).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from nwb2pennsieve.local import convert_file
from nwb2pennsieve.options import ConversionOptions
from nwb2pennsieve.output.publish import MARKER_NAME
from tests.cli_checks import run_cli
from tests.factory import SeriesSpec, write_nwb
from tests.fault_server import FaultServer

ENV = {
    "CHUNK_SIZE_MB": "0.05",
    "MAX_ITEM_MB": "0.2",
    "WORKERS": "2",
    "NETWORK_TIMEOUT_S": "0.5",
    "NETWORK_BUDGET_S": "3",
}


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("served")
    data = np.random.default_rng(9).integers(-3000, 3000, (60_000, 4)).astype(np.int16)
    return write_nwb(folder / "rec.nwb", [SeriesSpec(data=data, rate=1000.0, chunks=(4096, 4), compression="gzip")])


@pytest.fixture(scope="module")
def expected(recording: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("local")
    convert_file(recording, out, ConversionOptions(chunk_size_mb=0.05, max_item_mb=0.2), workers=1)
    return {p.name: p.read_bytes() for p in out.iterdir() if p.name != MARKER_NAME}


def _convert(url: str, out: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "nwb2pennsieve.local.cli", "convert", url, "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **ENV, **env},
    )
    return proc, time.monotonic() - started


@pytest.mark.parametrize("fault", ["drop", "drop-body", "short", "stall", "status:503", "hang"])
def test_a_transient_fault_on_every_range_is_retried(
    tmp_path: Path, recording: Path, expected: dict[str, bytes], fault: str
) -> None:
    """Each range fails on its first try (planning's reads and the writers' alike), then succeeds."""
    seen: set[tuple[int, int]] = set()

    def first_try_fails(n: int, start: int, stop: int) -> str | None:
        if (start, stop) in seen:
            return None
        seen.add((start, stop))
        return fault

    with FaultServer(recording.read_bytes()) as server:
        server.fault = first_try_fails
        # A budget no busy machine exhausts: every range recovers on its second try.
        proc, _ = _convert(server.url(), tmp_path / "out", NETWORK_BUDGET_S="30")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # no retry line, no warning
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir() if p.name != MARKER_NAME} == expected


@pytest.mark.parametrize(
    ("fault", "cause"),
    [
        ("drop", "the connection was dropped"),
        ("hang", "the server stopped sending"),
        ("status:503", "the server answered HTTP 503"),
    ],
)
@pytest.mark.parametrize("when", ["planning", "writing"])
def test_a_lasting_fault_fails_in_one_line_within_the_budget(
    tmp_path: Path, recording: Path, fault: str, cause: str, when: str
) -> None:
    requests_before_writing = 4  # planning reads a few ranges, then the writers start

    with FaultServer(recording.read_bytes()) as server:
        server.fault = lambda n, start, stop: fault if when == "planning" or n > requests_before_writing else None
        url = server.url()
        proc, took = _convert(url, tmp_path / "out")
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"error: {url}: "), lines
    assert f"the network failed: 127.0.0.1:{url.split(':')[2].split('/')[0]}: {cause}" in lines[0]
    assert took < 3 + 20  # the budget, the read timeout and the start-up (on a busy machine)
    assert not (tmp_path / "out").exists()


def test_a_server_that_is_gone_fails_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port held but not listened on: connections to it are refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        url = f"http://127.0.0.1:{port}/rec.nwb"
        proc, took = _convert(url, tmp_path / "out")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"error: {url}: the network failed: 127.0.0.1:{port}: the server refused the connection (5 tries in "
        + proc.stderr.split("(5 tries in ")[1].strip()
    ]
    assert took < 3 + 20


def test_an_unknown_host_fails_at_once(capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No resolver is asked: the name lookup fails here, as it does for a host that does not exist."""

    def no_such_host(host: object, *args: object, **kwargs: object) -> list[object]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_host)
    monkeypatch.setenv("PLAN_TIMEOUT_S", "0")  # plan in this process, where the lookup is replaced
    url = "http://nwb2pennsieve-test.invalid/rec.nwb"
    started = time.monotonic()
    code, _, err = run_cli(capsys, "convert", url, "-o", str(tmp_path / "out"))
    assert code == 1
    assert err.strip().splitlines() == [
        f"error: {url}: the network failed: nwb2pennsieve-test.invalid: its host name does not resolve"
    ]
    assert time.monotonic() - started < 2
