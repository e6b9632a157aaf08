"""The local pool: a process pool over the very work items the cloud fans out.

Workers take orders only from the parent: they ignore Ctrl-C, SIGTERM and SIGHUP (a terminal
sends those to the whole process group), and die with it (``PR_SET_PDEATHSIG`` on Linux, a
watchdog thread elsewhere). When the parent stops (error, Ctrl-C, SIGTERM) it kills its workers at
once rather than waiting for their work items to end; the pool is started, and stopped, with stop
signals deferred (:mod:`nwb2pennsieve.signals`), so its table of workers is whole whenever it is
stopped. Progress is counted in float64 bytes of finished chunks (the unit of the plan's
``output_bytes``, whatever the gzip level), through a counter the workers share with the parent.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from functools import partial
from multiprocessing import get_all_start_methods, get_context
from multiprocessing.context import BaseContext
from multiprocessing.sharedctypes import Synchronized
from typing import TextIO

import h5py

from .. import signals
from ..output.storage import LocalStore
from ..plan.items import recut_items
from ..plan.models import ItemResult, Plan, WorkItem
from ..source.inputs import InputSource, OpenedInput, open_input
from ..write.chunks import Progress
from ..write.execute import execute_item


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


def die_with_parent(parent_pid: int) -> None:
    """Make this process (a worker, the planning child) end when the process that started it
    ends, even by ``kill -9``."""
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
    signals.ignore()  # the parent decides, and kills us
    if parent_pid is not None:
        die_with_parent(parent_pid)
    quiet_warnings()
    fix_mmap_threshold()
    try:
        _worker["input"] = open_input(path)
    except Exception as exc:  # raised by the first item: an initializer's error only breaks the pool
        _worker["error"] = exc
    _worker["plan"] = Plan.model_validate_json(plan_json)
    _worker["store"] = LocalStore(staging, atomic_names=atomic_names)
    _worker["progress"] = None if written is None else partial(_add, written)


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
    store, progress = _worker["store"], _worker["progress"]
    return execute_item(opened.h5, plan, item, store, source=opened.reader, progress=progress)  # type: ignore[arg-type]


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
    the file open once. ``progress`` is called with the float64 bytes of each chunk as it is
    written (they add up to the items' ``output_bytes``). The first failure, or an interruption
    (KeyboardInterrupt, or what a signal handler raises), kills the workers at once and is raised.
    ``atomic_names=False`` writes files straight under their names (for a private staging
    directory, see :class:`LocalStore`).
    """
    release_free_heap()
    fix_mmap_threshold()
    requested = workers or default_workers()
    items = recut_items(plan, requested) if requested > 1 or plan.writes_bundle else plan.work_items
    n_workers = min(requested, len(items))
    source = InputSource.parse(path)
    if n_workers <= 1:
        yield from _execute_here(source, plan, items, out_dir, progress=progress, atomic_names=atomic_names)
    else:
        yield from _execute_in_pool(source, plan, items, out_dir, n_workers, progress, atomic_names=atomic_names)


def _execute_here(
    source: InputSource,
    plan: Plan,
    items: list[WorkItem],
    out_dir: str | os.PathLike[str],
    *,
    progress: Progress | None,
    atomic_names: bool,
) -> Iterator[ItemResult]:
    """One worker: the items in this process, the file open once."""
    store = LocalStore(out_dir, atomic_names=atomic_names)
    with open_input(source, name=plan.source) as opened:
        for item in items:
            yield execute_item(opened.h5, plan, item, store, source=opened.reader, progress=progress)


def _execute_in_pool(
    source: InputSource,
    plan: Plan,
    items: list[WorkItem],
    out_dir: str | os.PathLike[str],
    n_workers: int,
    progress: Progress | None,
    *,
    atomic_names: bool,
) -> Iterator[ItemResult]:
    """A process pool of ``n_workers``, each with the file open once; results as items finish."""
    context = pool_context()
    written = context.Value("q", 0) if progress else None
    initargs = (source, plan.model_dump_json(), os.fspath(out_dir), atomic_names, os.getpid(), written)
    pool: ProcessPoolExecutor | None = None
    finished = False
    shown = 0
    try:
        # Started whole before a signal is acted on: a fork cut by one would leave a worker unrecorded
        # (never killed: the exit would wait for it for ever), or lose the signal (at-fork callbacks).
        with signals.deferred():
            pool = ProcessPoolExecutor(n_workers, mp_context=context, initializer=_init_worker, initargs=initargs)
            pending = {pool.submit(_run_item, item) for item in items}
        while pending:
            # A short timeout: the progress bar moves between items, and signals are handled at once.
            done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            shown = _forward(written, shown, progress)
            for fut in done:
                exc = fut.exception()
                if exc is not None:
                    raise exc
                yield fut.result()
        finished = True
    finally:
        with signals.deferred():
            if pool is not None and finished:
                pool.shutdown(wait=True)
                _forward(written, shown, progress)  # the last chunks' bytes: the bar ends at its total
            elif pool is not None:
                stop_pool(pool)


def _forward(written: Synchronized[int] | None, shown: int, progress: Progress | None) -> int:
    """Tell ``progress`` what the workers added to ``written`` since ``shown``; the new total."""
    now = written.value if written is not None else 0
    if progress is not None and now > shown:
        progress(now - shown)
    return max(now, shown)


def stop_pool(pool: ProcessPoolExecutor) -> None:
    """Kill the pool's workers now (their output is in a staging folder that is thrown away); run
    with stop signals deferred, so no worker is left behind."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        with contextlib.suppress(OSError, ValueError):
            process.kill()
    for process in processes:
        with contextlib.suppress(OSError, ValueError, AssertionError):
            process.join(timeout=2)
