"""Which version of an input a conversion reads: taken when the file is planned, carried in the
plan (``Plan.source_identity``), compared wherever the input is opened again and once more
before the output is published.

Without it the planner, every worker and the last step each opened the input by its name,
whenever they started: a file replaced by rename, overwritten in place or cut short while it was
converted (a copy still being written into ``INPUT_DIR``), or a URL whose content changed between
planning and writing, gave an output mixing one version's timing with another's values, exit 0.

- a local file: device, inode, size, mtime and ctime (``fstat`` of the descriptor HDF5 reads, so
  the file h5py has open, whatever its name names now; ``stat`` of the name at the end, which
  sees a rename). ctime catches a rewrite that keeps the size and puts the mtime back.
- a URL: its strong ETag, else its Last-Modified, and its size (a weak ``W/`` ETag is not a byte
  range validator: treated as none).
- an S3 object: its version id, else its ETag, and its size.

Limits: a change in the milliseconds between the last check and the publishing swap is not seen;
a file system with coarse times (FAT, some NFS) relies on size, inode and ctime; a URL whose
server sends neither ETag nor Last-Modified can only be checked by its size.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict

from ..errors import InvalidInputError


class InputChangedError(InvalidInputError):
    """The input is not the version that was planned: it changed while it was being converted."""


class SourceIdentity(BaseModel):
    """One version of an input (fields that do not apply to its kind stay None)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    size: int
    device: int | None = None
    inode: int | None = None
    mtime_ns: int | None = None
    ctime_ns: int | None = None
    etag: str | None = None
    last_modified: str | None = None
    version_id: str | None = None

    def change(self, now: SourceIdentity) -> str | None:
        """How ``now`` differs from this version, in words (None: the same)."""
        if (self.device, self.inode) != (now.device, now.inode):
            return "it was replaced (its name now names another file)"
        if self.size != now.size:
            return f"its size went from {self.size:,} to {now.size:,} bytes"
        if self.version_id != now.version_id:
            return f"its version went from {self.version_id} to {now.version_id}"
        if self.etag != now.etag:
            return f"its ETag went from {self.etag} to {now.etag}"
        if self.last_modified != now.last_modified:
            return f"its Last-Modified went from {self.last_modified} to {now.last_modified}"
        if self.mtime_ns != now.mtime_ns or self.ctime_ns != now.ctime_ns:
            when = datetime.fromtimestamp((now.mtime_ns or 0) / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
            return f"it was modified (its modification time is now {when})"
        return None


def stat_identity(info: os.stat_result) -> SourceIdentity:
    return SourceIdentity(
        size=info.st_size,
        device=info.st_dev,
        inode=info.st_ino,
        mtime_ns=info.st_mtime_ns,
        ctime_ns=info.st_ctime_ns,
    )


def path_identity(path: str | os.PathLike[str], name: str) -> SourceIdentity:
    """The identity of the file a path names now."""
    try:
        return stat_identity(os.stat(path))
    except FileNotFoundError:
        raise InputChangedError(
            "the file changed while it was being converted (it was removed); nothing was published", file=name
        ) from None
    except OSError as exc:
        raise InvalidInputError(f"cannot read it ({exc.strerror or exc})", file=name) from None


def check_same(expected: SourceIdentity | None, now: SourceIdentity, name: str) -> None:
    """Raise :class:`InputChangedError` when ``now`` is not the ``expected`` version."""
    change = expected.change(now) if expected is not None else None
    if change is not None:
        raise InputChangedError(
            f"the file changed while it was being converted ({change}); nothing was published", file=name
        )


def strong_etag(etag: str | None) -> str | None:
    """An ETag usable as a byte-range validator: a weak one (``W/"..."``) is not."""
    return etag if etag and not etag.startswith("W/") else None
