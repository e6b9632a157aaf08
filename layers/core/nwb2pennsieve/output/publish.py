"""Publishing a local conversion: the output folder is replaced whole, never mixed.

A conversion into ``OUTPUT/`` writes everything into a staging folder beside it,
``.OUTPUT.nwb2pennsieve-staging/``, and swaps that folder in only when every chunk file, the
channel metadata and the marker (``.nwb2pennsieve.json``: source, settings, version, file list)
are written:

- Linux: one ``renameat2(RENAME_EXCHANGE)`` swaps the two folders atomically; macOS:
  ``renamex_np(RENAME_SWAP)``. A reader, or a kill at any moment, sees the complete old output or
  the complete new one. The old one, now under the staging name, is then deleted.
- Elsewhere (or on a file system without the exchange): ``OUTPUT`` is renamed to
  ``.OUTPUT.nwb2pennsieve-old``, the staging folder to ``OUTPUT``, and the old one deleted. Between
  the two renames ``OUTPUT`` is briefly absent (never mixed); a run killed right there leaves the
  old output under ``-old``, and the next run into ``OUTPUT`` puts it back first.

The swap is the commit point: once it is made the new output is published, whatever happens next.
It runs with stop signals deferred and then held (:mod:`nwb2pennsieve.signals`), so a signal can
neither cut it nor make the command say "nothing published" after it. Deleting the old output is
best effort: a file that cannot be deleted, or a signal, leaves the rest, which the next run into
``OUTPUT`` removes (a folder it cannot remove is moved aside, ``.OUTPUT.nwb2pennsieve-trash-<pid>``,
with a warning; it never blocks a conversion).

The next run into the same output takes the same names, so it finds and removes a staging folder a
killed run left. Two runs into one output are kept apart by a lock file,
``.OUTPUT.nwb2pennsieve-lock`` (``flock``): the second fails at once, naming the first's pid.

What is ours: the marker, the files it lists, names of the output's form (chunk files, channel
metadata, the importer's records, our temporary names). A folder that holds anything else is
never replaced: the conversion refuses before any work, naming those files. The import records
of the old output move into the new one when it is the same output (same source file, settings
and file list), so a rerun imports nothing twice; otherwise they describe another output and go
with it.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import glob
import os
import re
import secrets
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

from .. import __version__, signals
from ..errors import StorageError
from ..options import ConversionOptions
from ..testing_seams import checkpoint

MARKER_NAME = ".nwb2pennsieve.json"
MARKER_FORMAT = 2
STAGING_SUFFIX = ".nwb2pennsieve-staging"
BACKUP_SUFFIX = ".nwb2pennsieve-old"
LOCK_SUFFIX = ".nwb2pennsieve-lock"
TRASH_SUFFIX = ".nwb2pennsieve-trash"  # + "-<pid>": what could not be removed, moved aside

# Names a conversion or the importer writes into an output (besides those a marker lists).
_OURS = re.compile(
    r"channel-\d{5}(_-?\d+_-?\d+\.bin\.gz|\.metadata\.json)"  # chunk files, channel metadata
    r"|import-[\w.-]+\.json"  # import records (nwb2pennsieve.pennsieve.records)
    r"|\.(channel|import)-[^/]+\.tmp"  # a LocalStore's temporary names for those
)
_IMPORT_RECORD = re.compile(r"import-[\w.-]+\.json")


class OutputMarker(BaseModel):
    """``.nwb2pennsieve.json``: what made this output, and its files (the next run's list of ours;
    a folder, the viewer bundle ``<stem>.zarr/``, ends in ``/``)."""

    model_config = ConfigDict(extra="ignore")

    format: int = MARKER_FORMAT
    tool: str = "nwb2pennsieve"
    version: str = __version__
    source: str
    source_bytes: int | None  # None: a URL input (no size or mtime known without a request)
    source_mtime_ns: int | None
    options: ConversionOptions
    files: list[str]
    written_at: str | None = None  # UTC, ISO 8601 (markers before it: the marker file's mtime, read_marker)

    @model_validator(mode="before")
    @classmethod
    def _format_1(cls, data: Any) -> Any:
        """A format-1 marker kept the options as fields of its own."""
        if isinstance(data, dict) and data.get("format", 1) == 1 and "options" not in data:
            keys = ("chunk_size_mb", "gzip_level", "max_item_mb", "skip_invalid_series")
            options = {k: data[k] for k in keys if k in data} | {"formats": data.get("output_formats", "chunks")}
            data = {k: v for k, v in data.items() if k not in keys} | {"options": options}
        return data

    def same_output(self, other: OutputMarker) -> bool:
        """True when ``other`` describes the same output made from the same source file."""
        ignore: Any = {"version": True, "written_at": True, "options": {"max_item_mb"}}  # no byte of the output
        if self.source_mtime_ns is None or other.source_mtime_ns is None:
            return False  # a URL's content may have changed: never assume it has not
        return self.model_dump(exclude=ignore) == other.model_dump(exclude=ignore)

    def same_source(self, other: OutputMarker) -> bool:
        """True when ``other`` was made from the same input (its name, and a local file's size and mtime)."""
        return (self.source, self.source_bytes, self.source_mtime_ns) == (
            other.source,
            other.source_bytes,
            other.source_mtime_ns,
        )

    def described(self) -> str:
        """``rec.nwb`` and, for a local file, its size and modification time."""
        if self.source_bytes is None or self.source_mtime_ns is None:
            return self.source
        return f"{self.source} ({self.source_bytes:,} bytes, modified {_utc(self.source_mtime_ns / 1e9)})"


def now_utc() -> str:
    """The time a marker is written."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def _utc(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def read_marker(folder: Path) -> OutputMarker | None:
    path = folder / MARKER_NAME
    try:
        marker = OutputMarker.model_validate_json(path.read_bytes())
        if marker.written_at is None:  # written before markers said when: the file's own time
            marker.written_at = datetime.fromtimestamp(path.stat().st_mtime, UTC).isoformat(timespec="seconds")
    except (OSError, ValueError):
        return None
    return marker


def replacement_note(shown: str, old: OutputMarker, new: OutputMarker) -> str | None:
    """The note saying ``shown`` held another input's conversion (None: the same input's)."""
    if old.same_source(new):
        return None
    when = old.written_at or "at an unknown time"
    with contextlib.suppress(ValueError):
        when = _utc(datetime.fromisoformat(when).timestamp())
    if old.source == new.source:  # the same name: say which one each was
        before, after = old.described(), new.described()
    else:
        before, after = old.source, new.source
    return f"note: output {shown} held the conversion of {before}, made {when}; it now holds that of {after}"


def _cause(exc: OSError) -> str:
    return exc.strerror or str(exc)


class OutputFolder:
    """The lock, the staging folder and the swap of one output folder (a context manager).

    ``with OutputFolder(path) as out:`` locks the output, clears what a killed run left, refuses
    a folder holding files that are not ours and creates ``out.staging``; ``out.publish(marker)``
    swaps the staging folder in. Leaving the block removes the staging folder (a conversion that
    failed or was interrupted publishes nothing) and releases the lock. ``notes`` are the lines the
    command prints (a replaced input's conversion, what could not be removed).
    """

    def __init__(self, output: str | os.PathLike[str]) -> None:
        self.shown = str(output)  # errors name the path as the user gave it
        self.final = Path(output).resolve()
        # Refused before anything is written (a lock or staging folder beside a mount point lies on
        # another file system, and the swap cannot cross it).
        if os.path.ismount(self.final):
            raise self.error(
                "is a mount point: an output is published by swapping in a folder written beside it, "
                "which a mount point cannot take part in; give a folder inside it"
            )
        self.staging = self.final.with_name(f".{self.final.name}{STAGING_SUFFIX}")
        self.backup = self.final.with_name(f".{self.final.name}{BACKUP_SUFFIX}")
        self.lock_path = self.final.with_name(f".{self.final.name}{LOCK_SUFFIX}")
        self._lock_fd: int | None = None
        self.published = False
        self.notes: list[str] = []

    def error(self, what: str, cause: OSError | str | None = None) -> StorageError:
        """A one-line error naming the output path, what failed and the system's reason."""
        if isinstance(cause, OSError):
            cause = _cause(cause)
        return StorageError(f"output {self.shown}: {what}" + (f" ({cause})" if cause else ""))

    # --- entering: lock, recover, check ----------------------------------------------------
    def __enter__(self) -> OutputFolder:
        if self.final.exists() and not self.final.is_dir():
            raise self.error("is a file, not a folder")
        try:
            self.final.parent.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise self.error(f"{self.final.parent} is a file, not a folder") from None
        except OSError as exc:
            raise self.error(f"cannot create {self.final.parent}", exc) from None
        self._lock_fd = self._lock()
        try:
            self._recover()
            self._refuse_foreign_files()
            self.staging.mkdir()
            checkpoint("staged")
        except OSError as exc:
            self._abandon()
            raise self.error("cannot prepare the staging folder", exc) from None
        except BaseException:  # a signal too: __exit__ is not called when __enter__ raises
            self._abandon()
            raise
        return self

    def _abandon(self) -> None:
        """Leave nothing of this run: the staging folder it made, the lock."""
        with signals.deferred():
            shutil.rmtree(self.staging, ignore_errors=True)
            self._unlock()

    def _lock(self) -> int:
        try:
            import fcntl
        except ImportError:  # no flock (Windows): unlocked, as before
            return -1
        while True:
            try:
                fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise self.error(f"cannot create the lock file {self.lock_path.name}", exc) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
                os.close(fd)
                raise self.error(
                    f"another conversion (pid {holder}) is writing it; wait until it ends or choose another output"
                ) from None
            # The holder before us unlinks the file before releasing it: lock the file that is there now.
            with contextlib.suppress(FileNotFoundError):
                here, there = os.fstat(fd), os.stat(self.lock_path)
                if (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino):
                    self._write_pid(fd)
                    return fd
            os.close(fd)

    def _write_pid(self, fd: int) -> None:
        """Our pid into the lock file we hold; a full disk fails naming the output, leaving no lock file."""
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError as exc:
            with contextlib.suppress(OSError):
                self.lock_path.unlink()
            os.close(fd)
            raise self.error(f"cannot write the lock file {self.lock_path.name}", exc) from None

    def _unlock(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is None or fd < 0:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.lock_path)  # before releasing: a waiter then retries on a new file
        os.close(fd)

    def _recover(self) -> None:
        """Undo what an earlier run left: the old output between two renames (put back when the
        output is missing), a staging folder, an old output not wholly removed. What cannot be
        removed is moved aside, with a note; only a folder that cannot even be moved fails."""
        if self.backup.exists() and not self.final.exists():
            os.rename(self.backup, self.final)
        for left in (self.backup, self.staging):
            if left.exists() and _remove_tree(left) is not None:
                trash = self.final.with_name(f".{self.final.name}{TRASH_SUFFIX}-{os.getpid()}-{secrets.token_hex(3)}")
                try:
                    os.rename(left, trash)
                except OSError as exc:
                    raise self.error(
                        f"{left} is left from an earlier run and can be neither removed nor moved", exc
                    ) from None
        for trash in sorted(self.final.parent.glob(f".{glob.escape(self.final.name)}{TRASH_SUFFIX}-*")):
            failure = _remove_tree(trash)
            if failure is not None:
                self.notes.append(f"warning: output {self.shown}: {trash} cannot be removed ({failure}): remove it")

    def _refuse_foreign_files(self) -> None:
        if not self.final.is_dir():
            return
        marker = read_marker(self.final)
        ours = {MARKER_NAME, *(marker.files if marker else ())}
        foreign = sorted(
            e.name + ("/" if e.is_dir(follow_symlinks=False) else "")
            for e in os.scandir(self.final)
            if not (e.is_file(follow_symlinks=False) and (e.name in ours or _OURS.fullmatch(e.name)))
            and not (e.is_dir(follow_symlinks=False) and e.name + "/" in ours)  # the viewer bundle
        )
        if foreign:
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            raise self.error(f"holds files no conversion wrote ({shown}); move them away or choose another output")

    # --- publishing -------------------------------------------------------------------------
    def publish(self, marker: OutputMarker) -> None:
        """Write the marker into the staging folder and swap the staging folder in: the commit point.

        From the swap on, the stop signals are held (:func:`nwb2pennsieve.signals.hold`) until the
        command has reported the output; the old output is then deleted best effort (a failure or a
        signal leaves the rest to the next run, with a note).
        """
        try:
            old = read_marker(self.final) if self.final.is_dir() else None
            (self.staging / MARKER_NAME).write_text(marker.model_dump_json(indent=2) + "\n")
            self._keep_import_records(old, marker)
        except OSError as exc:
            raise self.error("cannot publish the new output", exc) from None
        with signals.deferred():  # the swap and the record of it, as one step
            try:
                previous = self._swap()
            except OSError as exc:
                raise self.error("cannot publish the new output", exc) from None
            self.published = True
            signals.hold()
            checkpoint("swapped")
        note = replacement_note(self.shown, old, marker) if old is not None else None
        self.notes += [note] if note else []
        if previous is not None:
            failure = _remove_tree(previous)
            if failure is not None:
                self.notes.append(
                    f"warning: output {self.shown}: published, but the old output could not be removed completely "
                    f"({failure}); the next conversion into it retries ({previous.name})"
                )

    def _swap(self) -> Path | None:
        """Put the staging folder in the output's place; where the old output now is (None: there was none)."""
        if not self.final.exists():
            os.rename(self.staging, self.final)
            return None
        if _exchange(self.staging, self.final):
            return self.staging  # the old output, now under the staging name
        os.rename(self.final, self.backup)
        try:
            os.rename(self.staging, self.final)
        except OSError:
            os.rename(self.backup, self.final)  # the old output back: nothing published
            raise
        return self.backup

    def _keep_import_records(self, old: OutputMarker | None, marker: OutputMarker) -> None:
        if old is None or not old.same_output(marker):
            return
        for entry in os.scandir(self.final):
            if entry.is_file(follow_symlinks=False) and _IMPORT_RECORD.fullmatch(entry.name):
                shutil.copy2(entry.path, self.staging / entry.name)

    # --- leaving ------------------------------------------------------------------------------
    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        with signals.deferred():
            if not self.published:  # once published, the staging name holds the old output's remains, if any
                shutil.rmtree(self.staging, ignore_errors=True)
            self._unlock()


def _remove_tree(root: Path) -> str | None:
    """Delete ``root`` and everything in it; None when it is gone, else why not (the first failure).

    Stops early once a stop signal has arrived (held after publishing): the rest is the next run's.
    """
    failure = None
    for here, folders, files in os.walk(root, topdown=False):
        for name in files + folders:
            if signals.received() is not None:
                return "stopped by a signal"
            path = os.path.join(here, name)
            try:
                os.rmdir(path) if name in folders and not os.path.islink(path) else os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                failure = failure or _cause(exc)
    try:
        os.rmdir(root)
    except FileNotFoundError:
        pass
    except OSError as exc:
        return failure or _cause(exc)
    return failure


# --- the atomic exchange of two folders -----------------------------------------------------

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2  # linux/fs.h
_RENAME_SWAP = 2  # macOS sys/stdio.h


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically; False where the system or the file system cannot."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        if sys.platform.startswith("linux"):
            ok = libc.renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0
        elif sys.platform == "darwin":
            ok = libc.renamex_np(os.fsencode(a), os.fsencode(b), _RENAME_SWAP) == 0
        else:
            return False
    except (OSError, AttributeError):  # no such function in this C library
        return False
    if ok:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False  # a file system without the exchange: the two renames
    raise OSError(code, os.strerror(code), os.fspath(b))
