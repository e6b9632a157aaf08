"""Converting one file on this machine: plan it, run its work items in the local pool, write the
channel metadata and the bundle's reduce, and publish the output.

Output is staged in a folder beside the final one and swapped in whole only when every work item
and the channel metadata are written (:mod:`nwb2pennsieve.output.publish`), so a failed or
interrupted conversion publishes nothing and a new one replaces the old output entirely.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..bundle.finish import finish_bundle
from ..bundle.metadata import ASSET_PROPERTIES
from ..bundle.series import PartialSpill, bundle_name
from ..bundle.tszarr.finish import finish_tszarr
from ..errors import InvalidInputError, OutputWriteError, StorageError
from ..options import ConversionOptions
from ..output.publish import OutputFolder, OutputMarker, now_utc
from ..output.storage import LocalStore
from ..plan.models import Plan
from ..plan.sources import NdjsonSource
from ..source.inputs import InputSource, check_unchanged, open_input
from ..testing_seams import checkpoint
from ..write.chunks import write_channel_metadata
from .planning import plan_file
from .pool import Progress, execute_items


@dataclass
class ConversionResult:
    source: str
    output_dir: Path
    plan: Plan
    files: int = 0  # chunk files
    payload_bytes: int = 0  # their float64 bytes
    stored_bytes: int = 0  # their bytes on disk (gzip)
    seconds: float = 0.0
    metadata_files: list[str] = field(default_factory=list)
    disk_bytes: int = 0  # the chunk files' and channel metadata's bytes on disk
    bundle_bytes: int = 0  # the viewer bundle's files on disk (<stem>.zarr/, asset-properties.json, annotations)
    annotation_files: list[str] = field(default_factory=list)  # written beside the TS-Zarr bundle
    warnings: list[str] = field(default_factory=list)  # from the bundle's last step
    event_channels: int = 0  # the TS-Zarr bundle's
    notes: list[str] = field(default_factory=list)  # lines for stderr: another input's output replaced, ...

    @property
    def channels(self) -> int:
        return sum(len(s.channels) for s in self.plan.series) + sum(len(s.channels) for s in self.plan.aux_series)

    def summary_line(self) -> str:
        """What the output folder holds and how fast the samples went, e.g. ``FILE: 16 channels, 40
        files (24 chunk files + 16 channel metadata), 0.4 MB in 0.31 s (1.4 MB of samples, 4.6 MB/s)
        -> OUT``: files and MB are those on disk, at any GZIP_LEVEL; with the bundle, ``, bundle 3.1
        MB`` after the chunk files (or in their place without them)."""
        parts = []
        if self.plan.writes_chunks:
            metadata = len(self.metadata_files)
            counted = f"{self.files + metadata} files ({self.files} chunk files + {metadata} channel metadata)"
            parts.append(f"{counted}, {self.disk_bytes / 1e6:.1f} MB")
        if self.plan.writes_bundle:
            parts.append(f"bundle {self.bundle_bytes / 1e6:.1f} MB")
        samples = sum(i.output_bytes for i in self.plan.work_items) / 1e6
        rate = f", {samples / self.seconds:.1f} MB/s" if self.seconds > 0 else ""
        took = f"in {self.seconds:.2f} s ({samples:.1f} MB of samples{rate})"
        events = f" + {self.event_channels} event channels" if self.event_channels else ""
        return f"{self.source}: {self.channels} channels{events}, {', '.join(parts)} {took} -> {self.output_dir}"


def check_free_space(plan: Plan, output: Path) -> None:
    """Refuse, before writing, a conversion whose output would not fit the output file system."""
    needed = plan.output_bytes()
    free = shutil.disk_usage(output).free
    if needed > free:
        raise StorageError(
            f"its output needs {needed / 1e9:,.3f} GB but the file system of {output} has {free / 1e9:,.3f} GB free",
            file=plan.source,
        )


# The bundle's partial results wait on disk for the reduce (:class:`PartialSpill`): in a hidden
# folder of the staging folder (the output's disk; a killed run's is cleared with it), removed
# before the output is published.
PARTIALS_FOLDER = ".bundle-partials"


def convert_file(
    path: str | os.PathLike[str] | InputSource,
    output_dir: str | os.PathLike[str],
    plan: Plan | ConversionOptions,
    *,
    workers: int | None = None,
    progress: Progress | None = None,
    stall_s: float = 0.0,
) -> ConversionResult:
    """Convert one NWB file into ``output_dir`` (chunk files + channel metadata, and/or the viewer
    bundle ``<stem>.zarr`` with ``asset-properties.json``, per the plan's options).

    ``plan`` is the file's plan when the caller has made it already, else the options to make it
    with (in this process). ``stall_s``: how long the pool may go without reading (READ_STALL_S).
    """
    started = time.perf_counter()
    path = InputSource.parse(path)
    if isinstance(plan, ConversionOptions):
        plan = plan_file(path, plan)
    checkpoint("planned")
    result = ConversionResult(source=plan.source, output_dir=Path(output_dir), plan=plan)
    with OutputFolder(result.output_dir) as folder:
        check_free_space(plan, folder.staging)
        try:
            _write_staging(path, plan, folder.staging, result, workers=workers, progress=progress, stall_s=stall_s)
        except OutputWriteError as exc:
            raise folder.error("cannot write it", exc.cause) from None
        except OSError as exc:
            raise folder.error("cannot write it", exc) from None
        checkpoint("items-done")
        # Every worker checked the input it opened; the name may have been given another file since,
        # or the file rewritten or cut in place: the output is published only for the version planned.
        check_unchanged(path, plan.source_identity, plan.source)
        folder.publish(_marker(plan, folder.staging))
    result.notes = folder.notes
    result.seconds = time.perf_counter() - started
    return result


def _write_staging(
    path: InputSource,
    plan: Plan,
    staging: Path,
    result: ConversionResult,
    *,
    workers: int | None,
    progress: Progress | None,
    stall_s: float = 0.0,
) -> None:
    """Every work item, the channel metadata and the bundle's reduce, into the staging folder."""
    # staging is private and published whole, so its files need no temporary names
    store = LocalStore(staging, atomic_names=False)
    spilled = staging / PARTIALS_FOLDER
    spill = PartialSpill(spilled)
    results = execute_items(
        path, plan, staging, workers=workers, progress=progress, atomic_names=False, stall_s=stall_s
    )
    for item_result in results:
        result.files += item_result.files
        result.payload_bytes += item_result.payload_bytes
        result.stored_bytes += item_result.stored_bytes
        if item_result.partials:
            spill.add(item_result.partials)
    if plan.writes_chunks:
        result.metadata_files = write_channel_metadata(plan, store)
        result.disk_bytes = result.stored_bytes + sum((staging / name).stat().st_size for name in result.metadata_files)
    if plan.writes_bundle:
        # The reduce and the bundle's metadata, inside the staging folder: published with it.
        with open_input(path, name=plan.source, expect=plan.source_identity) as opened:
            if plan.options.tszarr:
                finished = finish_tszarr(store, plan, opened.h5, spill.blocks(), read_local_file)
                result.annotation_files, result.warnings = finished.files, finished.warnings
                result.event_channels = finished.groups - result.channels
            else:
                finish_bundle(store, plan, opened.h5, spill.blocks())
        beside = [ASSET_PROPERTIES, *result.annotation_files]
        result.bundle_bytes = tree_bytes(staging / bundle_name(plan)) + sum(
            (staging / n).stat().st_size for n in beside
        )
    shutil.rmtree(spilled, ignore_errors=True)


def read_local_file(source: NdjsonSource) -> bytes:
    """An annotation file beside a local input, read again by the bundle's last step."""
    try:
        return Path(source.location).read_bytes()
    except OSError as exc:
        raise InvalidInputError(
            f"annotation file {source.file} cannot be read ({exc.strerror or exc})", file=source.location
        ) from None


def _marker(plan: Plan, staging: Path) -> OutputMarker:
    bundle = [bundle_name(plan) + "/"] if plan.writes_bundle else []
    # The version converted, as planned (a URL's has no mtime: none recorded).
    identity = plan.source_identity if plan.source_identity and plan.source_identity.mtime_ns else None
    return OutputMarker(
        source=plan.source,
        source_bytes=identity.size if identity else None,
        source_mtime_ns=identity.mtime_ns if identity else None,
        options=plan.options,
        files=sorted(LocalStore(staging).list_names()) + bundle,
        written_at=now_utc(),
    )


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
