"""The recording's identity in an NWB file: its subject and session fields, read with h5py.

What the TS-Zarr bundle's ``meta/`` carries (docs/bundle.md): every one-value dataset of
``/general/subject`` (texts, numbers; dates as the ISO text NWB stores), and the session's id,
description and identifier. Nothing here is a time the bundle counts from.
"""

from __future__ import annotations

from typing import Any

import h5py
import numpy as np

from .nwb import read_attr, text


def _value(ds: h5py.Dataset) -> Any:
    raw = ds[()]
    if isinstance(raw, np.ndarray) and raw.size != 1:
        return None
    if isinstance(raw, bytes | np.bytes_ | str | np.str_) or h5py.check_string_dtype(ds.dtype):
        return text(raw)
    item = np.asarray(raw).reshape(-1)[0]
    if isinstance(item, np.bool_):
        return bool(item)
    if isinstance(item, np.integer):
        return int(item)
    if isinstance(item, np.floating) and np.isfinite(item):
        return float(item)
    return None


def subject(h5: h5py.File) -> dict[str, Any]:
    """Every one-value field of ``/general/subject``, by name (empty when the file has none)."""
    group = h5.get("general/subject")
    out: dict[str, Any] = {}
    if not isinstance(group, h5py.Group):
        return out
    for name in sorted(group):
        obj = group.get(name)
        if isinstance(obj, h5py.Dataset):
            value = _value(obj)
            if value is not None and value != "":
                out[name] = value
    return out


def session(h5: h5py.File) -> dict[str, Any]:
    """The session's id, description and identifier, where the file has them."""
    out: dict[str, Any] = {}
    for key, path in (
        ("session_id", "general/session_id"),
        ("description", "session_description"),
        ("identifier", "identifier"),
    ):
        obj = h5.get(path)
        if isinstance(obj, h5py.Dataset):
            value = _value(obj)
            if value not in (None, ""):
                out[key] = value
    return out


def nwb_version(h5: h5py.File) -> str | None:
    value = read_attr(h5, "nwb_version")
    return text(value) if value is not None else None
