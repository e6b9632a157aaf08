"""Errors are types carrying what a user needs: the file, the series, the reason."""

from __future__ import annotations


def _restore(cls: type[Exception], args: tuple[object, ...], state: dict[str, object]) -> Exception:
    error = Exception.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


class Nwb2PennsieveError(Exception):
    """Base class of every error this package raises on purpose.

    ``str(error)`` is one line: ``<file>: <series>: <reason>`` (parts that are unknown are left out).
    """

    def __init__(self, reason: str, *, file: str | None = None, series: str | None = None) -> None:
        self.reason = reason
        self.file = file
        self.series = series
        super().__init__(self.one_line())

    def __reduce__(self) -> tuple[object, ...]:
        # Errors cross process boundaries (the local pool's pool): keep file, series and reason.
        return (_restore, (type(self), self.args, dict(self.__dict__)))

    def one_line(self) -> str:
        parts = [p for p in (self.file, f"series {self.series}" if self.series else None) if p]
        text = ": ".join([*parts, self.reason])
        return " ".join(text.split())  # never a multi-line message

    def with_file(self, file: str) -> Nwb2PennsieveError:
        """Return the same error naming ``file`` (errors raised deep down rarely know it)."""
        if self.file is None:
            self.file = file
            self.args = (self.one_line(),)
        return self


class InvalidInputError(Nwb2PennsieveError):
    """The input is not a readable NWB file (not HDF5, truncated, empty, not NWB)."""


class InvalidSeriesError(Nwb2PennsieveError):
    """One ElectricalSeries cannot be converted (bad shape, timestamps, unit, ...)."""


class ElectrodesError(InvalidSeriesError):
    """A series' electrode metadata (region, table reference, table, columns) cannot be read.

    Strict mode fails the series; with ``skip_invalid_series`` the series is converted with
    default channel names and groups and a warning says what is broken.
    """


class InvalidFileError(Nwb2PennsieveError):
    """A file whose series have problems: every problem is listed, in one line."""

    def __init__(self, file: str, problems: list[InvalidSeriesError]) -> None:
        self.problems = problems
        if len(problems) == 1:
            super().__init__(problems[0].reason, file=file, series=problems[0].series)
        else:
            listed = "; ".join(f"series {p.series}: {p.reason}" for p in problems)
            super().__init__(f"{len(problems)} invalid series: {listed}", file=file)


class NothingToConvertError(Nwb2PennsieveError):
    """The file holds no continuous ElectricalSeries.

    ``skipped`` lists the (path, reason) of the series found but not converted; ``other_types``
    the neurodata types the file holds besides.
    """

    def __init__(
        self,
        reason: str,
        *,
        file: str | None = None,
        series: str | None = None,
        skipped: list[tuple[str, str]] | None = None,
        other_types: list[str] | None = None,
    ) -> None:
        self.skipped = skipped or []
        self.other_types = other_types or []
        super().__init__(reason, file=file, series=series)


class ConfigurationError(Nwb2PennsieveError):
    """A setting (environment variable or option) is missing or wrong."""


class SeriesSelectionError(ConfigurationError):
    """A selected series (``--series``, ``SERIES``) is not in the file or cannot be converted."""


class StorageError(Nwb2PennsieveError):
    """Reading or writing output failed."""


class AccessDeniedError(StorageError):
    """A storage call was refused for lack of permission (S3 403 AccessDenied): not transient, so
    the state machine's StorageError retries (meant for 503 Slow Down) do not wait on it."""


_DENIED_CODES = frozenset({"AccessDenied", "403", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch"})


def storage_error(message: str, exc: BaseException, *, file: str | None = None) -> StorageError:
    """``message`` as :class:`AccessDeniedError` when ``exc`` is a refusal, else :class:`StorageError`."""
    response = getattr(exc, "response", None)
    code = str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""
    cls = AccessDeniedError if code in _DENIED_CODES else StorageError
    return cls(message, file=file)


class NetworkError(StorageError):
    """Reading an input over the network failed after its retries (refused, reset, timed out, a
    host that does not resolve): the network, not the file, is what failed."""


class OutputWriteError(StorageError):
    """Writing a file of the output failed (disk full, read-only, ...); ``cause`` is the system's reason."""

    def __init__(self, reason: str, *, cause: str) -> None:
        self.cause = cause
        super().__init__(reason)


class Interrupted(KeyboardInterrupt):
    """A stop signal (Ctrl-C, SIGTERM, SIGHUP) received: exit status 128 + ``signum``
    (:mod:`nwb2pennsieve.signals` raises it)."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signum)
