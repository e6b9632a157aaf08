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
from multiprocessing.context import BaseContext
from pathlib import Path

import h5py

from .bundle.finish import finish_bundle
from .bundle.series import unpack_partials
from .config import DEFAULT_BUNDLE_ZSTD_LEVEL, DEFAULT_CHUNK_SIZE_MB, DEFAULT_MAX_ITEM_MB, DEFAULT_OUTPUT_FORMATS
from .errors import Nwb2PennsieveError, StorageError
from .items import execute_item
from .models import ItemResult, Plan, WorkItem
from .nwb import open_nwb
from .planner import build_plan, work_items
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
    path: str | os.PathLike[str],
    *,
    chunk_size_mb: float = DEFAULT_CHUNK_SIZE_MB,
    max_item_mb: float = DEFAULT_MAX_ITEM_MB,
    skip_invalid_series: bool = False,
    output_formats: str = DEFAULT_OUTPUT_FORMATS,
    bundle_zstd_level: int = DEFAULT_BUNDLE_ZSTD_LEVEL,
) -> Plan:
    name = os.path.basename(os.fspath(path))
    with open_nwb(path, name=name) as h5:
        return build_plan(
            h5,
            source=name,
            chunk_size_mb=chunk_size_mb,
            max_item_mb=max_item_mb,
            skip_invalid_series=skip_invalid_series,
            output_formats=output_formats,
            bundle_zstd_level=bundle_zstd_level,
        )


def convert_file(
    path: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    *,
    chunk_size_mb: float = DEFAULT_CHUNK_SIZE_MB,
    max_item_mb: float = DEFAULT_MAX_ITEM_MB,
    workers: int | None = None,
    skip_invalid_series: bool = False,
    progress: Progress | None = None,
    plan: Plan | None = None,
    output_formats: str = DEFAULT_OUTPUT_FORMATS,
    bundle_zstd_level: int = DEFAULT_BUNDLE_ZSTD_LEVEL,
) -> ConversionResult:
    """Convert one NWB file into ``output_dir`` (chunk files + channel metadata, and/or the viewer
    bundle ``<stem>.zarr`` with ``asset-properties.json``, per ``output_formats``).

    ``plan`` is the file's plan when the caller has made it already (the other options are then
    those it was made with).
    """
    started = time.perf_counter()
    path = Path(path)
    output = Path(output_dir)
    if plan is None:
        plan = plan_file(
            path,
            chunk_size_mb=chunk_size_mb,
            max_item_mb=max_item_mb,
            skip_invalid_series=skip_invalid_series,
            output_formats=output_formats,
            bundle_zstd_level=bundle_zstd_level,
        )
    result = ConversionResult(source=plan.source, output_dir=output, plan=plan)
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create the output directory {output} ({exc.strerror or exc})") from None
    staging = output / f".staging-{path.stem}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        # staging is private and published whole, so its files need no temporary names
        store = LocalStore(staging, atomic_names=False)
        partials = []
        for item_result in execute_items(path, plan, staging, workers=workers, progress=progress, atomic_names=False):
            result.files += item_result.files
            result.payload_bytes += item_result.payload_bytes
            if item_result.partials:
                partials.extend(unpack_partials(item_result.partials))
        if plan.writes_chunks:
            result.metadata_files = write_channel_metadata(plan, store)
        if plan.writes_bundle:
            # The reduce and the bundle's metadata, inside the staged output: published with it.
            with open_nwb(path, name=plan.source) as h5:
                finish_bundle(store, plan, h5, partials, zstd_level=plan.bundle_zstd_level)
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
        target = output / entry.name
        if entry.is_dir() and target.is_dir():  # a bundle of an earlier conversion
            shutil.rmtree(target)
        os.replace(entry.path, target)


# --- the pool -------------------------------------------------------------------------------

_worker: dict[str, object] = {}


def _init_worker(path: str, plan_json: str, staging: str, atomic_names: bool = True) -> None:
    fix_mmap_threshold()
    _worker["h5"] = open_nwb(path)
    _worker["plan"] = Plan.model_validate_json(plan_json)
    _worker["store"] = LocalStore(staging, atomic_names=atomic_names)


def _run_item(item: WorkItem) -> ItemResult:
    plan = _worker["plan"]
    assert isinstance(plan, Plan)
    h5 = _worker["h5"]
    assert isinstance(h5, h5py.File)
    return execute_item(h5, plan, item, _worker["store"])  # type: ignore[arg-type]


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
        bundle = plan.writes_bundle  # the re-cut items keep to the bundle's shard windows
        items = [i for s in plan.series for i in work_items(s, plan.chunk_samples, budget_mb, bundle=bundle)]
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
    path: str | os.PathLike[str],
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
        with open_nwb(path, name=plan.source) as h5:
            for item in plan.work_items:
                r = execute_item(h5, plan, item, store)
                if progress:
                    progress(item.output_bytes)
                yield r
        return
    with ProcessPoolExecutor(
        max_workers=n_workers,
        mp_context=pool_context(),
        initializer=_init_worker,
        initargs=(os.fspath(path), plan.model_dump_json(), os.fspath(out_dir), atomic_names),
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
