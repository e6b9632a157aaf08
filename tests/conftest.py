"""Shared fixtures. Sockets are not blocked globally, but nothing here talks beyond 127.0.0.1."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
if not CORPUS.is_dir():  # a checkout that is not beside shared/: let the env say where it is
    CORPUS = Path(os.environ.get("NWB2PENNSIEVE_CORPUS", CORPUS))


@pytest.fixture(scope="session")
def corpus() -> Path:
    assert CORPUS.is_dir(), f"the shared corpus is missing at {CORPUS}"
    return CORPUS


@pytest.fixture(autouse=True)
def _no_aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests never reach AWS: fake credentials and a region, so a slip fails fast instead of calling out.
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
