"""Unit tests run without a network: every socket is refused (pytest-socket), Unix sockets too.

A test that needs moto, the fake Pennsieve, the shared corpus or a subprocess belongs in
``tests/integration`` (or ``tests/e2e`` for the state machine).
"""

from __future__ import annotations

import pytest
from pytest_socket import disable_socket


@pytest.fixture(autouse=True)
def _no_network() -> None:
    # pytest-socket restores sockets after each test (its teardown hook).
    disable_socket(allow_unix_socket=False)


@pytest.fixture(scope="session")
def corpus() -> None:
    pytest.fail("a unit test reads no shared corpus file: move the test to tests/integration")
