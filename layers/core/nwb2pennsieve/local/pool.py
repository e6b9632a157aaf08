"""The local pool: a process pool over the very work items the cloud fans out.

Output is staged in a folder beside the final one and swapped in whole only when every work item
and the channel metadata are written (:mod:`nwb2pennsieve.output.publish`), so a failed or interrupted
conversion publishes nothing and a new one replaces the old output entirely.

Workers take orders only from the parent: they ignore SIGINT and SIGHUP (a terminal sends those
to the whole process group), and die with it (``PR_SET_PDEATHSIG`` on Linux, a watchdog thread
elsewhere). When the parent stops (error, Ctrl-C, SIGTERM) it kills its workers at once rather
than waiting for their work items to end. Progress is counted in bytes of finished chunk files,
through a counter the workers share with the parent.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from functools import partial
from multiprocessing import get_all_start_methods, get_context
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import TextIO

import h5py

from ..bundle.finish import finish_bundle
from ..bundle.series import PartialSpill, bundle_name
from ..errors import InvalidInputError, Nwb2PennsieveError, OutputWriteError, StorageError
from ..options import ConversionOptions
from ..output.publish import OutputFolder, OutputMarker
from ..output.storage import LocalStore, PendingObject
from ..plan.models import ItemResult, Plan, WorkItem
from ..plan.planner import build_plan, work_items
from ..source.inputs import InputSource, OpenedInput, open_input
from ..write.chunks import write_channel_metadata

Progress = Callable[[int], None]  # called with the float64 bytes of each finished work item


@dataclass
class ConversionResult:
    source: str
    output_dir: Path
    plan: Plan
    files: int = 0
    payload_bytes: int = 0
    stored_bytes: int = 0
    seconds: float = 0.0
    metadata_files: list[str] = field(default_factory=list)
    bundle_bytes: int = 0  # the viewer bundle's files, with OUTPUT_FORMATS=bundle

    @property
    def channels(self) -> int:
        return sum(len(s.channels) for s in self.plan.series)

    def summary_line(self) -> str:
        """``FILE: 16 channels, 24 files, 1.4 MB in 0.31 s (4.6 MB/s) -> OUT``; with the bundle,
        ``, bundle 3.1 MB`` after the chunk files (or in their place without them)."""
        parts = []
        if self.plan.writes_chunks:
            parts.append(f"{self.files} files, {self.payload_bytes / 1e6:.1f} MB")
        if self.plan.writes_bundle:
            parts.append(f"bundle {self.bundle_bytes / 1e6:.1f} MB")
        took = f"in {self.seconds:.2f} s"
        if self.plan.writes_chunks and self.seconds > 0:
            took += f" ({self.payload_bytes / 1e6 / self.seconds:.1f} MB/s)"
        return f"{self.source}: {self.channels} channels, {', '.join(parts)} {took} -> {self.output_dir}"


def plan_file(
    path: str | os.PathLike[str] | InputSource, options: ConversionOptions, *, timeout_s: float | None = None
) -> Plan:
    """Plan a local file, URL or S3 object (see :class:`~nwb2pennsieve.source.inputs.InputSource`); with
    ``timeout_s``, in a child process given that long (PLAN_TIMEOUT_S).

    A damaged file can send HDF5 into an endless loop inside one call, which no Python code can
    interrupt: the child is killed and one line names the file.
    """
    source = InputSource.parse(path)
    # timeout_s None or 0: in this process, without a limit
    return _plan_in_child(source, options, timeout_s) if timeout_s else _plan_here(source, options)


def _plan_here(source: InputSource, options: ConversionOptions) -> Plan:
    with open_input(source) as opened:
        return build_plan(opened.h5, source=opened.source.name, options=options)


def _plan_child(conn: Connection, source: InputSource, options: ConversionOptions, env: dict[str, str]) -> None:
    # A forkserver child has the environment the server started with: take the caller's.
    os.environ.clear()
    os.environ.update(env)
    try:
        message: tuple[str, object] = ("plan", _plan_here(source, options).model_dump_json())
    except BaseException as exc:  # sent to the parent, which raises it
        message = ("error", exc)
    try:
        conn.send(message)
    except Exception as exc:  # an exception that does not pickle
        conn.send(("error", RuntimeError(f"{type(exc).__name__}: {message[1]}")))
    conn.close()


def _plan_in_child(source: InputSource, options: ConversionOptions, timeout_s: float) -> Plan:
    name = source.name
    context = pool_context()
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_plan_child, args=(send, source, options, dict(os.environ)), daemon=True)  # type: ignore[attr-defined]
    child.start()
    send.close()
    try:
        if not receive.poll(timeout_s):
            raise InvalidInputError(
                f"planning took longer than {timeout_s:g} s (PLAN_TIMEOUT_S) and was stopped: HDF5 may be "
                "looping in a damaged part of the file (raise PLAN_TIMEOUT_S for a file that is just big)",
                file=name,
            )
        try:
            kind, body = receive.recv()
        except (EOFError, OSError):
            child.join()
            code = child.exitcode or 0
            how = f"was killed by signal {-code}" if code < 0 else f"ended with exit status {code}"
            raise InvalidInputError(f"planning {how} (HDF5 crashed): the file is damaged", file=name) from None
    finally:
        receive.close()
        if child.is_alive():
            child.kill()
        child.join()
    if kind == "error":
        assert isinstance(body, BaseException)
        raise body
    assert isinstance(body, str)
    return Plan.model_validate_json(body)


def check_free_space(plan: Plan, output: Path) -> None:
    """Refuse, before writing, a conversion whose output would not fit the output file system."""
    needed = plan.output_bytes()
    free = shutil.disk_usage(output).free
    if needed > free:
        raise StorageError(
            f"its output needs {needed / 1e9:,.3f} GB but the file system of {output} has {free / 1e9:,.3f} GB free",
            file=plan.source,
        )


def convert_file(
    path: str | os.PathLike[str] | InputSource,
    output_dir: str | os.PathLike[str],
    plan: Plan | ConversionOptions,
    *,
    workers: int | None = None,
    progress: Progress | None = None,
) -> ConversionResult:
    """Convert one NWB file into ``output_dir`` (chunk files + channel metadata, and/or the viewer
    bundle ``<stem>.zarr`` with ``asset-properties.json``, per the plan's options).

    ``plan`` is the file's plan when the caller has made it already, else the options to make it
    with (in this process).
    """
    started = time.perf_counter()
    path = InputSource.parse(path)
    output = Path(output_dir)
    if isinstance(plan, ConversionOptions):
        plan = plan_file(path, plan)
    result = ConversionResult(source=plan.source, output_dir=output, plan=plan)
    try:
        # A local file's size and mtime tell the next run whether its source changed; a URL has none.
        stat = os.stat(path.location) if path.kind == "file" else None
        identity = (stat.st_size, stat.st_mtime_ns) if stat else None
    except OSError as exc:
        raise InvalidInputError(f"cannot read it ({exc.strerror or exc})", file=plan.source) from None
    with OutputFolder(output) as folder:
        check_free_space(plan, folder.staging)
        try:
            # staging is private and published whole, so its files need no temporary names
            store = LocalStore(folder.staging, atomic_names=False)
            # The bundle's partial results wait on disk for the reduce (:class:`PartialSpill`): in a
            # hidden folder of the staging folder (the output's disk; a killed run's is cleared with
            # it), removed before the output is published.
            spilled = folder.staging / PARTIALS_FOLDER
            spill = PartialSpill(spilled)
            for item_result in execute_items(
                path, plan, folder.staging, workers=workers, progress=progress, atomic_names=False
            ):
                result.files += item_result.files
                result.payload_bytes += item_result.payload_bytes
                result.stored_bytes += item_result.stored_bytes
                if item_result.partials:
                    spill.add(item_result.partials)
            if plan.writes_chunks:
                result.metadata_files = write_channel_metadata(plan, store)
            if plan.writes_bundle:
                # The reduce and the bundle's metadata, inside the staging folder: published with it.
                with open_input(path, name=plan.source) as opened:
                    finish_bundle(store, plan, opened.h5, spill.blocks())
                result.bundle_bytes = tree_bytes(folder.staging / bundle_name(plan))
            shutil.rmtree(spilled, ignore_errors=True)
        except OutputWriteError as exc:
            raise folder.error("cannot write it", exc.cause) from None
        except OSError as exc:
            raise folder.error("cannot write it", exc) from None
        folder.publish(
            OutputMarker(
                source=plan.source,
                source_bytes=identity[0] if identity else None,
                source_mtime_ns=identity[1] if identity else None,
                options=plan.options,
                files=sorted(LocalStore(folder.staging).list_names())
                + ([bundle_name(plan) + "/"] if plan.writes_bundle else []),
            )
        )
    result.seconds = time.perf_counter() - started
    return result


PARTIALS_FOLDER = ".bundle-partials"


def tree_bytes(root: Path) -> int:
    """The bytes of the files under ``root``."""
    total = 0
    stack = [os.fspath(root)]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                else:
                    total += entry.stat(follow_symlinks=False).st_size
    return total


def release_free_heap() -> None:
    """Give the C heap's free pages back to the OS (glibc keeps large freed blocks).

    Planning reads a few MiB of samples through the HDF5 chunk cache; without this the parent
    keeps ~35 MB it no longer uses for the whole conversion. A no-op where glibc is absent.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)


