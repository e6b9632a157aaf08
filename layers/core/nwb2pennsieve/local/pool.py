"""The local pool: a process pool over the very work items the cloud fans out.

Workers take orders only from the parent: they ignore Ctrl-C and SIGHUP (a terminal sends those
to the whole process group), end silently on SIGTERM (the executor's way to end the others when
one dies), and die with the parent (``PR_SET_PDEATHSIG`` on Linux, a watchdog thread elsewhere).
When the parent stops (error, Ctrl-C, SIGTERM) it kills its workers at once rather than waiting for
their work items to end; the pool is started, and stopped, with stop signals deferred
(:mod:`nwb2pennsieve.signals`), so its table of workers is whole whenever it is stopped. A worker
that dies ends the conversion in one line naming the series; so does a pool that reads nothing
for READ_STALL_S. Progress is counted in float64 bytes of finished chunks (the unit of the plan's
``output_bytes``, whatever the gzip level), through a counter the workers share with the parent;
another counter, of blocks read, tells the watchdog that reading moves.
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
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from functools import partial
from multiprocessing import get_all_start_methods, get_context
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from multiprocessing.sharedctypes import Synchronized
from typing import Any, TextIO

import h5py

from .. import signals
from ..errors import InvalidSeriesError
from ..output.storage import LocalStore
from ..plan.items import recut_items
from ..plan.models import ItemResult, Plan, WorkItem
from ..source.decoders import read_through_plugin
from ..source.inputs import InputSource, OpenedInput, open_input
from ..testing_seams import checkpoint
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
    activity: Any = None,
) -> None:
    signals.ignore()  # Ctrl-C and SIGHUP reach the whole process group: the parent decides, and kills us
    # But a worker told to end (the executor terminates the others when one dies) just ends, silently.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if parent_pid is not None:
        die_with_parent(parent_pid)
    quiet_warnings()
    fix_mmap_threshold()
    # A filter plugin's printf must never reach the command's stdout (``plan`` prints JSON there).
    with contextlib.suppress(OSError):
        os.dup2(2, 1)
    _worker["progress"] = None if written is None else partial(_add, written)
    _worker["beat"] = None if activity is None else partial(_beat, activity)
    plan = _worker["plan"] = Plan.model_validate_json(plan_json)
    try:
        _worker["input"] = open_input(path, name=plan.source, expect=plan.source_identity)
    except Exception as exc:  # raised by the first item: an initializer's error only breaks the pool
        _worker["error"] = exc
    _worker["store"] = LocalStore(staging, atomic_names=atomic_names)


def _add(counter: Synchronized[int], nbytes: int) -> None:
    with counter.get_lock():
        counter.value += nbytes


def _beat(activity: Any) -> None:
    # Unlocked: two workers may lose an increment, but the value still moves, which is all it says.
    activity.value += 1


def _run_item(item: WorkItem) -> ItemResult:
    plan = _worker["plan"]
    assert isinstance(plan, Plan)
    if "error" in _worker:
        raise _worker["error"]  # type: ignore[misc]
    opened = _worker["input"]
    assert isinstance(opened, OpenedInput)
    checkpoint("reading")
    return execute_item(
        opened.h5,
        plan,
        item,
        _worker["store"],  # type: ignore[arg-type]
        source=opened.reader,
        progress=_worker["progress"],  # type: ignore[arg-type]
        on_block=_worker["beat"],  # type: ignore[arg-type]
    )


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
    stall_s: float = 0.0,
) -> Iterator[ItemResult]:
    """Write every work item of ``plan`` into ``out_dir``; yield each item's result as it finishes.

    One worker (or one item) runs in this process, unless a series is read through a filter
    plugin we have no checking decoder for (Blosc2, ...): then in one worker process, so a crash
    of the plugin is one line, not the command's death. More run in a process pool, each worker
    with the file open once. A worker that dies (a signal) ends the conversion in one line naming
    the series it was reading; with ``stall_s`` (READ_STALL_S), so does a pool where no worker has
    read a block of rows for that long (a filter looping on damaged data). ``progress`` is called
    with the float64 bytes of each chunk as it is written (they add up to the items'
    ``output_bytes``). The first failure, or an
    interruption (KeyboardInterrupt, or what a signal handler raises), kills the workers at once
    and is raised. ``atomic_names=False`` writes files straight under their names (for a private
    staging directory, see :class:`LocalStore`).
    """
    release_free_heap()
    fix_mmap_threshold()
    requested = workers or default_workers()
    items = recut_items(plan, requested) if requested > 1 or plan.writes_bundle else plan.work_items
    n_workers = min(requested, len(items))
    source = InputSource.parse(path)
    if n_workers <= 1 and not any(read_through_plugin(s.compression) for s in plan.series):
        yield from _execute_here(source, plan, items, out_dir, progress=progress, atomic_names=atomic_names)
    else:
        run = _PoolRun(source, plan, items, max(1, n_workers), progress, stall_s)
        yield from run.results(out_dir, atomic_names=atomic_names)


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
    with open_input(source, name=plan.source, expect=plan.source_identity) as opened:
        for item in items:
            yield execute_item(opened.h5, plan, item, store, source=opened.reader, progress=progress)


class _PoolRun:
    """A process pool of ``n_workers`` over ``items``, each worker with the file open once."""

    def __init__(
        self,
        source: InputSource,
        plan: Plan,
        items: list[WorkItem],
        n_workers: int,
        progress: Progress | None,
        stall_s: float,
    ) -> None:
        self.source, self.plan, self.items, self.n_workers = source, plan, items, n_workers
        self.progress, self.stall_s = progress, stall_s
        self.processes: set[BaseProcess] = set()
        self.shown = 0  # the float64 bytes told to ``progress`` so far

    def results(self, out_dir: str | os.PathLike[str], *, atomic_names: bool) -> Iterator[ItemResult]:
        """Results as items finish; the first failure (or an interruption) kills the workers and is raised."""
        context = pool_context()
        written = context.Value("q", 0) if self.progress else None
        activity = context.RawValue("q", 0)
        plan_json = self.plan.model_dump_json()
        initargs = (self.source, plan_json, os.fspath(out_dir), atomic_names, os.getpid(), written, activity)
        pool: ProcessPoolExecutor | None = None
        finished = False
        try:
            # Started whole before a signal is acted on: a fork cut by one would leave a worker
            # unrecorded (never killed: the exit would wait for it for ever), or lose the signal.
            with signals.deferred():
                pool = ProcessPoolExecutor(
                    self.n_workers, mp_context=context, initializer=_init_worker, initargs=initargs
                )
                try:
                    futures = {pool.submit(_run_item, item): item for item in self.items}
                except BrokenProcessPool:  # a worker died before every item was handed out
                    raise self._died([]) from None
            yield from self._wait(pool, futures, written, activity)
            finished = True
        finally:
            with signals.deferred():
                if pool is not None and finished:
                    pool.shutdown(wait=True)
                    self._forward(written)  # the last blocks' bytes: the bar ends at its total
                elif pool is not None:
                    stop_pool(pool)

    def _wait(
        self,
        pool: ProcessPoolExecutor,
        futures: dict[Future[ItemResult], WorkItem],
        written: Synchronized[int] | None,
        activity: Any,
    ) -> Iterator[ItemResult]:
        pending = set(futures)
        beats = 0
        moved = time.monotonic()
        while pending:
            self.processes.update((getattr(pool, "_processes", None) or {}).values())
            # A short timeout: the progress bar moves between items, and signals are handled at once.
            done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            self._forward(written)
            if done or activity.value != beats:
                beats, moved = activity.value, time.monotonic()
            elif self.stall_s and time.monotonic() - moved > self.stall_s:
                raise self._stalled([futures[f] for f in pending if f.running()])
            for fut in done:
                exc = fut.exception()
                if isinstance(exc, BrokenProcessPool):
                    running = [futures[f] for f in pending | done if f.running() or f is fut]
                    raise self._died(running) from None
                if exc is not None:
                    raise exc
                yield fut.result()

    def _forward(self, written: Synchronized[int] | None) -> None:
        """Tell ``progress`` what the workers added to ``written`` since last time."""
        now = written.value if written is not None else 0
        if self.progress is not None and now > self.shown:
            self.progress(now - self.shown)
            self.shown = now

    def _series(self, items: list[WorkItem]) -> str | None:
        """The series the items read, when it is one (any item's when none is known to run)."""
        paths = {self.plan.series_of(i).path for i in items or self.items}
        return paths.pop() if len(paths) == 1 else None

    def _stalled(self, running: list[WorkItem]) -> InvalidSeriesError:
        return InvalidSeriesError(
            f"reading its data made no progress for {self.stall_s:g} s (READ_STALL_S), so the workers were "
            "stopped: a decompression filter may be looping on damaged data (raise READ_STALL_S for a slow disk)",
            file=self.plan.source,
            series=self._series(running),
        )

    def _exit_code(self) -> int | None:
        """The exit code of the worker that died (the executor's thread may still be reaping it)."""
        deadline = time.monotonic() + 2.0
        while True:
            codes = [p.exitcode for p in self.processes]
            if None not in codes or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        # The executor terminates (SIGTERM) the others once one has died: the crash is the news.
        dead = [c for c in codes if c is not None and c not in (0, -signal.SIGTERM)]
        crashed = [c for c in dead if c < 0 and -c in _CRASH_SIGNALS]
        return (crashed or dead)[0] if dead else None

    def _died(self, running: list[WorkItem]) -> InvalidSeriesError:
        code = self._exit_code()
        if code is not None and code < 0 and -code in _CRASH_SIGNALS:
            how = f"crashed a worker process ({signal.Signals(-code).name})"
            reason = f"reading its data {how}: a decompression filter failed on damaged data, so the file is damaged"
        elif code == -signal.SIGKILL:
            reason = "a worker process was killed (SIGKILL) while reading its data, perhaps for lack of memory"
        else:
            how = f"signal {-code}" if code is not None and code < 0 else f"exit status {code}"
            reason = f"a worker process ended unexpectedly ({how}) while reading its data"
        return InvalidSeriesError(reason, file=self.plan.source, series=self._series(running))


_CRASH_SIGNALS = {signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGABRT}


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
