"""The boto3 clients of the Lambda functions: one place for their retry mode and connection pool.

Every client retries in botocore's *adaptive* mode: exponential backoff with jitter for throttling
and 5xx answers (S3's ``503 Slow Down`` when a thousand writers put into one new prefix) plus a
client-side rate limiter that slows the client down while the service throttles it. A client's
pool holds as many connections as the threads that share it (botocore's default is 10: a
16-thread pool would wait for connections and log "Connection pool is full").

Every factory first checks the SDK (:func:`check_sdk`): the dependency layer ships a pinned
botocore, and a function that somehow loads an older one (the runtime's own, shadowing the layer)
stops at its cold start with one line instead of failing every Finalize that imports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import boto3
import botocore
from botocore.config import Config

from ..errors import ConfigurationError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_stepfunctions import SFNClient

# Attempts per call (the first included). Adaptive mode's backoff is capped at 20 s per attempt.
MAX_ATTEMPTS = 10
# botocore's own default pool size.
DEFAULT_POOL = 10
# The first botocore whose S3 model has PutObject's IfMatch (the import claim's compare-and-swap);
# an older one raises ParamValidationError, not a ClientError, before sending anything.
MIN_BOTOCORE = (1, 35, 69)


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for part in version.split(".")[:3]:
        digits = "".join(c for c in part if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def check_sdk(version: str | None = None) -> None:
    """Raise :class:`ConfigurationError` when the loaded botocore (or ``version``) is older than
    :data:`MIN_BOTOCORE`."""
    found = version or botocore.__version__
    if _version_tuple(found) < MIN_BOTOCORE:
        need = ".".join(map(str, MIN_BOTOCORE))
        raise ConfigurationError(
            f"botocore {found} is loaded, but S3 PutObject's IfMatch needs {need} or newer: "
            "deploy the dependency layer (layers/deps/requirements.txt pins the SDK)"
        )


def client_config(threads: int = 1) -> Config:
    """Adaptive retries; a pool of at least ``threads`` connections (never under botocore's 10)."""
    check_sdk()
    return Config(
        max_pool_connections=max(DEFAULT_POOL, threads),
        retries={"mode": "adaptive", "max_attempts": MAX_ATTEMPTS},
    )


def s3_client(threads: int = 1) -> S3Client:
    """An S3 client for code that calls it from ``threads`` threads at once."""
    client: S3Client = boto3.client("s3", config=client_config(threads))
    return client


def stepfunctions_client(threads: int = 1) -> SFNClient:
    """A Step Functions client, configured the same way (the Starter's)."""
    client: SFNClient = boto3.client("stepfunctions", config=client_config(threads))
    return client


def sqs_client(threads: int = 1) -> SQSClient:
    """An SQS client, configured the same way (the Starter's)."""
    client: SQSClient = boto3.client("sqs", config=client_config(threads))
    return client


def dynamodb_client(threads: int = 1) -> DynamoDBClient:
    """A DynamoDB client, configured the same way (the Starter's admission slots)."""
    client: DynamoDBClient = boto3.client("dynamodb", config=client_config(threads))
    return client
