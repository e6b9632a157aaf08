"""The viewer asset's S3 prefix, reached with the asset's own short-lived credentials (§5.8).

:class:`AssetCredentials` holds the current credentials of one asset and renews them through
Pennsieve before they expire (and at once when S3 says they expired: one renewal for every
thread that saw the same stale key). :class:`AssetS3` writes and lists the asset's prefix with
them: one connection pool shared by many upload threads; each PUT is one signed request
(botocore's SigV4 signer; a ``bytes`` body with its ``Content-MD5``, which S3 checks and which
makes the object's ETag its MD5), retried on connection errors, 5xx and ``SlowDown``; listings
go through a boto3 client. Where the bucket is: AWS's S3 endpoint of the credentials' region,
or the endpoint botocore's configuration names (``AWS_ENDPOINT_URL_S3``, then
``AWS_ENDPOINT_URL``: a local S3, the tests' fake).

The credentials are never logged, stored or returned: they stay in this process's memory.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import urllib3
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from .errors import AssetAccessError, CredentialsUnavailableError, PennsieveError
from .http import RetryPolicy
from .models import UploadCredentials

log = logging.getLogger(__name__)

# Set by the cloud tests, whose in-process moto must keep the functions' own S3 calls: only the
# asset's clients go to this endpoint. None: botocore's configured endpoint, else AWS's.
ENDPOINT_URL: str | None = None
LIST_THREADS = 16
EXPIRED = frozenset({"ExpiredToken", "InvalidToken", "TokenRefreshRequired", "RequestExpired", "ExpiredTokenException"})
REFUSED = frozenset({"AccessDenied", "SignatureDoesNotMatch", "InvalidAccessKeyId", "Forbidden"})
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
RENEWALS = 10  # renewals of expired credentials one PUT may ask for
_TRANSIENT = (urllib3.exceptions.HTTPError, OSError)


def configured_endpoint() -> str | None:
    """The S3 endpoint botocore's configuration names, or None (AWS's)."""
    if ENDPOINT_URL:
        return ENDPOINT_URL.rstrip("/")
    if os.environ.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").lower() == "true":
        return None
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        if value := os.environ.get(name, "").strip():
            return value.rstrip("/")
    return None


def _frozen(c: UploadCredentials) -> Credentials:
    return Credentials(
        c.access_key_id.get_secret_value(), c.secret_access_key.get_secret_value(), c.session_token.get_secret_value()
    )


class AssetCredentials:
    """The upload credentials of one asset: renewed through ``fetch`` (Pennsieve's refresh call)
    once less than a quarter of their life (at most 5 minutes) is left, and on demand."""

    def __init__(
        self,
        fetch: Callable[[], UploadCredentials],
        initial: UploadCredentials | None = None,
        *,
        asset_id: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._fetch = fetch
        self._clock = clock
        self._lock = threading.Lock()
        self.asset_id = asset_id
        self.refreshes = 0
        self._current: UploadCredentials | None = None
        self._lifetime = 0.0
        if initial is not None:
            self._set(initial)

    def _set(self, credentials: UploadCredentials) -> None:
        self._lifetime = max(1.0, credentials.seconds_left(self._clock()))
        self._current = credentials

    def _margin(self) -> float:
        return min(300.0, self._lifetime / 4)

    def current(self) -> UploadCredentials:
        """Valid credentials: renewed first when they are about to expire. While a renewal fails
        and the current ones are still valid for a few seconds, those are used."""
        now = self._clock()
        found = self._current
        if found is not None and found.seconds_left(now) > self._margin():
            return found
        with self._lock:
            found = self._current
            if found is not None and found.seconds_left(self._clock()) > self._margin():
                return found
            try:
                self._renew()
            except CredentialsUnavailableError:
                if found is None or found.seconds_left(self._clock()) <= min(10.0, self._lifetime / 10):
                    raise
                log.warning("renewing the upload credentials of asset %s failed; using them meanwhile", self.asset_id)
                return found
            assert self._current is not None
            return self._current

    def refresh(self, stale_key: str) -> UploadCredentials:
        """New credentials, unless another thread already replaced the ones keyed ``stale_key``."""
        with self._lock:
            found = self._current
            if found is not None and found.access_key_id.get_secret_value() != stale_key:
                return found
            self._renew()
            assert self._current is not None
            return self._current

    def _renew(self) -> None:
        fresh = self._fetch()
        self._set(fresh)
        self.refreshes += 1
        log.info("renewed the upload credentials of asset %s (valid until %s)", self.asset_id, fresh.expiration)


@dataclass(frozen=True)
class RemoteObject:
    """An object under the asset's prefix: its size and ETag (quotes removed)."""

    size: int
    etag: str

    def md5(self) -> str | None:
        """The MD5 of the bytes when the ETag is one (single-part, not KMS-encrypted), else None."""
        tag = self.etag.lower()
        return tag if len(tag) == 32 and all(c in "0123456789abcdef" for c in tag) else None


class ListingRefusedError(PennsieveError):
    """The asset's credentials may not list its prefix."""


def _error_code(body: bytes) -> str:
    text = body.decode("utf-8", "replace")
    return text.partition("<Code>")[2].partition("</Code>")[0] if "<Code>" in text else ""


class AssetS3:
    """PUT and list objects under one asset's prefix; safe for many threads at once."""

    def __init__(self, credentials: AssetCredentials, *, threads: int = 64, retry: RetryPolicy | None = None) -> None:
        first = credentials.current()
        self.credentials = credentials
        self.bucket = first.bucket
        self.region = first.region
        self.prefix = first.key_prefix
        self.retry = retry or RetryPolicy()
        self.endpoint = configured_endpoint()
        if self.endpoint:  # a local S3 (path style)
            self._base = f"{self.endpoint}/{quote(self.bucket)}/"
        elif "." in self.bucket:  # virtual hosting would not match the certificate
            self._base = f"https://s3.{self.region}.amazonaws.com/{self.bucket}/"
        else:
            self._base = f"https://{self.bucket}.s3.{self.region}.amazonaws.com/"
        timeout = urllib3.Timeout(connect=self.retry.connect_timeout, read=self.retry.read_timeout)
        self._pool = urllib3.PoolManager(
            num_pools=2, maxsize=max(1, threads), block=True, retries=False, timeout=timeout
        )
        self._list_client: tuple[str, Any] | None = None
        self._list_lock = threading.Lock()

    def close(self) -> None:
        self._pool.clear()

    def url(self, name: str) -> str:
        return self._base + quote(self.prefix + name, safe="/~")

    def put(self, name: str, body: bytes) -> str:
        """PUT ``body`` as ``<prefix><name>``; returns the ETag (the body's MD5 on plain buckets)."""
        url = self.url(name)
        md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
        attempt = refreshed = 0
        while True:
            attempt += 1
            credentials = self.credentials.current()
            request = AWSRequest(method="PUT", url=url, data=body, headers={"Content-MD5": md5})
            S3SigV4Auth(_frozen(credentials), "s3", credentials.region).add_auth(request)
            try:
                response = self._pool.urlopen("PUT", url, body=body, headers=dict(request.headers.items()))
            except _TRANSIENT as exc:
                if attempt >= self.retry.attempts:
                    raise PennsieveError(f"S3 PUT of {name} failed (no answer: {type(exc).__name__})") from None
                time.sleep(self.retry.delay(attempt))
                continue
            status, code = response.status, _error_code(response.data) if response.status >= 300 else ""
            if status == 200:
                return str(response.headers.get("ETag", "")).strip('"')
            stale = credentials.access_key_id.get_secret_value()
            # Expired: renew (other threads may spend the new ones first: a few rounds); refused:
            # renew once (Pennsieve may have replaced them), then it is the bucket's answer.
            if (code in EXPIRED and refreshed < RENEWALS) or (code in REFUSED and refreshed < 1):
                refreshed += 1
                attempt -= 1  # a renewal is not one of the back-off attempts
                log.info("S3 answered %s to the asset's credentials: renewing them", code or status)
                self.credentials.refresh(stale)
                continue
            if code in REFUSED or code in EXPIRED:
                raise AssetAccessError(f"the asset's bucket refused its credentials ({code}) for {name}")
            if (status in RETRY_STATUSES or code in ("SlowDown", "InternalError")) and attempt < self.retry.attempts:
                time.sleep(self.retry.delay(attempt))
                continue
            raise PennsieveError(f"S3 PUT of {name} failed (HTTP {status} {code})".rstrip())

    def _lister(self) -> tuple[str, Any]:
        """(the key id, a boto3 client with the current credentials): rebuilt after a renewal."""
        import boto3
        from botocore.config import Config

        credentials = self.credentials.current()
        key = credentials.access_key_id.get_secret_value()
        with self._list_lock:
            if self._list_client is None or self._list_client[0] != key:
                client = boto3.client(
                    "s3",
                    region_name=credentials.region,
                    endpoint_url=self.endpoint,
                    aws_access_key_id=key,
                    aws_secret_access_key=credentials.secret_access_key.get_secret_value(),
                    aws_session_token=credentials.session_token.get_secret_value(),
                    config=Config(
                        max_pool_connections=LIST_THREADS,
                        retries={"mode": "adaptive", "max_attempts": self.retry.attempts},
                    ),
                )
                self._list_client = (key, client)
            return self._list_client

    def _list_one(self, part: str) -> dict[str, RemoteObject]:
        from botocore.exceptions import ClientError

        for renewal in (True, False):
            key, client = self._lister()
            found: dict[str, RemoteObject] = {}
            try:
                pages = client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix + part)
                for page in pages:
                    for obj in page.get("Contents", []):
                        name = obj["Key"][len(self.prefix) :]
                        found[name] = RemoteObject(int(obj["Size"]), str(obj.get("ETag", "")).strip('"'))
                return found
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                if code in EXPIRED and renewal:
                    self.credentials.refresh(key)
                    continue
                if code in REFUSED:
                    raise ListingRefusedError(f"the asset's credentials may not list its prefix ({code})") from None
                raise PennsieveError(f"listing the asset's prefix failed ({code or 'error'})") from None
        raise AssertionError("unreachable")  # pragma: no cover

    def list_objects(self, parts: Iterable[str]) -> dict[str, RemoteObject]:
        """Every object under ``<prefix><part>`` for each part (side by side): name → size, ETag."""
        out: dict[str, RemoteObject] = {}
        with ThreadPoolExecutor(max_workers=LIST_THREADS, thread_name_prefix="asset-list") as pool:
            for found in pool.map(self._list_one, list(parts)):
                out.update(found)
        return out
