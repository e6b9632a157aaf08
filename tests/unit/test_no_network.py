"""The unit tier really has no network: opening any socket fails (tests/unit/conftest.py)."""

from __future__ import annotations

import socket

import pytest
from pytest_socket import SocketBlockedError


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6, socket.AF_UNIX])
def test_every_socket_is_refused(family: socket.AddressFamily) -> None:
    with pytest.raises(SocketBlockedError):
        socket.socket(family, socket.SOCK_STREAM)


def test_boto3_cannot_reach_aws() -> None:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import HTTPClientError

    client = boto3.client("s3", region_name="us-east-1", config=Config(retries={"max_attempts": 1}))
    with pytest.raises(HTTPClientError, match="A test tried to use socket"):  # botocore wraps SocketBlockedError
        client.list_buckets()
