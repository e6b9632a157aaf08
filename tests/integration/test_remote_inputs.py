"""Inputs by URL and by ``s3://``: read in place with ranged requests, never downloaded.

- ``convert http://...`` (through a redirect, as a DANDI asset URL does) and ``convert
  s3://bucket/key`` write exactly the local file's output, byte for byte, with the local pool's
  workers each opening the input themselves.
- The bytes read are counted where they are served: at most 1.1 x the series' stored bytes plus
  PLANNING_ALLOWANCE (the HDF5 metadata in 64 KiB blocks and the first rows of each series, which
  the planner reads for its scaling check) and WORKER_ALLOWANCE per worker (its HDF5 metadata).
  With ``--series`` only the selected series' bytes are read: less than the file.
- A server without ``Range`` support fails in one line, and nothing is downloaded.
- ``plan`` and ``inspect`` take URLs too.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import h5py
import numpy as np
import pytest

from nwb2pennsieve.local import convert_file
from nwb2pennsieve.local.inspect import Inspection
from nwb2pennsieve.options import ConversionOptions
from nwb2pennsieve.output.publish import MARKER_NAME
from tests.cli_checks import run_cli
from tests.cloud_fixtures import make_nwb
from tests.factory import SeriesSpec, write_nwb

PLANNING_ALLOWANCE = 1024 * 1024
WORKER_ALLOWANCE = 256 * 1024
# Five chunks of 32768 samples (four HDF5 chunk rows each), one work item each: the pool's two
# workers share them, and no stored chunk is read by two items.
CHUNK_SIZE_MB = 0.25
CONVERT = ("--chunk-size-mb", str(CHUNK_SIZE_MB), "--max-item-mb", "4")
_RANGE = re.compile(r"bytes=(\d+)-(\d+)")


class RangeServer(ThreadingHTTPServer):
    """Serves files from ``root`` on 127.0.0.1: ``/files/<name>`` with Range support,
    ``/redirect/<name>`` redirecting there, ``/plain/<name>`` ignoring Range (whole file, 200)."""

    daemon_threads = True

    def __init__(self, root: Path) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = root
        self.lock = threading.Lock()
        self.sent = 0
        self.requests = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def count(self, nbytes: int) -> None:
        with self.lock:
            self.sent += nbytes
            self.requests += 1


class _Handler(BaseHTTPRequestHandler):
    server: RangeServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        kind, _, name = self.path.lstrip("/").partition("/")
        path = self.server.root / name
        if kind == "redirect":
            self.send_response(302)
            self.send_header("Location", f"/files/{name}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if not path.is_file() or kind not in ("files", "plain"):
            self.send_error(404)
            return
        data = path.read_bytes()
        match = _RANGE.fullmatch(self.headers.get("Range", ""))
        try:
            if kind == "plain" or match is None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                self.server.count(len(data))
                return
            start, stop = int(match.group(1)), min(int(match.group(2)) + 1, len(data))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{stop - 1}/{len(data)}")
            self.send_header("Content-Length", str(stop - start))
            self.send_header("ETag", '"v1"')
            self.end_headers()
            self.wfile.write(data[start:stop])
            self.server.count(stop - start)
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("served")
    return make_nwb(folder / "rec.nwb", channels=16, samples=150_000, chunks=(8192, 16), second_series=False)


@pytest.fixture(scope="module")
def stored_bytes(recording: Path) -> int:
    with h5py.File(recording) as f:
        return int(f["/acquisition/ElectricalSeries/data"].id.get_storage_size())


@pytest.fixture(scope="module")
def local_output(recording: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("local")
    convert_file(recording, out, ConversionOptions(chunk_size_mb=CHUNK_SIZE_MB), workers=1)
    return files(out)


@pytest.fixture
def server(recording: Path) -> Iterator[RangeServer]:
    srv = RangeServer(recording.parent)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def files(folder: Path) -> dict[str, bytes]:
    """The conversion's files (chunk files and channel metadata; not the output marker)."""
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name != MARKER_NAME}


def test_a_url_converts_in_place_like_the_local_file(
    capsys, tmp_path: Path, server: RangeServer, local_output: dict[str, bytes], stored_bytes: int
) -> None:
    url = f"{server.base}/redirect/rec.nwb"
    code, out, err = run_cli(capsys, "convert", url, "-o", str(tmp_path), "--workers", "2", *CONVERT)
    assert code == 0, err
    assert files(tmp_path) == local_output
    assert out.startswith(f"{url}: ")
    limit = 1.1 * stored_bytes + PLANNING_ALLOWANCE + 2 * WORKER_ALLOWANCE
    print(f"read {server.sent} bytes of {stored_bytes} stored in {server.requests} requests")
    assert server.sent <= limit, (server.sent, stored_bytes)


