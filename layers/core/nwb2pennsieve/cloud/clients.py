"""The boto3 clients of the Lambda functions: one place for their retry mode and connection pool.

Every client retries in botocore's *adaptive* mode: exponential backoff with jitter for throttling
and 5xx answers (S3's ``503 Slow Down`` when a thousand writers put into one new prefix) plus a
client-side rate limiter that slows the client down while the service throttles it. A client's
pool holds as many connections as the threads that share it (botocore's default is 10: a
16-thread pool would wait for connections and log "Connection pool is full").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import boto3
from botocore.config import Config

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_stepfunctions import SFNClient

# Attempts per call (the first included). Adaptive mode's backoff is capped at 20 s per attempt.
MAX_ATTEMPTS = 10
# botocore's own default pool size.
DEFAULT_POOL = 10


def client_config(threads: int = 1) -> Config:
    """Adaptive retries; a pool of at least ``threads`` connections (never under botocore's 10)."""
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
