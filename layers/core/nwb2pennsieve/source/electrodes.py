"""The electrodes a series references: names and groups of its channels, from the electrodes table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np

from ..errors import ElectrodesError, InvalidSeriesError
from .nwb import H5_ERRORS, damage_reason, link_reason, read_attr, text


@dataclass(frozen=True)
class ElectrodeInfo:
    """What the electrodes table says about the rows a series references."""

    ids: list[int]
    names: list[str | None]
    groups: list[str | None]


def _column(table: h5py.Group, name: str, rows: np.ndarray, n_rows: int) -> list[Any] | None:
    """The column's values of ``rows``, None when the table has no such plain column. A column
    longer than the table (a damaged length, which would be read whole) is refused."""
    try:
        if name not in table:
            return None
        ds = table[name]
        if not isinstance(ds, h5py.Dataset) or f"{name}_index" in table or ds.ndim != 1:
            return None
        if ds.shape[0] > n_rows:
            raise ElectrodesError(
                f"the electrodes table's {name} column declares {ds.shape[0]:,} rows, the table has {n_rows:,}: "
                "the file is damaged"
            )
        values = ds[()]
    except (*H5_ERRORS, MemoryError) as exc:
        raise ElectrodesError(f"the electrodes table's {name} column cannot be read ({damage_reason(exc)})") from None
    return [values[r] for r in rows]


def electrodes_of(series: h5py.Group) -> ElectrodeInfo | None:
    """The electrodes-table rows named by ``series/electrodes``, or None when the series has none.

    Raises :class:`ElectrodesError` when the region, its table reference, the table or one of its
    columns cannot be read (or the reference is null): the caller decides to fail or to warn, but
    never falls back silently.
    """
    try:
        if "electrodes" not in series:
            return None
        region = series["electrodes"]
        if not isinstance(region, h5py.Dataset):
            raise ElectrodesError("its electrodes is not a dataset")
        rows = np.asarray(region[()]).reshape(-1).astype(np.int64)
        ref = read_attr(region, "table")
    except InvalidSeriesError as exc:
        raise ElectrodesError(f"its electrodes region's {exc.reason.removeprefix('its ')}") from None
    except H5_ERRORS as exc:
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
    except (*H5_ERRORS, MemoryError) as exc:
        raise ElectrodesError(f"the electrodes table it references cannot be read ({damage_reason(exc)})") from None
    if not isinstance(table, h5py.Group):
        raise ElectrodesError("its electrodes region's table reference does not point at a table")
    n_rows = int(ids_all.shape[0]) if ids_all is not None else (int(rows.max()) + 1 if rows.size else 0)
    if rows.size and (rows.min() < 0 or rows.max() >= n_rows):
        raise InvalidSeriesError(f"its electrodes region points at rows outside the electrodes table ({n_rows} rows)")
    ids = [int(i) for i in (ids_all[rows] if ids_all is not None else rows)]
    names: list[str | None] = [None] * len(rows)
    for column in ("channel_name", "label"):
        values = _column(table, column, rows, n_rows)
        if values is not None:
            names = [old if old else (text(v) or None) for old, v in zip(names, values, strict=True)]
    groups: list[str | None] = [None] * len(rows)
    values = _column(table, "group_name", rows, n_rows)
    if values is not None:
        groups = [text(v) or None for v in values]
    if any(g is None for g in groups):
        refs = _column(table, "group", rows, n_rows)
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
