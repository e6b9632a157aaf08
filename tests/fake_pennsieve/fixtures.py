"""pytest fixtures and helpers for the import tests (imported by each ``test_pennsieve_*`` module)."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import numpy as np
import pytest

from nwb2pennsieve.output.storage import Store
from nwb2pennsieve.pennsieve import PennsieveClient
from nwb2pennsieve.pennsieve.http import RetryPolicy
from nwb2pennsieve.plan.models import ChannelMetadata, chunk_file_name, metadata_file_name
from nwb2pennsieve.settings import Settings

from .assets import ASSET_BUCKET
from .cognito import REGION, MotoCognito
from .s3gate import S3Gate
from .server import FakePennsieve

# The fixtures; test modules take them with ``from tests.fake_pennsieve.fixtures import *``.
__all__ = ["api_key", "client", "fake", "gate", "moto_cognito", "s3", "s3_gate", "settings"]

FAST_RETRY = RetryPolicy(attempts=5, base_delay=0.01, max_delay=0.05, connect_timeout=2, read_timeout=5)
T0_US = 1_700_000_000_000_000


@dataclass(frozen=True)
class LocalSpec:
    """A channel to write: ``chunks`` files of ``samples`` samples each, separated by gaps."""

    name: str
    rate: float = 1000.0
    chunks: int = 2
    samples: int = 50
    type: str = "CONTINUOUS"
    group: str = "default"


def write_output(store: Store, specs: list[LocalSpec], *, seed: int = 0) -> dict[str, bytes]:
    """A converter output in ``store``: gzip'd big-endian float64 chunks + metadata. Returns name → bytes."""
    rng = np.random.default_rng(seed)
    written: dict[str, bytes] = {}
    for index, spec in enumerate(specs):
        period_us = 1e6 / spec.rate
        start = T0_US
        first = start
        end = start
        for _ in range(spec.chunks):
            end = start + int((spec.samples - 1) * period_us)
            data = rng.standard_normal(spec.samples).astype(">f8").tobytes()
            blob = gzip.compress(data, compresslevel=0, mtime=0)
            name = chunk_file_name(index, start, end)
            store.write_bytes(name, blob)
            written[name] = blob
            start = end + 10 * int(period_us) + 1_000_000  # a gap
        meta = ChannelMetadata(name=spec.name, start=first, end=end, rate=spec.rate, type=spec.type, group=spec.group)
        store.write_bytes(metadata_file_name(index), meta.model_dump_json(by_alias=True).encode())
    return written


@pytest.fixture(scope="session")
def moto_cognito() -> Iterator[MotoCognito]:
    cognito = MotoCognito()
    yield cognito
    cognito.stop()


@pytest.fixture(scope="session")
def s3_gate() -> Iterator[S3Gate]:
    """The fake Pennsieve's S3 (a moto server behind the credential-checking gate), one per session."""
    gate = S3Gate.start()
    yield gate
    gate.stop()


@pytest.fixture
def gate(s3_gate: S3Gate, monkeypatch: pytest.MonkeyPatch) -> S3Gate:
    """The gate, emptied, with no faults; the importer reaches it through ``AWS_ENDPOINT_URL``, as the
    reference's reaches any S3."""
    from nwb2pennsieve.pennsieve import asset_s3

    s3_gate.call("reset")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_gate.url)  # for a command run in a child process
    monkeypatch.setattr(asset_s3, "ENDPOINT_URL", None)  # this process: botocore's configuration, as a user's
    return s3_gate


@pytest.fixture
def fake(moto_cognito: MotoCognito, gate: S3Gate, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakePennsieve]:
    monkeypatch.setenv("AWS_ENDPOINT_URL_COGNITO_IDENTITY_PROVIDER", moto_cognito.endpoint)
    server = FakePennsieve(moto_cognito, s3=gate).start()
    yield server
    server.stop()


def asset_objects(gate: S3Gate, fake: FakePennsieve, asset_id: str) -> dict[str, dict[str, Any]]:
    """name (relative to the asset's prefix) → {"size", "md5"} of what the asset's prefix holds."""
    prefix = fake.asset_prefix(asset_id)
    return {k[len(prefix) :]: v for k, v in gate.objects(ASSET_BUCKET, prefix).items()}


@pytest.fixture
def api_key(moto_cognito: MotoCognito) -> Any:
    return moto_cognito.new_api_key()


@pytest.fixture
def settings(fake: FakePennsieve, api_key: Any) -> Settings:
    return Settings.from_env(
        {
            "PENNSIEVE_API_HOST": fake.url,
            "PENNSIEVE_API_HOST2": fake.url,
            "PENNSIEVE_API_KEY": api_key.key,
            "PENNSIEVE_API_SECRET": api_key.secret,
        }
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[PennsieveClient]:
    c = PennsieveClient.from_settings(settings, retry=FAST_RETRY)
    yield c
    c.close()


@pytest.fixture
def s3(moto_cognito: MotoCognito) -> Any:
    """An S3 client on the same moto server."""
    return boto3.client(
        "s3",
        region_name=REGION,
        endpoint_url=moto_cognito.endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def read_json(store: Store, name: str) -> Any:
    return json.loads(store.read_bytes(name))


def assert_imported(
    fake: FakePennsieve,
    gate: S3Gate,
    package: str,
    written: dict[str, bytes],
    mapping: dict[int, str],
    *,
    name: str = "nwb-asset",
    once: bool = True,
) -> str:
    """The end state of a complete asset-flow import of ``written`` (chunk file name → bytes) into
    ``package``: one finished asset; each channel once, tied to it; every chunk file under its
    prefix with identical bytes (PUT once, when ``once``); every range registered, each ranges
    call with its dataset id. Returns the asset's id."""
    import hashlib

    from nwb2pennsieve.pennsieve.manifest import remote_file_path

    (asset,) = [a for a in fake.assets_of(package) if a["name"] == name]
    assert asset["status"] == fake.finished_status
    tied = sorted(c["id"] for c in fake.channels[package] if c.get("viewerAssetId") == asset["id"])
    assert tied == sorted(mapping.values()) and len(set(mapping.values())) == len(mapping)
    expected = {remote_file_path(mapping[int(n[8:13])], n): blob for n, blob in written.items()}
    stored = asset_objects(gate, fake, asset["id"])
    assert set(stored) == set(expected)
    assert all(stored[k]["md5"] == hashlib.md5(v).hexdigest() for k, v in expected.items())
    if once:
        puts = gate.stats()["puts_by_key"]
        assert all(puts.get(fake.asset_prefix(asset["id"]) + k) == 1 for k in expected), "a chunk file PUT twice"
    ranges = fake.ranges.get(package, {})
    assert {r["s3_key"] for r in ranges.values() if r["asset"] == asset["id"]} == set(expected)
    assert all(r["dataset_id"] for r in fake.range_requests)
    return str(asset["id"])
