"""Writing bundle objects (nested paths) through the project's flat :class:`~nwb2pennsieve.output.storage.Store`.

A store holds flat names; a bundle is a tree (``3/0/c/12``). Each directory of the tree is
reached as a store of its own: whatever a store's own ``child(path)`` returns (a sub-directory of
a :class:`~nwb2pennsieve.output.storage.LocalStore`), or a longer prefix of an :class:`S3Store`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..output.storage import PendingObject, S3Store, Store
from ..plan.bundle_layout import chunk_and_shard_bins
from .encode import ArraySpec, DType, encode_shard


def child_store(store: Store, path: str) -> Store:
    """The store holding the objects under ``path`` (``a/b``) of ``store``."""
    path = path.strip("/")
    if not path:
        return store
    if any(part in ("", ".", "..") or part.startswith(".") for part in path.split("/")):
        raise ValueError(f"invalid bundle path {path!r}")
    child = getattr(store, "child", None)
    if callable(child):
        sub: Store = child(path)
        return sub
    if isinstance(store, S3Store):
        return S3Store(store.bucket, store.key(path), store.client)
    raise TypeError(f"cannot write nested bundle paths to a {type(store).__name__}")


def put(store: Store, path: str, parts: list[bytes] | bytes) -> None:
    """Write one object at the nested ``path`` of ``store``, atomically (whole or not at all)."""
    folder, _, name = path.rpartition("/")
    target = child_store(store, folder)
    pending = target.open_pending(name)
    try:
        pending.writev([parts] if isinstance(parts, bytes) else list(parts))
        pending.commit()
    except BaseException:
        pending.abort()
        raise


def open_pending(store: Store, path: str) -> PendingObject:
    """An object being written at the nested ``path`` of ``store`` (commit publishes it whole)."""
    folder, _, name = path.rpartition("/")
    return child_store(store, folder).open_pending(name)


def get(store: Store, path: str) -> bytes:
    folder, _, name = path.rpartition("/")
    return child_store(store, folder).read_bytes(name)


def describe(store: Store, path: str) -> Any:
    folder, _, name = path.rpartition("/")
    return child_store(store, folder).describe(name)


def array_spec(data: np.ndarray, dtype: DType, zstd_level: int, attributes: dict[str, Any] | None = None) -> ArraySpec:
    """A sharded array of ``data``'s shape: inner chunks and shards by the producer's rule."""
    row_bytes = data.dtype.itemsize * int(np.prod(data.shape[1:], dtype=np.int64))
    chunk, shard = chunk_and_shard_bins(data.shape[0], row_bytes)
    return ArraySpec(
        shape=tuple(int(x) for x in data.shape),
        dtype=dtype,
        chunk_rows=chunk,
        shard_rows=shard,
        attributes=attributes or {},
        zstd_level=zstd_level,
    )


def write_array(
    store: Store, path: str, data: np.ndarray, dtype: DType, zstd_level: int, attributes: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Every shard of a sharded array; its ``zarr.json``."""
    data = np.ascontiguousarray(data, dtype=dtype)
    spec = array_spec(data, dtype, zstd_level, attributes)
    for shard in range(spec.shard_count):
        a = shard * spec.shard_rows
        parts = encode_shard(spec, shard, data[a : a + spec.shard_rows])
        if parts is not None:
            put(store, f"{path}/{spec.shard_key(shard)}", parts)
    return spec.metadata()
