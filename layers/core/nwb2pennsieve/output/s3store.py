"""An S3 store whose objects are put by a small thread pool, so a writer never waits on one PUT.

A Lambda writer of a 384-channel work item commits 384 objects per chunk; putting them one at a
time leaves the network idle while the next chunk is computed. Here ``commit`` hands the
finished bytes to a pool and returns; at most ``max_in_flight_bytes`` wait for their PUT (commit
blocks beyond that), and :meth:`ParallelS3Store.flush` waits for all of them and raises the
first failure. Objects are still put whole, so a name only ever holds a complete file.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, cast

from ..errors import storage_error
from .storage import PendingObject, S3Store

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

PUT_THREADS = 16
MAX_IN_FLIGHT_BYTES = 128 * 1024 * 1024


class _Pending:
    def __init__(self, store: ParallelS3Store, name: str) -> None:
        self._store = store
        self._name = name
        # One copy of each piece (the writer reuses its buffers), none at commit.
        self._buf: bytearray | None = bytearray()

    def write(self, data: bytes | memoryview) -> None:
        assert self._buf is not None
        self._buf += data

    def writev(self, parts: list[bytes | memoryview]) -> None:
        assert self._buf is not None
        for part in parts:
            self._buf += part

    def commit(self) -> None:
        assert self._buf is not None
        body, self._buf = self._buf, None
        self._store.put_async(self._name, body)

    def abort(self) -> None:
        self._buf = None


class ParallelS3Store(S3Store):
    """:class:`~nwb2pennsieve.output.storage.S3Store` with asynchronous, bounded, parallel commits."""

    def __init__(
        self,
        bucket: str,
        prefix: str,
        client: S3Client,
        *,
        threads: int = PUT_THREADS,
        max_in_flight_bytes: int | None = None,
    ) -> None:
        super().__init__(bucket, prefix, client)
        if max_in_flight_bytes is None:
            max_in_flight_bytes = MAX_IN_FLIGHT_BYTES
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="s3-put")
        self._budget = threading.BoundedSemaphore(max(1, max_in_flight_bytes // (1024 * 1024)))
        self._futures: list[Future[None]] = []

    def open_pending(self, name: str) -> PendingObject:
        return _Pending(self, name)

    def write_bytes(self, name: str, data: bytes) -> None:
        """Put ``data`` in the background (see :meth:`flush`)."""
        self.put_async(name, data)

    def put_async(self, name: str, body: bytes | bytearray) -> None:
        units = max(1, len(body) // (1024 * 1024))
        taken = 0
        try:
            for _ in range(units):
                self._budget.acquire()
                taken += 1
        except BaseException:
            for _ in range(taken):
                self._budget.release()
            raise
        self._futures.append(self._pool.submit(self._put, name, body, units))
        self._raise_failed()

    def _put(self, name: str, body: bytes | bytearray, units: int) -> None:
        try:
            # botocore sends a bytearray as it is (no copy); the stubs only name bytes.
            self.client.put_object(Bucket=self.bucket, Key=self.key(name), Body=cast(bytes, body))
        finally:
            for _ in range(units):
                self._budget.release()

    def _raise_failed(self) -> None:
        done = [f for f in self._futures if f.done()]
        self._futures = [f for f in self._futures if not f.done()]
        for f in done:
            exc = f.exception()
            if exc is not None:
                raise storage_error(f"putting an object under {self.describe('')} failed ({exc})", exc) from exc

    def flush(self) -> None:
        """Wait for every pending PUT; raise the first that failed."""
        for f in self._futures:
            f.exception()
        self._raise_failed()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def abandon(self) -> None:
        """Stop after an error elsewhere: drop what has not started, wait for the rest, raise nothing."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._futures = []
