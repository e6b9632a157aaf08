"""Writing bundle objects (nested paths) through the project's flat :class:`~nwb2pennsieve.output.storage.Store`.

A store holds flat names; a bundle is a tree (``3/0/c/12``). Each directory of the tree is
reached as a store of its own: whatever a store's own ``child(path)`` returns (a sub-directory of
a :class:`~nwb2pennsieve.output.storage.LocalStore`), or a longer prefix of an :class:`S3Store`.
"""

from __future__ import annotations

from typing import Any

from ..output.storage import PendingObject, S3Store, Store


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
