"""Fixtures every tier shares.

The tiers: ``tests/unit`` (no network: sockets are disabled there), ``tests/integration`` (moto,
the fake Pennsieve on 127.0.0.1, the shared corpus, the CLI in a subprocess) and ``tests/e2e``
(the state machine executed end to end under moto). The cloud fixtures (moto, the stack, NWB
files, event fixtures) live in ``tests/cloud_fixtures.py``, registered here for every tier.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins = ["tests.cloud_fixtures"]

# The shared folder beside the checkout (the corpus, the anchors); elsewhere the env says where it is.
SHARED = Path(os.environ.get("NWB2PENNSIEVE_SHARED", Path(__file__).resolve().parents[2] / "shared"))
CORPUS = SHARED / "corpus"
if not CORPUS.is_dir():
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


@pytest.fixture(autouse=True)
def _asset_s3_stays_local(monkeypatch: pytest.MonkeyPatch) -> None:
    # A viewer asset's S3 client with no endpoint configured would go to AWS: point it at a closed
    # port on loopback instead, so a test that forgot the fake's S3 fails at once, offline. The
    # fixtures of the fake's S3 (tests/fake_pennsieve/fixtures.py) set the gate's address.
    from nwb2pennsieve.pennsieve import asset_s3

    monkeypatch.setattr(asset_s3, "ENDPOINT_URL", "http://127.0.0.1:9")


@pytest.fixture(autouse=True)
def _every_ts_zarr_bundle_passes_the_validator(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test, every TS-Zarr bundle it left in its tmp_path passes Pennsieve's validator
    (tests/tszarr_checks.py). A test that leaves a damaged bundle on purpose marks itself
    ``damaged_bundle``."""
    wanted = "tmp_path" in request.fixturenames and not request.node.get_closest_marker("damaged_bundle")
    # Asked for here, so tmp_path is torn down after this fixture, not before.
    folder = request.getfixturevalue("tmp_path") if wanted else None
    yield
    if folder is not None:
        from tests.tszarr_checks import validate_all

        validate_all(folder, in_process="unit" not in request.node.path.parts)