def test_a_selected_series_reads_only_its_own_bytes(capsys, tmp_path: Path, server: RangeServer) -> None:
    rng = np.random.default_rng(3)
    specs = [
        SeriesSpec(name=name, data=rng.normal(0, 300, (200_000, 16)).astype("int16"), chunks=(8192, 16),
                   compression="gzip")
        for name in ("A", "B")
    ]  # fmt: skip
    path = write_nwb(server.root / "two.nwb", specs)
    with h5py.File(path) as f:
        stored = int(f["/acquisition/B/data"].id.get_storage_size())
    url = f"{server.base}/files/two.nwb"
    code, _, err = run_cli(capsys, "convert", url, "-o", str(tmp_path), "--series", "/acquisition/B", *CONVERT)
    assert code == 0, err
    limit = 1.1 * stored + PLANNING_ALLOWANCE + 2 * WORKER_ALLOWANCE
    print(f"read {server.sent} bytes of {stored} stored (file: {path.stat().st_size})")
    assert server.sent <= limit < path.stat().st_size


def test_plan_and_inspect_take_a_url(capsys, server: RangeServer, local_output: dict[str, bytes]) -> None:
    url = f"{server.base}/files/rec.nwb"
    code, out, err = run_cli(capsys, "inspect", "--json", url, *CONVERT)
    assert code == 0, err
    found = Inspection.model_validate_json(out)
    assert found.source == url
    assert found.output.files == len(local_output)
    assert found.output.bytes == sum(len(b) for b in local_output.values())
    code, _, err = run_cli(capsys, "plan", url)
    assert code == 0, err
    assert server.sent < 2 * 1024 * 1024  # metadata and the first rows only


def test_a_server_without_range_support_fails_in_one_line(capsys, tmp_path: Path, server: RangeServer) -> None:
    url = f"{server.base}/plain/rec.nwb"
    code, _, err = run_cli(capsys, "convert", url, "-o", str(tmp_path / "out"))
    assert code == 1
    assert err.strip().splitlines() == [
        f"error: {url}: the server does not support ranged requests (it answered a Range request with the whole "
        "file), so the file cannot be read in place; download it and convert the local copy"
    ]
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_a_missing_url_is_one_line(capsys, tmp_path: Path, server: RangeServer) -> None:
    url = f"{server.base}/files/nope.nwb?token=secret"
    code, _, err = run_cli(capsys, "inspect", url)
    assert code == 1
    assert err.strip().splitlines() == [f"error: {server.base}/files/nope.nwb: not found (HTTP 404)"]


def test_an_s3_object_converts_in_place_like_the_local_file(
    capsys, tmp_path: Path, moto_s3: Any, recording: Path, local_output: dict[str, bytes], stored_bytes: int
) -> None:
    moto_s3.put_object(Bucket="recordings", Key="sub-1/rec.nwb", Body=recording.read_bytes())
    # In a process of its own (as a user runs it): the pool's workers see AWS_ENDPOINT_URL.
    done = subprocess.run(
        [sys.executable, "-m", "nwb2pennsieve.local.cli", "convert", "s3://recordings/sub-1/rec.nwb", "-o",
         str(tmp_path / "pool"), "--workers", "2", *CONVERT],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert files(tmp_path / "pool") == local_output
    # Counted in this process: one worker, every GET's body through botocore's events.
    read: list[int] = []

    def counting_client() -> Any:
        client = boto3.client("s3")
        client.meta.events.register(
            "after-call.s3.GetObject", lambda parsed, **_: read.append(int(parsed["ContentLength"]))
        )
        return client

    import nwb2pennsieve.source.inputs as sources

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sources, "_s3_client", counting_client)
        patch.setenv("PLAN_TIMEOUT_S", "0")  # plan in this process too, so its reads are counted
        code, _, err = run_cli(
            capsys, "convert", "s3://recordings/sub-1/rec.nwb", "-o", str(tmp_path / "one"), "--workers", "1", *CONVERT
        )
    assert code == 0, err
    assert files(tmp_path / "one") == local_output
    print(f"read {sum(read)} bytes of {stored_bytes} stored in {len(read)} GETs")
    assert sum(read) <= 1.1 * stored_bytes + PLANNING_ALLOWANCE


def test_a_missing_s3_object_is_one_line(capsys, moto_s3: Any) -> None:
    code, _, err = run_cli(capsys, "plan", "s3://recordings/nope.nwb")
    assert code == 1
    assert err.strip().splitlines() == [
        "error: s3://recordings/nope.nwb: the object does not exist (or that version is gone)"
    ]
