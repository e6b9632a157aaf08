"""The uploads: presign and PUT chunk files with a pool of threads, recording each success.

Failures do not abort the other uploads; an authentication failure, or too many failures in a
row, stops the pool early (the files never attempted count as failed: a rerun does them).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from itertools import islice
from typing import BinaryIO, Protocol, TypeVar, cast

from ..output.storage import S3Store, Store
from .client import PennsieveClient
from .errors import PennsieveAuthError, PennsieveError, PennsieveHTTPError, redact
from .http import SizedReader
from .manifest import FileEntry
from .records import UPLOADED_PREFIX, Recorder
from .target import ImportTarget

log = logging.getLogger(__name__)

PROGRESS_SECONDS = 10.0  # how often progress is logged and recorded (at the latest)
QUEUED_PER_THREAD = 2  # files submitted ahead per thread: the pool never idles, the queue stays small


def _open_sized(store: Store, name: str) -> tuple[BinaryIO, int]:
    if isinstance(store, S3Store):
        # One GET gives both the stream and its length (no HEAD per file).
        answer = store.client.get_object(Bucket=store.bucket, Key=store.key(name))
        return cast(BinaryIO, answer["Body"]), int(answer["ContentLength"])
    return store.open_read(name), store.size(name)


def upload_one(store: Store, client: PennsieveClient, target: ImportTarget, import_id: str, f: FileEntry) -> None:
    """Presign and PUT one file; a refused or expired presigned URL is presigned again, once."""

    def open_body() -> SizedReader:
        stream, size = _open_sized(store, f.local)
        if size <= 0:
            stream.close()
            raise PennsieveError("empty file", file=store.describe(f.local))
        return SizedReader(stream, size, f.local)

    url = client.presign(target.dataset_id, import_id, f.upload_key)
    try:
        client.put_file(url, open_body)
    except PennsieveHTTPError as exc:
        if exc.status not in (400, 403):
            raise
        client.put_file(client.presign(target.dataset_id, import_id, f.upload_key), open_body)


class Named(Protocol):
    """An upload: ``local`` is its name in the output."""

    @property
    def local(self) -> str: ...


class Tally:
    """What the upload threads share: failures, successes, when to stop. Thread-safe."""

    def __init__(self, total: int, max_consecutive_failures: int) -> None:
        self.total = total
        self.max_consecutive_failures = max_consecutive_failures
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.failed: list[str] = []
        self.errors: list[str] = []
        self.ok = 0
        self.consecutive_failures = 0
        self.started = self.last_log = time.monotonic()

    def failure(self, name: str, exc: Exception) -> None:
        reason = exc.one_line() if isinstance(exc, PennsieveError) else redact(f"{type(exc).__name__}: {exc}")
        with self.lock:
            self.failed.append(name)
            self.errors.append(reason)
            self.consecutive_failures += 1
            if isinstance(exc, PennsieveAuthError) or self.consecutive_failures >= self.max_consecutive_failures:
                self.stop.set()
        log.warning("upload of %s failed: %s", name, reason)

    def success(self) -> None:
        with self.lock:
            self.ok += 1
            self.consecutive_failures = 0
            now = time.monotonic()
            if now - self.last_log > PROGRESS_SECONDS:
                self.last_log = now
                log.info("uploaded %d/%d files (%.0f files/s)", self.ok, self.total, self.ok / (now - self.started))


def upload_all(
    store: Store,
    client: PennsieveClient,
    target: ImportTarget,
    import_id: str,
    todo: Sequence[FileEntry],
    workers: int,
    record_every: int,
    max_consecutive_failures: int,
) -> tuple[list[str], str]:
    """Presign + PUT every file with ``workers`` threads; returns (failed local names, first error).

    At most ``QUEUED_PER_THREAD`` files per thread are submitted ahead, whatever ``len(todo)``.
    """
    if not todo:
        return [], ""
    recorder = Recorder(store, UPLOADED_PREFIX, import_id, record_every, PROGRESS_SECONDS)
    tally = Tally(len(todo), max_consecutive_failures)
    threads = max(1, min(workers, len(todo)))
    ran: set[int] = set()  # the pool threads that ran a task (each may hold an HTTP session)

    def upload(f: FileEntry) -> bool:
        """False when the pool was stopped before this file was attempted."""
        ran.add(threading.get_ident())
        if tally.stop.is_set():
            return False
        try:
            upload_one(store, client, target, import_id, f)
        except Exception as exc:  # every failure is counted and reported, none aborts the others
            tally.failure(f.local, exc)
            return True
        try:
            recorder.add((f.upload_key,))
        except Exception as exc:  # the upload itself succeeded; only its record is late
            log.warning("could not record progress yet (%s); will try again", type(exc).__name__)
        tally.success()
        return True

    not_attempted: list[str] = []
    entries = iter(todo)
    try:
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="upload") as pool:
            try:
                not_attempted = bounded(pool, upload, entries, threads * QUEUED_PER_THREAD, tally.stop)
            except BaseException:
                tally.stop.set()  # queued files return at once; the running ones finish
                raise
            finally:
                _release_sessions(pool, client, len(ran))
    finally:
        try:
            recorder.flush()
        except Exception as exc:
            # Uploaded but not recorded: a rerun would PUT these files again (same keys), nothing worse.
            log.error("could not record the last %d uploads (%s)", len(recorder.pending), type(exc).__name__)
    if tally.stop.is_set():
        # Never attempted: they are missing just the same and the rerun will do them.
        tally.failed.extend(not_attempted)
        tally.failed.extend(f.local for f in entries)
        log.error("uploads stopped early after %d failures in a row: %s", tally.consecutive_failures, tally.errors[-1])
    return tally.failed, tally.errors[0] if tally.errors else ""


F = TypeVar("F", bound=Named)  # a TypeVar, not 3.12's def f[F: ...]: the command line runs on 3.11


def bounded(
    pool: ThreadPoolExecutor,
    upload: Callable[[F], bool],
    entries: Iterator[F],
    ahead: int,
    stop: threading.Event,
) -> list[str]:
    """Run ``upload`` over ``entries`` with at most ``ahead`` submitted at once, until done or
    ``stop`` is set; returns the local names of the files the pool stopped before attempting."""
    not_attempted: list[str] = []
    in_flight: dict[Future[bool], F] = {pool.submit(upload, f): f for f in islice(entries, ahead)}
    while in_flight:
        done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
        for future in done:
            f = in_flight.pop(future)
            if not future.result():
                not_attempted.append(f.local)
        if not stop.is_set():
            for f in islice(entries, len(done)):
                in_flight[pool.submit(upload, f)] = f
    return not_attempted


def _release_sessions(pool: ThreadPoolExecutor, client: PennsieveClient, threads: int) -> None:
    """Have each of the pool's ``threads`` threads close its own HTTP session (sessions are per thread).

    A barrier holds every thread that took a release task until all have taken one, so no thread
    takes two. (Best effort: a session left open is closed with the client.)
    """
    if threads == 0:
        return
    barrier = threading.Barrier(threads, timeout=30)

    def release() -> None:
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            return
        client.http.release_thread_session()

    for _ in range(threads):
        pool.submit(release)
