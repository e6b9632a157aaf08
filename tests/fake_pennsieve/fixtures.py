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

from .cognito import REGION, MotoCognito
from .server import FakePennsieve

# The fixtures; test modules take them with ``from tests.fake_pennsieve.fixtures import *``.
__all__ = ["api_key", "client", "fake", "moto_cognito", "s3", "settings"]

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


@pytest.fixture
def fake(moto_cognito: MotoCognito, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakePennsieve]:
    monkeypatch.setenv("AWS_ENDPOINT_URL_COGNITO_IDENTITY_PROVIDER", moto_cognito.endpoint)
    server = FakePennsieve(moto_cognito).start()
    yield server
    server.stop()


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
