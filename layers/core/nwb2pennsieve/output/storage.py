"""Where output goes: one small interface, a local directory and an S3 prefix behind it.

A store holds flat names (``channel-00000_..._....bin.gz``, ``plan.json``, ...). Writes are
atomic: a name appears only when its whole content is there (temporary name + rename locally,
one ``PutObject`` on S3), so a failed run never leaves a half-written chunk under a final name.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol, cast

from ..errors import OutputWriteError, StorageError

if TYPE_CHECKING:
    from botocore.exceptions import ClientError
    from mypy_boto3_s3 import S3Client

_LOCAL_SWAP = threading.Lock()


def _conditional_failure(exc: ClientError) -> bool:
    """A conditional PUT lost: the condition failed (412) or a concurrent one won (409)."""
    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return error.get("Code") in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412)


class PendingObject(Protocol):
    """An object being written: bytes go in with ``write``/``writev``; ``commit`` publishes it."""

    def write(self, data: bytes | memoryview) -> None: ...
    def writev(self, parts: list[bytes | memoryview]) -> None: ...
    def commit(self) -> None: ...
    def abort(self) -> None: ...


class Store(Protocol):
    """A flat namespace of objects (a directory, or a prefix in a bucket)."""

    def open_pending(self, name: str) -> PendingObject: ...
    def write_bytes(self, name: str, data: bytes) -> None: ...
    def read_bytes(self, name: str) -> bytes: ...
    def open_read(self, name: str) -> BinaryIO: ...
    def exists(self, name: str) -> bool: ...
    def size(self, name: str) -> int: ...
    def list_names(self, prefix: str = "") -> Iterator[str]: ...
    def delete(self, name: str) -> None: ...
    def describe(self, name: str) -> str: ...
    # Conditional writes (the import claim): create only if absent; replace only if unchanged.
    def create(self, name: str, data: bytes) -> bool: ...
    def read_tagged(self, name: str) -> tuple[bytes, str] | None: ...
    def replace_tagged(self, name: str, data: bytes, tag: str) -> bool: ...


def _write_error(path: str | os.PathLike[str], exc: OSError) -> OutputWriteError:
    cause = exc.strerror or str(exc)
    return OutputWriteError(f"cannot write {os.fspath(path)} ({cause})", cause=cause)


class _LocalPending:
    """``final`` (a path string) written in place (``direct``) or under a temporary name renamed on commit.

    ``make_folder`` is called when the folder is missing (removed since the store last made it).
    """

    def __init__(self, final: str, direct: bool, make_folder: Callable[[], None]) -> None:
        self._final = final
        self._direct = direct
        if direct:
            self._tmp = final
        else:
            folder, name = os.path.split(final)
            self._tmp = os.path.join(folder, f".{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            try:
                # Unbuffered: callers hand over large pieces; a Python-level buffer would only copy them.
                self._fh: BinaryIO | None = open(self._tmp, "wb", buffering=0)  # noqa: SIM115
            except FileNotFoundError:
                make_folder()
                self._fh = open(self._tmp, "wb", buffering=0)  # noqa: SIM115
        except OSError as exc:
            raise _write_error(final, exc) from None

    def write(self, data: bytes | memoryview) -> None:
        self.writev([data])

    def writev(self, parts: list[bytes | memoryview]) -> None:
        try:
            self._writev(parts)
        except OSError as exc:
            raise _write_error(self._final, exc) from None

    def _writev(self, parts: list[bytes | memoryview]) -> None:
        assert self._fh is not None
        fd = self._fh.fileno()
        views = [v for v in (memoryview(p).cast("B") for p in parts) if v.nbytes]
        while views:
            # One system call for many pieces; a short write (rare on regular files) resumes.
            written = os.writev(fd, views[:1024])
            if not written:  # a 0-byte write would loop forever
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            while views and written >= views[0].nbytes:
                written -= views[0].nbytes
                views.pop(0)
            if written:
                views[0] = views[0][written:]

    def commit(self) -> None:
        assert self._fh is not None
        try:
            self._fh.close()
            self._fh = None
            if not self._direct:
                os.replace(self._tmp, self._final)
        except OSError as exc:
            raise _write_error(self._final, exc) from None

    def abort(self) -> None:
        if self._fh is not None:
            with contextlib.suppress(OSError):
                self._fh.close()
            self._fh = None
        with contextlib.suppress(OSError):
            os.unlink(self._tmp)


class LocalStore:
    """A local directory; created on first use.

    ``atomic_names=False`` is for a private staging directory that is published as a whole: a
    pending object is then written straight under its name (no temporary name and rename; on ext4
    here that is ~50-90 µs a file, and a Neuropixels hour is ~300,000 files) and removed on abort.
    """

    def __init__(
        self, root: str | os.PathLike[str], *, atomic_names: bool = True, _made: set[str] | None = None
    ) -> None:
        self.root = Path(root)
        self.atomic_names = atomic_names
        self._folder = os.fspath(self.root)
        # Folders this store and its children have made: a bundle writes thousands of objects into
        # thousands of folders, and a mkdir (of every parent) before each was a share of its time.
        self._made = set() if _made is None else _made

    def _check(self, name: str) -> str:
        if "/" in name or name.startswith("."):
            raise StorageError(f"invalid object name {name!r}")
        return name

    def _path(self, name: str) -> Path:
        return self.root / self._check(name)

    def child(self, path: str) -> LocalStore:
        """The store of the folder ``path`` (``a/b``, already checked by the caller) inside this one."""
        return LocalStore(os.path.join(self._folder, path), atomic_names=self.atomic_names, _made=self._made)

    def _make_folder(self) -> None:
        try:
            try:
                os.mkdir(self._folder)  # its parent usually exists: one call, not a stat of each parent
            except FileExistsError:
                pass
            except FileNotFoundError:
                os.makedirs(self._folder, exist_ok=True)
        except OSError as exc:
            raise _write_error(self._folder, exc) from None
        self._made.add(self._folder)

    def open_pending(self, name: str) -> PendingObject:
        final = os.path.join(self._folder, self._check(name))
        if self._folder not in self._made:
            self._make_folder()
        return _LocalPending(final, not self.atomic_names, self._make_folder)

    def write_bytes(self, name: str, data: bytes) -> None:
        pending = self.open_pending(name)
        try:
            pending.write(data)
            pending.commit()
        except BaseException:
            pending.abort()
            raise

    def read_bytes(self, name: str) -> bytes:
        return self._path(name).read_bytes()

    def open_read(self, name: str) -> BinaryIO:
        return open(self._path(name), "rb")

    def exists(self, name: str) -> bool:
        return self._path(name).is_file()

    def size(self, name: str) -> int:
        return self._path(name).stat().st_size

    def list_names(self, prefix: str = "") -> Iterator[str]:
        if not self.root.is_dir():
            return iter(())
        return iter(
            sorted(
                e.name
                for e in os.scandir(self.root)
                if e.is_file() and e.name.startswith(prefix) and not e.name.startswith(".")
            )
        )

    def delete(self, name: str) -> None:
        self._path(name).unlink(missing_ok=True)

    def describe(self, name: str) -> str:
        return str(self._path(name))

    def create(self, name: str, data: bytes) -> bool:
        """Write ``name`` only if it does not exist; False when it does.

        The content is written to a private file first and then hard-linked to ``name`` (which
        fails if ``name`` exists): a reader never sees the file empty or half written, as it could
        between an ``O_EXCL`` open and its write (a run would then take an empty claim for an
        abandoned one).
        """
        self.root.mkdir(parents=True, exist_ok=True)
        final = self._path(name)
        tmp = final.with_name(f".{final.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        tmp.write_bytes(data)
        try:
            os.link(tmp, final)
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)
        return True

    def read_tagged(self, name: str) -> tuple[bytes, str] | None:
        """The object and a tag of its content (None when absent)."""
        try:
            data = self._path(name).read_bytes()
        except FileNotFoundError:
            return None
        return data, hashlib.sha256(data).hexdigest()

    def replace_tagged(self, name: str, data: bytes, tag: str) -> bool:
        """Replace ``name`` only if its content still has ``tag`` (compare-and-swap, within one process)."""
        with _LOCAL_SWAP:
            current = self.read_tagged(name)
            if current is None or current[1] != tag:
                return False
            self.write_bytes(name, data)
            return True


class _S3Pending:
    def __init__(self, store: S3Store, name: str) -> None:
        self._store = store
        self._name = name
        self._buf: io.BytesIO | None = io.BytesIO()

    def write(self, data: bytes | memoryview) -> None:
        assert self._buf is not None
        self._buf.write(data)

    def writev(self, parts: list[bytes | memoryview]) -> None:
        assert self._buf is not None
        for part in parts:
            self._buf.write(part)

    def commit(self) -> None:
        assert self._buf is not None
        body = self._buf.getbuffer()
        self._store.client.put_object(Bucket=self._store.bucket, Key=self._store.key(self._name), Body=bytes(body))
        body.release()
        self._buf = None

    def abort(self) -> None:
        self._buf = None


class S3Store:
    """Objects under ``s3://bucket/prefix/``. ``client`` is a boto3 S3 client."""

    def __init__(self, bucket: str, prefix: str, client: S3Client) -> None:
        self.bucket = bucket
        # Only the trailing slash goes: a leading one (or two in a row) is part of S3 keys, and the
        # cloud's output folders of "/a.nwb" and "a.nwb" differ by it.
        self.prefix = prefix.rstrip("/")
        self.client = client

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def open_pending(self, name: str) -> PendingObject:
        return _S3Pending(self, name)

    def write_bytes(self, name: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self.key(name), Body=data)

    def read_bytes(self, name: str) -> bytes:
        body: bytes = self.client.get_object(Bucket=self.bucket, Key=self.key(name))["Body"].read()
        return body

    def open_read(self, name: str) -> BinaryIO:
        # botocore's StreamingBody is a readable file object (read, close, iteration).
        return cast(BinaryIO, self.client.get_object(Bucket=self.bucket, Key=self.key(name))["Body"])

    def exists(self, name: str) -> bool:
        # A listing of the key, not a HEAD: S3 answers a HEAD of a missing key 403 (not 404) to a
        # role without s3:ListBucket on the whole bucket, and the functions may list their prefixes only.
        key = self.key(name)
        page = self.client.list_objects_v2(Bucket=self.bucket, Prefix=key, MaxKeys=1)
        return any(obj["Key"] == key for obj in page.get("Contents", []))

    def size(self, name: str) -> int:
        length: int = self.client.head_object(Bucket=self.bucket, Key=self.key(name))["ContentLength"]
        return length

    def list_names(self, prefix: str = "") -> Iterator[str]:
        base = self.key("")
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=base + prefix):
            for obj in page.get("Contents", []):
                name = obj["Key"][len(base) :]
                if "/" not in name:
                    yield name

    def delete(self, name: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.key(name))

    def create(self, name: str, data: bytes) -> bool:
        """PUT with ``If-None-Match: *``: False when an object of that name exists (412) or another
        conditional PUT of it is in flight (409)."""
        try:
            self.client.put_object(Bucket=self.bucket, Key=self.key(name), Body=data, IfNoneMatch="*")
        except self.client.exceptions.ClientError as exc:
            if _conditional_failure(exc):
                return False
            raise
        return True

    def read_tagged(self, name: str) -> tuple[bytes, str] | None:
        """The object and its ETag (None when absent)."""
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self.key(name))
        except self.client.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return answer["Body"].read(), answer["ETag"]

    def replace_tagged(self, name: str, data: bytes, tag: str) -> bool:
        """PUT with ``If-Match: <ETag>``: False when the object changed or is gone since it was read."""
        try:
            self.client.put_object(Bucket=self.bucket, Key=self.key(name), Body=data, IfMatch=tag)
        except self.client.exceptions.ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if _conditional_failure(exc) or code in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def describe(self, name: str) -> str:
        return f"s3://{self.bucket}/{self.key(name)}"
