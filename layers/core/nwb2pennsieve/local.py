"""The local pool: a process pool over the very work items the cloud fans out.

Output is staged in a hidden directory beside the final one and published (renamed into place)
only when every work item and the channel metadata are written, so a failed conversion leaves
no chunk under a final name.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_all_start_methods, get_context
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import Any

import h5py

from .config import DEFAULT_CHUNK_SIZE_MB, DEFAULT_MAX_ITEM_MB
from .errors import InvalidInputError, Nwb2PennsieveError, StorageError
from .models import ItemResult, Plan, WorkItem
from .planner import build_plan, work_items
from .sources import InputSource, OpenedInput, open_input
from .storage import LocalStore
from .writer import write_channel_metadata

Progress = Callable[[int], None]  # called with the float64 bytes of each finished work item


@dataclass
class ConversionResult:
    source: str
    output_dir: Path
    plan: Plan
    files: int = 0
    payload_bytes: int = 0
    seconds: float = 0.0
    metadata_files: list[str] = field(default_factory=list)

    @property
    def channels(self) -> int:
        return sum(len(s.channels) for s in self.plan.series)

    def summary_line(self) -> str:
        mb = self.payload_bytes / 1e6
        rate = mb / self.seconds if self.seconds > 0 else 0.0
        return (
            f"{self.source}: {self.channels} channels, {self.files} files, {mb:.1f} MB "
            f"in {self.seconds:.2f} s ({rate:.1f} MB/s) -> {self.output_dir}"
        )


def plan_file(
    path: str | os.PathLike[str] | InputSource,
    *,
    chunk_size_mb: float = DEFAULT_CHUNK_SIZE_MB,
    max_item_mb: float = DEFAULT_MAX_ITEM_MB,
    skip_invalid_series: bool = False,
    series: tuple[str, ...] = (),
    timeout_s: float | None = None,
) -> Plan:
    """Plan a local file, URL or S3 object (see :class:`~nwb2pennsieve.sources.InputSource`); with
    ``timeout_s``, in a child process given that long (PLAN_TIMEOUT_S).

    A damaged file can send HDF5 into an endless loop inside one call, which no Python code can
    interrupt: the child is killed and one line names the file.
    """
    source = InputSource.parse(path)
    options = {
        "chunk_size_mb": chunk_size_mb,
        "max_item_mb": max_item_mb,
        "skip_invalid_series": skip_invalid_series,
        "series": tuple(series),
    }
    if timeout_s:  # None or 0: in this process, without a limit
        return _plan_in_child(source, options, timeout_s)
    return _plan_here(source, options)


def _plan_here(source: InputSource, options: dict[str, Any]) -> Plan:
    with open_input(source) as opened:
        return build_plan(opened.h5, source=opened.source.name, **options)


def _plan_child(conn: Connection, source: InputSource, options: dict[str, Any], env: dict[str, str]) -> None:
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


def _plan_in_child(source: InputSource, options: dict[str, Any], timeout_s: float) -> Plan:
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
    *,
    chunk_size_mb: float = DEFAULT_CHUNK_SIZE_MB,
    max_item_mb: float = DEFAULT_MAX_ITEM_MB,
    workers: int | None = None,
    skip_invalid_series: bool = False,
    progress: Progress | None = None,
    plan: Plan | None = None,
) -> ConversionResult:
    """Convert one NWB file into ``output_dir`` (chunk files + channel metadata).

    ``plan`` is the file's plan when the caller has made it already (the other options are then
    those it was made with).
    """
    started = time.perf_counter()
    path = InputSource.parse(path)
    output = Path(output_dir)
    if plan is None:
        plan = plan_file(
            path,
            chunk_size_mb=chunk_size_mb,
            max_item_mb=max_item_mb,
            skip_invalid_series=skip_invalid_series,
        )
    result = ConversionResult(source=plan.source, output_dir=output, plan=plan)
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create the output directory {output} ({exc.strerror or exc})") from None
    check_free_space(plan, output)
    staging = output / f".staging-{path.stem}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        # staging is private and published whole, so its files need no temporary names
        store = LocalStore(staging, atomic_names=False)
        for item_result in execute_items(path, plan, staging, workers=workers, progress=progress, atomic_names=False):
            result.files += item_result.files
            result.payload_bytes += item_result.payload_bytes
        result.metadata_files = write_channel_metadata(plan, store)
        _publish(staging, output)
    except OSError as exc:
        raise StorageError(f"writing {output} failed ({exc.strerror or exc})", file=plan.source) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    result.seconds = time.perf_counter() - started
    return result


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


def _publish(staging: Path, output: Path) -> None:
    for entry in os.scandir(staging):
        os.replace(entry.path, output / entry.name)


# --- the pool -------------------------------------------------------------------------------

_worker: dict[str, object] = {}


def _init_worker(path: InputSource, plan_json: str, staging: str, atomic_names: bool = True) -> None:
    fix_mmap_threshold()
    try:
        _worker["input"] = open_input(path)
    except Exception as exc:  # raised by the first item: an initializer's error only breaks the pool
        _worker["error"] = exc
    _worker["plan"] = Plan.model_validate_json(plan_json)
    _worker["store"] = LocalStore(staging, atomic_names=atomic_names)


def _run_item(item: WorkItem) -> ItemResult:
    plan = _worker["plan"]
    assert isinstance(plan, Plan)
    if "error" in _worker:
        raise _worker["error"]  # type: ignore[misc]
    opened = _worker["input"]
    assert isinstance(opened, OpenedInput)
    return opened.write_item(plan, item, _worker["store"])  # type: ignore[arg-type]


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
    if budget_mb >= plan.max_item_mb:
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
    the file open once. The first failure cancels what has not started and is raised.
    ``atomic_names=False`` writes files straight under their names (for a private staging
    directory, see :class:`LocalStore`).
    """
    release_free_heap()
    fix_mmap_threshold()
    requested = workers or default_workers()
    items = split_items(plan, requested) if requested > 1 else plan.work_items
    n_workers = min(requested, len(items))
    if n_workers <= 1:
        store = LocalStore(out_dir, atomic_names=atomic_names)
        with open_input(path, name=plan.source) as opened:
            for item in plan.work_items:
                r = opened.write_item(plan, item, store)
                if progress:
                    progress(item.output_bytes)
                yield r
        return
    with ProcessPoolExecutor(
        max_workers=n_workers,
        mp_context=pool_context(),
        initializer=_init_worker,
        initargs=(InputSource.parse(path), plan.model_dump_json(), os.fspath(out_dir), atomic_names),
    ) as pool:
        sizes = {}
        pending: set[Future[ItemResult]] = set()
        for item in items:
            fut = pool.submit(_run_item, item)
            sizes[fut] = item.output_bytes
            pending.add(fut)
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for fut in done:
                    exc = fut.exception()
                    if exc is not None:
                        raise exc
                    if progress:
                        progress(sizes[fut])
                    yield fut.result()
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise


def describe_error(exc: BaseException, source: str) -> str:
    """One line for any error: ours carry file/series/reason; others get the file name."""
    if isinstance(exc, Nwb2PennsieveError):
        return exc.with_file(source).one_line()
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{source}: {text}"