_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


def fix_mmap_threshold(nbytes: int = 4 * 1024 * 1024) -> None:
    """Have glibc serve blocks of ``nbytes`` or more with mmap always, so freeing returns them.

    By default glibc raises this threshold to the size of the largest block freed (up to 32 MiB),
    after which HDF5's decompression buffers (one HDF5 chunk, ~10 MB) come from the heap and are
    kept: on the gzip Neuropixels file a worker grew from ~135 to ~250 MB over the run. Setting the
    threshold turns that adjustment off. Inherited by forked workers; a no-op without glibc.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, nbytes)


# --- the pool -------------------------------------------------------------------------------

_worker: dict[str, object] = {}

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_parent(parent_pid: int) -> None:
    """Make this worker end when the process that started the pool ends, even by ``kill -9``."""
    try:
        linked = ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):  # not Linux
        linked = False
    parent = os.getppid()
    if not _alive(parent_pid):  # it ended before the link was made
        os._exit(1)
    if not linked:
        # Elsewhere: a thread that watches the parent (a forkserver's workers watch the forkserver,
        # which itself ends with the parent).
        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(0.5)
            os._exit(1)

        threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _init_worker(
    path: InputSource,
    plan_json: str,
    staging: str,
    atomic_names: bool = True,
    parent_pid: int | None = None,
    written: Synchronized[int] | None = None,
) -> None:
    # Ctrl-C and a closing terminal reach the whole process group: the parent decides, and kills us.
    for name in ("SIGINT", "SIGHUP"):  # no SIGHUP on Windows
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)
    if parent_pid is not None:
        _die_with_parent(parent_pid)
    quiet_warnings()
    fix_mmap_threshold()
    try:
        _worker["input"] = open_input(path)
    except Exception as exc:  # raised by the first item: an initializer's error only breaks the pool
        _worker["error"] = exc
    _worker["plan"] = Plan.model_validate_json(plan_json)
    if written is None:
        _worker["store"] = LocalStore(staging, atomic_names=atomic_names)
    else:
        _worker["store"] = CountingStore(staging, partial(_add, written), atomic_names=atomic_names)


def _add(counter: Synchronized[int], nbytes: int) -> None:
    with counter.get_lock():
        counter.value += nbytes


def _run_item(item: WorkItem) -> ItemResult:
    plan = _worker["plan"]
    assert isinstance(plan, Plan)
    if "error" in _worker:
        raise _worker["error"]  # type: ignore[misc]
    opened = _worker["input"]
    assert isinstance(opened, OpenedInput)
    return opened.write_item(plan, item, _worker["store"])  # type: ignore[arg-type]


class CountingStore(LocalStore):
    """A local directory that reports the bytes of each file it commits (for the progress bar)."""

    def __init__(self, root: str | os.PathLike[str], report: Callable[[int], None], *, atomic_names: bool) -> None:
        super().__init__(root, atomic_names=atomic_names)
        self._report = report

    def open_pending(self, name: str) -> PendingObject:
        return _CountingPending(super().open_pending(name), self._report)


class _CountingPending:
    def __init__(self, pending: PendingObject, report: Callable[[int], None]) -> None:
        self._pending = pending
        self._report = report
        self._bytes = 0

    def write(self, data: bytes | memoryview) -> None:
        self._pending.write(data)
        self._bytes += memoryview(data).nbytes

    def writev(self, parts: list[bytes | memoryview]) -> None:
        self._pending.writev(parts)
        self._bytes += sum(memoryview(p).nbytes for p in parts)

    def commit(self) -> None:
        self._pending.commit()
        self._report(self._bytes)

    def abort(self) -> None:
        self._pending.abort()


def quiet_warnings() -> None:
    """Show Python warnings (numpy's RuntimeWarnings, ...) as one line, without the source line."""

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        text = " ".join(str(message).split())
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.write(f"warning: {category.__name__}: {text}\n")

    warnings.showwarning = show


# Local load balancing: a plan's items are sized for a Lambda's memory, so a small file may be one
# or a few uneven items. The pool re-cuts the plan with a smaller budget, about ITEMS_PER_WORKER
# items per worker (never below MIN_ITEM_BYTES), by the planner's own rules (chunk runs inside a
# segment, channel blocks on HDF5 chunk columns); the bytes written are the same.
ITEMS_PER_WORKER = 4
MIN_ITEM_BYTES = 32 * 1024 * 1024


def split_items(plan: Plan, n_workers: int) -> list[WorkItem]:
    """The plan's work, cut into items of about 1 / (ITEMS_PER_WORKER × n_workers) of it, biggest first."""
    total = sum(i.output_bytes for i in plan.work_items)
    budget_mb = max(MIN_ITEM_BYTES, total // max(1, ITEMS_PER_WORKER * n_workers)) / 2**20
    if plan.writes_bundle:
        # The re-cut items keep to the bundle's shard windows; a local store streams the shards to
        # files, so compressed data is cut in whole HDF5 chunks (planner._bundle_layout).
        budget_mb = min(budget_mb, plan.options.max_item_mb)
        items = [
            i for s in plan.series for i in work_items(s, plan.chunk_samples, budget_mb, bundle=True, streamed=True)
        ]
    elif budget_mb >= plan.options.max_item_mb:
        items = list(plan.work_items)
    else:
        items = [i for s in plan.series for i in work_items(s, plan.chunk_samples, budget_mb)]
    # biggest first, so the last items to finish are small ones (stable: equal sizes keep plan order)
    items.sort(key=lambda i: -i.output_bytes)
    return items


def pool_context() -> BaseContext:
    """``fork`` when it is safe here, else ``forkserver``.

    Workers must never inherit an open HDF5 file (or a lock held by another thread), so ``fork`` is
    used only when this process has no HDF5 file open and runs a single thread; then a worker
    starts at once with the modules already imported. A forkserver worker imports numpy, h5py and
    pydantic itself first, a cost that weighs on short files (bench/results.md, the 10 s
    Neuropixels file).
    """
    if (
        "fork" in get_all_start_methods()
        and threading.active_count() == 1
        and h5py.h5f.get_obj_count(h5py.h5f.OBJ_ALL, h5py.h5f.OBJ_FILE) == 0
    ):
        return get_context("fork")
    return get_context("forkserver")


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def execute_items(
    path: str | os.PathLike[str] | InputSource,
    plan: Plan,
    out_dir: str | os.PathLike[str],
    *,
    workers: int | None = None,
    progress: Progress | None = None,
    atomic_names: bool = True,
) -> Iterator[ItemResult]:
    """Write every work item of ``plan`` into ``out_dir``; yield each item's result as it finishes.

    One worker (or one item) runs in this process; more run in a process pool, each worker with
    the file open once. ``progress`` is called with the bytes of chunk files written as they are
    committed. The first failure, or an interruption (KeyboardInterrupt, or what a signal handler
    raises), kills the workers at once and is raised. ``atomic_names=False`` writes files straight
    under their names (for a private staging directory, see :class:`LocalStore`).
    """
    release_free_heap()
    fix_mmap_threshold()
    requested = workers or default_workers()
    items = split_items(plan, requested) if requested > 1 or plan.writes_bundle else plan.work_items
    n_workers = min(requested, len(items))
    if n_workers <= 1:
        store = (
            CountingStore(out_dir, progress, atomic_names=atomic_names)
            if progress
            else LocalStore(out_dir, atomic_names=atomic_names)
        )
        with open_input(path, name=plan.source) as opened:
            for item in items:
                r = opened.write_item(plan, item, store)
                if progress and not plan.writes_chunks:  # no chunk file to count: the item's share
                    progress(item.output_bytes)
                yield r
        return
    context = pool_context()
    written = context.Value("q", 0) if progress else None
    pool = ProcessPoolExecutor(
        max_workers=n_workers,
        mp_context=context,
        initializer=_init_worker,
        initargs=(
            InputSource.parse(path),
            plan.model_dump_json(),
            os.fspath(out_dir),
            atomic_names,
            os.getpid(),
            written,
        ),
    )
    finished = False
    try:
        sizes = {pool.submit(_run_item, item): item.output_bytes for item in items}
        pending = set(sizes)
        shown = 0
        while pending:
            # A short timeout: the progress bar moves between items, and signals are handled at once.
            done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            if progress and written is not None:
                now = written.value
                if now > shown:
                    progress(now - shown)
                    shown = now
            for fut in done:
                exc = fut.exception()
                if exc is not None:
                    raise exc
                if progress and not plan.writes_chunks:  # no chunk file to count: the item's share
                    progress(sizes[fut])
                yield fut.result()
        finished = True
    finally:
        if finished:
            pool.shutdown(wait=True)
        else:
            stop_pool(pool)


def stop_pool(pool: ProcessPoolExecutor) -> None:
    """Kill the pool's workers now (their output is in a staging folder that is thrown away)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        with contextlib.suppress(OSError, ValueError):
            process.kill()
    for process in processes:
        with contextlib.suppress(OSError, ValueError, AssertionError):
            process.join(timeout=2)


def describe_error(exc: BaseException, source: str) -> str:
    """One line for any error: ours carry file/series/reason; others get the file name."""
    if isinstance(exc, Nwb2PennsieveError):
        return exc.with_file(source).one_line()
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{source}: {text}"
