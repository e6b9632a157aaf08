"""Reading NWB files with h5py alone, following the NWB schema by its ``neurodata_type`` attributes.

pynwb is not needed at run time: it would pull pandas into the Lambda layer and make many more
reads when a file is opened over S3. Everything here works on an open :class:`h5py.File`, which
may sit on a local path, a Python file object (an S3 range reader) or a test file.
"""

from __future__ import annotations

import json
import logging
import os
import re
import stat
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, BinaryIO

import h5py
import numpy as np

from ..errors import ElectrodesError, InvalidInputError, InvalidSeriesError

log = logging.getLogger(__name__)


def _register_compression_filters() -> None:
    """Register hdf5plugin's HDF5 filters (Blosc, Blosc2, Zstd, LZ4, Bitshuffle, BZip2, ...).

    neuroconv writes them; without them HDF5 looks for a plugin directory and fails. Importing
    ``hdf5plugin`` registers every filter it ships, for every file this process opens. A filter
    left out of the Lambda layer (the lossy SZ/SZ3) makes hdf5plugin log an error on import: that
    is not one here (a file using it fails with a clear line when read).
    """
    plugin_log = logging.getLogger("hdf5plugin")
    level = plugin_log.level
    plugin_log.setLevel(logging.CRITICAL)
    try:
        import hdf5plugin  # noqa: F401 - imported for its side effect: registering the filters
    finally:
        plugin_log.setLevel(level)


_register_compression_filters()

ELECTRICAL_SERIES = "ElectricalSeries"
SPIKE_EVENT_SERIES = "SpikeEventSeries"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# µV per unit. NWB writes "volts"; other tools write the rest. pynwb always reports "volts",
# so the unit is read from the data's own attribute.
UNIT_FACTORS: dict[str, float] = {
    "volts": 1e6,
    "volt": 1e6,
    "v": 1e6,
    "millivolts": 1e3,
    "millivolt": 1e3,
    "mv": 1e3,
    "microvolts": 1.0,
    "microvolt": 1.0,
    "uv": 1.0,
    "\u00b5v": 1.0,  # micro sign
    "\u03bcv": 1.0,  # Greek mu
}


def unit_factor(unit: str) -> float | None:
    """µV per ``unit``, or None for a unit that is not a voltage we know."""
    return UNIT_FACTORS.get(unit.strip().lower())


def text(value: Any) -> str:
    """Decode an HDF5 string (vlen str, bytes, fixed-length ``np.bytes_``) and strip it."""
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.reshape(-1)[0]
    if isinstance(value, bytes | np.bytes_):
        value = bytes(value).decode("utf-8", errors="replace")
    return str(value).replace("\x00", "").strip()


def open_nwb(
    source: str | os.PathLike[str] | BinaryIO,
    *,
    name: str | None = None,
    cache_bytes: int = 32 * 1024 * 1024,
) -> h5py.File:
    """Open an NWB file read-only and check that it is one.

    ``source`` is a path or a binary file object (e.g. an S3 range reader). ``name`` is what errors
    call the file (default: the path's base name). Raises :class:`InvalidInputError` for an empty,
    non-HDF5, truncated or non-NWB file.
    """
    label = name or (os.path.basename(os.fspath(source)) if isinstance(source, str | os.PathLike) else "input")
    if isinstance(source, str | os.PathLike):
        size = _regular_file_size(source, label)
        if size == 0:
            raise InvalidInputError("the file is empty (0 bytes)", file=label)
        try:
            if not h5py.is_hdf5(source):
                raise InvalidInputError("not an HDF5 file, so not an NWB file", file=label)
        except OSError as exc:
            raise InvalidInputError(f"cannot read the file ({exc})", file=label) from None
    try:
        h5 = h5py.File(source, "r", rdcc_nbytes=cache_bytes, rdcc_nslots=10007)
    except OSError as exc:
        msg = str(exc)
        if "truncated" in msg:
            reason = "the HDF5 file is truncated (its end is missing)"
        elif "signature" in msg or "not an hdf5" in msg.lower():
            reason = "not an HDF5 file, so not an NWB file"
        else:
            reason = f"cannot open as HDF5 ({damage_reason(exc)})"
        raise InvalidInputError(reason, file=label) from None
    try:
        root_type = text(h5.attrs.get("neurodata_type", ""))
        found = text(h5.attrs.get("data_type", "")) or root_type or "none"
    except (KeyError, OSError, RuntimeError, ValueError, TypeError) as exc:
        h5.close()
        raise InvalidInputError(f"its root attributes cannot be read ({damage_reason(exc)})", file=label) from None
    if root_type != "NWBFile":
        h5.close()
        raise InvalidInputError(f"not an NWB file (the root is not an NWBFile; its data type is {found})", file=label)
    return h5


