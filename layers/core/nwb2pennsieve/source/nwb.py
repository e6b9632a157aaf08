"""Reading NWB files with h5py alone, following the NWB schema by its ``neurodata_type`` attributes.

pynwb is not needed at run time: it would pull pandas into the Lambda layer and make many more
reads when a file is opened over S3. Everything here works on an open :class:`h5py.File`, which
may sit on a local path, a Python file object (an S3 range reader) or a test file.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from datetime import UTC, datetime, timedelta
from typing import Any, BinaryIO

import h5py
import numpy as np

from ..errors import InvalidInputError, InvalidSeriesError

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


def read_attr(obj: h5py.HLObject, name: str) -> Any:
    """The attribute ``name`` of ``obj``, or None when ``obj`` has no attribute of that name.

    An attribute that exists but cannot be read (a damaged attribute message, datatype, dataspace
    or value) is not an absent one: :class:`InvalidSeriesError` naming it. (h5py's ``attrs.get``
    returns its default for both, and ``name in attrs`` is false for both.) The only way the core
    reads attributes.
    """
    try:
        present = h5py.h5a.exists(obj.id, name.encode())
    except H5_ERRORS as exc:
        raise InvalidSeriesError(f"its {name} attribute cannot be read ({damage_reason(exc)})") from None
    if not present:
        return None
    try:
        return obj.attrs[name]
    except H5_ERRORS as exc:
        raise InvalidSeriesError(f"its {name} attribute cannot be read ({damage_reason(exc)})") from None


# Every object HDMF writes with a neurodata_type also carries these: one without a readable type
# has had its type attribute damaged (its name, or its message).
TYPED_OBJECT_ATTRIBUTES = ("namespace", "object_id")


def neurodata_type(obj: h5py.HLObject) -> str:
    """``obj``'s neurodata_type ("" for an untyped object); :class:`InvalidSeriesError` when it
    cannot be read, or is missing from an object that has the other attributes of a typed one."""
    value = read_attr(obj, "neurodata_type")
    if value is not None:
        return text(value)
    if read_attr(obj, "data_type") is not None:  # an HDMF type outside NWB (HDMF names its types so)
        return ""
    typed = [a for a in TYPED_OBJECT_ATTRIBUTES if read_attr(obj, a) is not None]
    if typed:
        raise InvalidSeriesError(
            f"it has a {typed[0]} attribute but no readable neurodata_type (a damaged attribute), "
            "so it cannot be told whether it is a series"
        )
    return ""


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
        root_type = neurodata_type(h5)
        found = text(read_attr(h5, "data_type") or "") or root_type or "none"
    except InvalidSeriesError as exc:
        h5.close()
        raise InvalidInputError(f"its root attributes cannot be read: {exc.reason}", file=label) from None
    except H5_ERRORS as exc:
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
    kind = _not_a_file(info.st_mode)
    if kind is not None:
        raise InvalidInputError(f"it is {kind}, not a file: give the NWB file itself", file=label)
    return info.st_size


def _not_a_file(mode: int) -> str | None:
    """What a file of ``mode`` is when it is not a regular file (None: it is one)."""
    kinds = (
        (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a directory"),
    )
    return next((kind for test, kind in kinds if test(mode)), None)


def external_link_problem(group: h5py.Group, link: object) -> str | None:
    """Why ``link`` (of ``group``, as ``group.get(key, getlink=True)`` gives it) must not be
    followed, or None (not an external link, or one HDF5 may open).

    HDF5 opens an external link's target blindly: a named pipe blocks it for ever, a device never
    ends. So each place HDF5 would look for the target (HDF5_EXT_PREFIX, the linking file's
    folder, the working directory; an absolute name as given, then by its base name) is checked
    with ``stat`` first, and one that is not a regular file is refused.
    """
    if not isinstance(link, h5py.ExternalLink):
        return None
    for path in _external_candidates(group.file.filename, link.filename):
        try:
            kind = _not_a_file(os.stat(path).st_mode)
        except OSError:
            continue
        if kind is not None:
            return f"it links to the external file {link.filename!r}, which is {kind}, not a file"
    return None


def _external_candidates(linking: str, name: str) -> list[str]:
    """Where HDF5 looks for an external link's target ``name``, in its order (H5F_prefix_open_file)."""
    candidates = [name] if os.path.isabs(name) else []
    name = os.path.basename(name) if os.path.isabs(name) else name
    here = os.path.dirname(linking) if os.path.isfile(linking) else ""
    prefixes = [p.replace("${ORIGIN}", here) for p in os.environ.get("HDF5_EXT_PREFIX", "").split(":") if p]
    candidates += [os.path.join(p, name) for p in prefixes]
    candidates += [os.path.join(here, name)] if here else []
    return [*candidates, name]