def _regular_file_size(path: str | os.PathLike[str], label: str) -> int:
    """The size of ``path``, a regular file, or :class:`InvalidInputError` saying what it is instead.

    Never opens it first: reading a named pipe would block, a device would never end.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise InvalidInputError(
                f"it is a symbolic link to {os.readlink(path)}, which does not exist", file=label
            ) from None
        raise InvalidInputError("there is no such file", file=label) from None
    except OSError as exc:
        raise InvalidInputError(f"cannot read the file ({exc.strerror or exc})", file=label) from None
    kind = (
        "a named pipe (FIFO)"
        if stat.S_ISFIFO(info.st_mode)
        else "a character device"
        if stat.S_ISCHR(info.st_mode)
        else "a block device"
        if stat.S_ISBLK(info.st_mode)
        else "a socket"
        if stat.S_ISSOCK(info.st_mode)
        else "a directory"
        if stat.S_ISDIR(info.st_mode)
        else None
    )
    if kind is not None:
        raise InvalidInputError(f"it is {kind}, not a file: give the NWB file itself", file=label)
    return info.st_size


def _iso_time(h5: h5py.File, key: str) -> tuple[str, int, bool]:
    try:
        raw = text(h5[key][()])
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise InvalidInputError(f"its {key} cannot be read: {damage_reason(exc)}") from None
    try:
        when = datetime.fromisoformat(raw.replace("Z", "+00:00") if raw.endswith("Z") else raw)
    except ValueError:
        raise InvalidInputError(f"{key} {raw!r} is not an ISO 8601 time") from None
    naive = when.tzinfo is None
    if naive:
        when = when.replace(tzinfo=UTC)
    return raw, (when - _EPOCH) // timedelta(microseconds=1), naive


def session_start(h5: h5py.File) -> tuple[str, int, bool]:
    """(ISO text as stored, µs since the Unix epoch, whether it was naive and taken as UTC)."""
    if "session_start_time" not in h5:
        raise InvalidInputError("the file has no session_start_time")
    return _iso_time(h5, "session_start_time")


def timestamps_reference(h5: h5py.File) -> tuple[str, int, bool] | None:
    """``timestamps_reference_time`` like :func:`session_start`, or None when the file has none.

    The NWB schema makes every time in the file relative to it; it defaults to the session start.
    """
    if "timestamps_reference_time" not in h5:
        return None
    return _iso_time(h5, "timestamps_reference_time")


# Phrases of HDF5's own error text, and what they mean for a user. Raw library text is never the
# message: it is reduced to one of these (the file is damaged or truncated).
_DAMAGE = (
    ("unable to open external file", "it links to an external file that is missing"),
    ("external link", "it links to an external file that cannot be opened"),
    ("filter returned failure", "a compressed chunk does not decompress or a chunk's checksum does not match"),
    ("inflate", "a compressed chunk does not decompress"),
    ("ran off end of input buffer", "its data ends early"),
    ("truncated", "its data ends early"),
    ("addr overflow", "its data ends early"),
    ("link iteration failed", "its links cannot be listed"),
    ("iterate over links", "its links cannot be listed"),
    ("object header", "an object header is damaged"),
    ("bad symbol table", "a group's symbol table is damaged"),
    ("b-tree", "an index (B-tree) is damaged"),
    ("btree", "an index (B-tree) is damaged"),
    ("checksum", "a checksum does not match"),
    ("heap", "a heap is damaged"),
)


# HDF5 looking for a filter it does not have: the file is fine, this build cannot decode it.
_NO_FILTER = ("can't open directory", "required filter", "plugin")


def damage_reason(exc: BaseException) -> str:
    """One short clause for an h5py/HDF5 error: what is damaged (or missing), never the raw library text."""
    msg = str(exc).lower()
    external = re.search(r"external link file name = '([^']*)'", str(exc))
    if external and "unable to open external file" in msg:
        return f"it links to the external file {external[1]!r}, which is missing or unreadable"
    if any(phrase in msg for phrase in _NO_FILTER):
        return "its data is stored with an HDF5 filter (compression plugin) that is not available here"
    for phrase, meaning in _DAMAGE:
        if phrase in msg:
            return f"{meaning}: the file is damaged or truncated"
    return "HDF5 cannot read it: the file is damaged or truncated"


_H5_ERRORS = (KeyError, OSError, RuntimeError, ValueError, TypeError)


def link_reason(group: h5py.Group, key: str, exc: BaseException) -> str:
    """Why ``group[key]`` cannot be opened: a missing external file or dangling soft link, else damage."""
    try:
        link = group.get(key, getlink=True)
    except _H5_ERRORS:
        return damage_reason(exc)
    if isinstance(link, h5py.ExternalLink):
        return f"it links to the external file {link.filename!r}, which is missing or unreadable"
    if isinstance(link, h5py.SoftLink):
        return f"it is a soft link to {link.path}, which does not exist"
    return damage_reason(exc)


def child(group: h5py.Group, key: str, what: str) -> h5py.Group | h5py.Dataset | None:
    """``group[key]``, None when there is no such link, or :class:`InvalidSeriesError` saying why it
    cannot be opened (``group.get`` would return None for a damaged object too, and ``key in group``
    is false for a dangling soft link or an external link to a missing file)."""
    try:
        link = group.get(key, getlink=True)
    except _H5_ERRORS as exc:
        raise InvalidSeriesError(f"its {what} cannot be read: {damage_reason(exc)}") from None
    if link is None:
        return None
    try:
        obj = group[key]
    except _H5_ERRORS as exc:
        raise InvalidSeriesError(f"its {what} cannot be read: {link_reason(group, key, exc)}") from None
    return obj if isinstance(obj, h5py.Group | h5py.Dataset) else None


def missing_virtual_sources(ds: h5py.Dataset) -> list[str]:
    """The source files of a virtual dataset (HDF5 VDS) that cannot be found or lack their dataset.

    HDF5 reads a missing source as the fill value without an error, so this is checked up front.
    Relative names are looked up beside the file, then in the working directory (HDF5's order).
    """
    if not ds.is_virtual:
        return []
    here = ds.file.filename
    base = os.path.dirname(here) if isinstance(here, str) and os.path.exists(here) else None
    missing: list[str] = []
    for source in ds.virtual_sources():
        name = source.file_name
        if name == ".":
            if source.dset_name not in ds.file:
                missing.append(f"{name} (dataset {source.dset_name})")
            continue
        candidates = [name] if os.path.isabs(name) else [os.path.join(base, name)] if base else []
        if not os.path.isabs(name):
            candidates.append(name)
        found = next((c for c in candidates if os.path.isfile(c)), None)
        if found is None:
            missing.append(name)
            continue
        try:
            with h5py.File(found, "r") as src:
                if not isinstance(src.get(source.dset_name), h5py.Dataset):
                    missing.append(f"{name} (dataset {source.dset_name})")
        except OSError:
            missing.append(name)
    return sorted(set(missing))


# The core NWB types (and hdmf-common's) that are TimeSeries: none but ElectricalSeries and
# SpikeEventSeries is one, so these are reported as not converted without reading the file's
# cached schema (/specifications, which a damaged file can send HDF5 looping through).
CORE_TIME_SERIES = frozenset(
    {
        "AbstractFeatureSeries", "AnnotationSeries", "CurrentClampSeries", "CurrentClampStimulusSeries",
        "DecompositionSeries", "IZeroClampSeries", "ImageMaskSeries", "ImageSeries", "IndexSeries",
        "IntervalSeries", "OnePhotonSeries", "OpticalSeries", "OptogeneticSeries", "PatchClampSeries",
        "RoiResponseSeries", "SpatialSeries", "TimeSeries", "TwoPhotonSeries", "VoltageClampSeries",
        "VoltageClampStimulusSeries",
    }
)  # fmt: skip
# The other core NWB / hdmf-common / hdmf-experimental types (past names included): never a series.
CORE_OTHER_TYPES = frozenset(
    {
        "AlignedDynamicTable", "BaseImage", "BehavioralEpochs", "BehavioralEvents", "BehavioralTimeSeries",
        "CSRMatrix", "ClusterWaveforms", "Clustering", "CompassDirection", "Container", "CorrectedImageStack",
        "Data", "Device", "DeviceModel", "DfOverF", "DurationVectorData", "DynamicTable", "DynamicTableRegion",
        "ElectrodeGroup", "ElectrodesTable", "ElementIdentifiers", "EnumData", "EventDetection", "EventWaveform",
        "EventsTable", "ExperimentalConditionsTable", "ExternalImage", "ExternalResources", "EyeTracking",
        "FeatureExtraction", "FilteredEphys", "Fluorescence", "FrequencyBandsTable", "GrayscaleImage", "HERD",
        "Image", "ImageReferences", "ImageSegmentation", "Images", "ImagingPlane", "ImagingRetinotopy", "Index",
        "IntracellularElectrode", "IntracellularElectrodesTable", "IntracellularRecordingsTable",
        "IntracellularResponsesTable", "IntracellularStimuliTable", "LFP", "LabMetaData", "MeaningsTable",
        "MotionCorrection", "NWBContainer", "NWBData", "NWBDataInterface", "NWBFile", "OpticalChannel",
        "OptogeneticStimulusSite", "PlaneSegmentation", "Position", "ProcessingModule", "PupilTracking",
        "RGBAImage", "RGBImage", "RepetitionsTable", "ScratchData", "SequentialRecordingsTable",
        "SimpleMultiContainer", "SimultaneousRecordingsTable", "Subject", "SweepTable", "TimeIntervals",
        "TimeSeriesReferenceVectorData", "TimestampVectorData", "Units", "VectorData", "VectorIndex", "VocabData",
    }
)  # fmt: skip
NOT_ELECTRICAL = "not an ElectricalSeries (only ElectricalSeries and types extending it are converted)"


class _TypeTree:
    """neurodata_type inheritance, from the schema cached in ``/specifications`` for extension types.

    Core types are known without reading the file; the cached schema is read only when the file
    holds a type that is not a core type, and then once.
    """

    def __init__(self, h5: h5py.File) -> None:
        self._h5 = h5
        self._parents: dict[str, str] | None = None

    def _load(self) -> dict[str, str]:
        parents: dict[str, str] = {}
        specs = self._h5.get("specifications")
        if isinstance(specs, h5py.Group):
            for ns in specs.values():
                for version in ns.values() if isinstance(ns, h5py.Group) else ():
                    for source, ds in version.items() if isinstance(version, h5py.Group) else ():
                        if source == "namespace" or not isinstance(ds, h5py.Dataset):
                            continue
                        try:
                            doc = json.loads(text(ds[()]))
                        except (ValueError, TypeError):
                            continue
                        _collect_types(doc, parents)
        return parents

    def core_ancestor(self, neurodata_type: str) -> str | None:
        """The nearest core type ``neurodata_type`` is or extends; None when the cached schema does not say."""
        if neurodata_type in CORE_TIME_SERIES or neurodata_type in CORE_OTHER_TYPES:
            return neurodata_type
        if neurodata_type in (ELECTRICAL_SERIES, SPIKE_EVENT_SERIES):
            return neurodata_type
        if self._parents is None:
            try:
                self._parents = self._load()
            except (KeyError, OSError, RuntimeError, ValueError) as exc:
                raise InvalidInputError(
                    f"its cached schema (/specifications) cannot be read, so the type {neurodata_type} "
                    f"cannot be checked: {damage_reason(exc)}"
                ) from None
        seen = set()
        current = neurodata_type
        while current in self._parents and current not in seen:
            seen.add(current)
            current = self._parents[current]
            if current in (ELECTRICAL_SERIES, SPIKE_EVENT_SERIES) or current in CORE_TIME_SERIES:
                return current
            if current in CORE_OTHER_TYPES:
                return current
        return None


def _collect_types(spec: Any, parents: dict[str, str]) -> None:
    if isinstance(spec, dict):
        child = spec.get("neurodata_type_def") or spec.get("data_type_def")
        parent = spec.get("neurodata_type_inc") or spec.get("data_type_inc")
        if isinstance(child, str) and isinstance(parent, str):
            parents[child] = parent
        for value in spec.values():
            _collect_types(value, parents)
    elif isinstance(spec, list):
        for value in spec:
            _collect_types(value, parents)


@dataclass(frozen=True)
class FoundSeries:
    path: str
    neurodata_type: str
    group: h5py.Group


@dataclass(frozen=True)
class UnreadableObject:
    """An object the search could not open or list: it may be a series, so it is never ignored."""

    path: str
    reason: str


@dataclass(frozen=True)
class OtherObject:
    """An object that may hold time series but is not an ElectricalSeries: reported, not converted."""

    path: str
    neurodata_type: str
    reason: str


@dataclass(frozen=True)
class FileContents:
    series: list[FoundSeries]
    other_types: list[str]
    unreadable: list[UnreadableObject]
    others: list[OtherObject]


def find_electrical_series(h5: h5py.File) -> FileContents:
    """Every ElectricalSeries (or subtype) in the file, sorted by HDF5 path, and what else it holds.

    Hard links and external links are followed; soft links are not (their target is found at its
    own path, and following them would list a series twice). An object that cannot be opened (a
    damaged object header, an external link to a missing file) or a group whose links cannot be
    listed is reported in ``unreadable``, never dropped. Other TimeSeries (and extension types the
    file caches no schema for) are listed in ``others``. The cached schema is read only when a
    type is not a core type.
    """
    types = _TypeTree(h5)
    found: list[FoundSeries] = []
    other_types: set[str] = set()
    unreadable: list[UnreadableObject] = []
    others: list[OtherObject] = []
    seen: set[tuple[str, int]] = set()

    def walk(group: h5py.Group, path: str) -> None:
        try:
            keys = sorted(group.keys())
        except (KeyError, OSError, RuntimeError, ValueError) as exc:
            unreadable.append(UnreadableObject(path or "/", damage_reason(exc)))
            return
        for key in keys:
            if path == "" and key == "specifications":
                continue
            child_path = f"{path}/{key}"
            try:
                link = group.get(key, getlink=True)
                if isinstance(link, h5py.SoftLink):
                    continue
                obj = group[key]
                if not isinstance(obj, h5py.Group):
                    continue
                ident = (obj.file.filename, hash(obj.id))
                ndt = text(obj.attrs.get("neurodata_type", ""))
            except _H5_ERRORS as exc:
                log.debug("cannot open %s: %s", child_path, exc)
                unreadable.append(UnreadableObject(child_path, link_reason(group, key, exc)))
                continue
            if ident in seen:
                continue
            seen.add(ident)
            if ndt:
                ancestor = types.core_ancestor(ndt)
                if ancestor in (ELECTRICAL_SERIES, SPIKE_EVENT_SERIES):
                    found.append(FoundSeries(child_path, ndt, obj))
                    continue
                other_types.add(ndt)
                if ancestor is None:
                    others.append(
                        OtherObject(
                            child_path,
                            ndt,
                            "not a core NWB type and the file caches no schema for it, so it cannot be "
                            "told whether it is an ElectricalSeries",
                        )
                    )
                elif ancestor in CORE_TIME_SERIES:
                    why = NOT_ELECTRICAL if ancestor == ndt else f"it extends {ancestor}; {NOT_ELECTRICAL}"
                    others.append(OtherObject(child_path, ndt, why))
            walk(obj, child_path)

    walk(h5, "")
    found.sort(key=lambda s: s.path)
    return FileContents(
        found, sorted(other_types), sorted(unreadable, key=lambda u: u.path), sorted(others, key=lambda o: o.path)
    )


@dataclass(frozen=True)
class ElectrodeInfo:
    """What the electrodes table says about the rows a series references."""

    ids: list[int]
    names: list[str | None]
    groups: list[str | None]


def _column(table: h5py.Group, name: str, rows: np.ndarray) -> list[Any] | None:
    if name not in table:
        return None
    try:
        ds = table[name]
        if not isinstance(ds, h5py.Dataset) or f"{name}_index" in table or ds.ndim != 1:
            return None
        values = ds[()]
    except (KeyError, OSError, RuntimeError, ValueError, TypeError) as exc:
        raise ElectrodesError(f"the electrodes table's {name} column cannot be read ({damage_reason(exc)})") from None
    return [values[r] for r in rows]


def electrodes_of(series: h5py.Group) -> ElectrodeInfo | None:
    """The electrodes-table rows named by ``series/electrodes``, or None when the series has none.

    Raises :class:`ElectrodesError` when the region, its table reference, the table or one of its
    columns cannot be read (or the reference is null): the caller decides to fail or to warn, but
    never falls back silently.
    """
    if "electrodes" not in series:
        return None
    try:
        region = series["electrodes"]
        if not isinstance(region, h5py.Dataset):
            raise ElectrodesError("its electrodes is not a dataset")
        rows = np.asarray(region[()]).reshape(-1).astype(np.int64)
        ref = region.attrs.get("table")
    except _H5_ERRORS as exc:
        raise ElectrodesError(
            f"its electrodes region cannot be read ({link_reason(series, 'electrodes', exc)})"
        ) from None
    if ref is None:
        raise ElectrodesError("its electrodes region has no table reference")
    if not isinstance(ref, h5py.Reference) or not ref:
        raise ElectrodesError("its electrodes region's table reference is null")
    try:
        table = region.file[ref]
        ids_ds = table["id"] if isinstance(table, h5py.Group) and "id" in table else None
        ids_all = ids_ds[()] if isinstance(ids_ds, h5py.Dataset) else None
    except (KeyError, OSError, RuntimeError, ValueError, TypeError) as exc:
        raise ElectrodesError(f"the electrodes table it references cannot be read ({damage_reason(exc)})") from None
    if not isinstance(table, h5py.Group):
        raise ElectrodesError("its electrodes region's table reference does not point at a table")
    n_rows = int(ids_all.shape[0]) if ids_all is not None else 0
    if rows.size and (rows.min() < 0 or rows.max() >= n_rows):
        raise InvalidSeriesError(f"its electrodes region points at rows outside the electrodes table ({n_rows} rows)")
    ids = [int(i) for i in (ids_all[rows] if ids_all is not None else rows)]
    names: list[str | None] = [None] * len(rows)
    for column in ("channel_name", "label"):
        values = _column(table, column, rows)
        if values is not None:
            names = [old if old else (text(v) or None) for old, v in zip(names, values, strict=True)]
    groups: list[str | None] = [None] * len(rows)
    values = _column(table, "group_name", rows)
    if values is not None:
        groups = [text(v) or None for v in values]
    if any(g is None for g in groups):
        refs = _column(table, "group", rows)
        if refs is not None:
            for i, r in enumerate(refs):
                if groups[i] is None:
                    try:
                        groups[i] = table.file[r].name.rsplit("/", 1)[-1] or None
                    except (KeyError, OSError, RuntimeError, ValueError, TypeError) as exc:
                        raise ElectrodesError(
                            f"the electrode group of table row {int(rows[i])} cannot be read ({damage_reason(exc)})"
                        ) from None
    return ElectrodeInfo(ids=ids, names=names, groups=groups)