def _iso_time(h5: h5py.File, key: str) -> tuple[str, int, bool]:
    try:
        raw = text(h5[key][()])
    except (*H5_ERRORS, MemoryError) as exc:
        raise InvalidInputError(f"its {key} cannot be read: {damage_reason(exc)}") from None
    try:
        when = datetime.fromisoformat(raw.replace("Z", "+00:00") if raw.endswith("Z") else raw)
    except ValueError:
        raise InvalidInputError(f"{key} {raw!r} is not an ISO 8601 time") from None
    naive = when.tzinfo is None
    if naive:
        when = when.replace(tzinfo=UTC)
    return raw, (when - _EPOCH) // timedelta(microseconds=1), naive


def has_link(group: h5py.Group, key: str, what: str) -> bool:
    """``key in group``, but a group whose links cannot be looked up (a damaged B-tree) raises
    :class:`InvalidInputError` naming ``what``, never HDF5's text."""
    try:
        return key in group
    except H5_ERRORS as exc:
        raise InvalidInputError(f"its {what} cannot be read ({damage_reason(exc)})") from None


def session_start(h5: h5py.File) -> tuple[str, int, bool]:
    """(ISO text as stored, µs since the Unix epoch, whether it was naive and taken as UTC)."""
    if not has_link(h5, "session_start_time", "root group"):
        raise InvalidInputError("the file has no session_start_time")
    return _iso_time(h5, "session_start_time")


def timestamps_reference(h5: h5py.File) -> tuple[str, int, bool] | None:
    """``timestamps_reference_time`` like :func:`session_start`, or None when the file has none.

    The NWB schema makes every time in the file relative to it; it defaults to the session start.
    """
    if not has_link(h5, "timestamps_reference_time", "root group"):
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


H5_ERRORS = (KeyError, OSError, RuntimeError, ValueError, TypeError)


def link_reason(group: h5py.Group, key: str, exc: BaseException) -> str:
    """Why ``group[key]`` cannot be opened: a missing external file or dangling soft link, else damage."""
    try:
        link = group.get(key, getlink=True)
    except H5_ERRORS:
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
        problem = external_link_problem(group, link)
    except H5_ERRORS as exc:
        raise InvalidSeriesError(f"its {what} cannot be read: {damage_reason(exc)}") from None
    if link is None:
        return None
    if problem is not None:
        raise InvalidSeriesError(f"its {what} cannot be read: {problem}")
    try:
        obj = group[key]
    except H5_ERRORS as exc:
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


# Registered HDF5 filter ids (hdf5plugin's and h5py's own) that h5py calls "unknown".
_FILTER_NAMES = {32001: "blosc", 32026: "blosc2", 32015: "zstd", 32004: "lz4", 32008: "bitshuffle", 307: "bzip2"}
_BLOSC_CODECS = ("blosclz", "lz4", "lz4hc", "snappy", "zlib", "zstd")


def compression_name(ds: h5py.Dataset) -> str | None:
    """The dataset's compression in words (``gzip``, ``lzf``, ``zstd``, ``blosc (lz4)``, ...), or
    None when it has none: h5py names only its own filters and calls the rest "unknown"."""
    if ds.compression != "unknown":
        return ds.compression
    plist = ds.id.get_create_plist()
    names = []
    for i in range(plist.get_nfilters()):
        code, _, values, _ = plist.get_filter(i)
        if code in (1, 2, 3, 6):  # deflate, shuffle, fletcher32, scale-offset: not what "unknown" hides
            continue
        name = _FILTER_NAMES.get(code, f"filter {code}")
        if code == 32001 and len(values) > 6 and 0 <= values[6] < len(_BLOSC_CODECS):
            name += f" ({_BLOSC_CODECS[values[6]]})"
        names.append(name)
    return "+".join(names) or "unknown"
